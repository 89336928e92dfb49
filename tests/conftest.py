"""Shared pytest fixtures. Each section imports its fixtures from its own module."""

# -- QGIS (headless QgsApplication, Processing, our provider, tiny weights): tests/qgis_fixtures.py
from qgis_fixtures import project, qgis_app, qgis_profile, small_stack, tiny_weights  # noqa: F401
