"""MSTT engine: network, deformable conv, flow, tiling, georeferenced IO, training, CLI.

Importable without QGIS. Submodules import torch lazily where they can, so that
``import mstt_stvsr.core`` itself stays cheap.
"""
