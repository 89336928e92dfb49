"""QGIS plugin entry point for MSTT space-time super-resolution.

QGIS imports this at start-up, so nothing heavy (torch, numpy, rasterio) is imported here;
the engine in ``core`` is loaded only when an algorithm runs.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .mstt_qgis.plugin import MsttPlugin

    return MsttPlugin(iface)
