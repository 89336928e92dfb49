"""The object QGIS's plugin manager holds: registers the Processing provider and, in the desktop,
a Plugins menu entry for each algorithm (the dependency installer is the first thing a new user
needs, and the Toolbox is not where one looks for it).

``initProcessing`` is what qgis_process calls (it has no GUI); the desktop calls ``initGui``.
"""
from qgis.core import QgsApplication

MENU = "MSTT Space-Time Super-Resolution"
ACTIONS = (("mstt:spacetimesr", "Space-time super-resolution…"),
           ("mstt:finetune", "Fine-tune the network on your own video…"),
           ("mstt:installdeps", "Install Python dependencies (PyTorch)…"))


class MsttPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.dialogs = {}  # algorithm id -> its open dialog (see open_dialog)

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is not None:
            return
        from .provider import MsttProvider

        self.provider = MsttProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        from .about import ICON

        for alg_id, text in ACTIONS:
            action = QAction(QIcon(str(ICON)), text, self.iface.mainWindow())
            action.triggered.connect(lambda _checked=False, a=alg_id: self.open_dialog(a))
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)

    def open_dialog(self, alg_id: str):
        """The algorithm's Processing dialog, as the Toolbox opens it but not modal; an open one
        is brought to the front. The plugin keeps it: Processing's dialog holds the running
        task's context on its Python object, and a dialog nothing refers to is collected in the
        middle of a run, which crashes QGIS."""
        dialog = self.dialogs.get(alg_id)
        if dialog is not None and dialog.isVisible():
            dialog.raise_()
            dialog.activateWindow()
            return dialog
        import processing

        if dialog is not None:
            dialog.deleteLater()
        dialog = self.dialogs[alg_id] = processing.createAlgorithmDialog(alg_id)
        dialog.show()
        return dialog

    def unload(self):
        for dialog in self.dialogs.values():
            dialog.close()
            dialog.deleteLater()
        self.dialogs = {}
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

