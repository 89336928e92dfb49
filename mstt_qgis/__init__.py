"""QGIS side of the plugin: Processing provider, algorithm, layer loading. Imports QGIS, never
torch at module level (QGIS start-up must stay fast and must not fail without torch)."""
