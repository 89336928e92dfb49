"""The object QGIS's plugin manager holds: registers the Processing provider, nothing more.

``initProcessing`` is what qgis_process calls (it has no GUI); the desktop calls ``initGui``.
"""
from qgis.core import QgsApplication


class MsttPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is not None:
            return
        from .provider import MsttProvider

        self.provider = MsttProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
