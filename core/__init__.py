"""MSTT engine, importable without QGIS, as packages with one job each:

``net`` the network only (torch, no OpenCV/GDAL); ``geo`` georeferenced IO (rasterio);
``run`` the job on a stack (windows, tiles, optical flow, device, threads); ``training``
synthetic data, datasets, training and evaluation; ``bench`` the benchmark; ``cli`` the
``mstt-stvsr`` command. Nothing heavy is imported here, so ``import mstt_stvsr.core`` is cheap.
"""
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent  # the plugin (and repository) root
