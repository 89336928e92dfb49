"""Processing provider ``mstt``: groups our algorithm in the Toolbox, qgis_process and models."""
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .about import ICON, plugin_version
from .algorithm import SpaceTimeSRAlgorithm
from .finetune_algorithm import FinetuneAlgorithm
from .install_algorithm import InstallDepsAlgorithm


class MsttProvider(QgsProcessingProvider):
    def id(self):
        return "mstt"

    def name(self):
        return "Space-time super-resolution"

    def longName(self):  # noqa: N802
        version = plugin_version()
        return f"{self.name()} (MSTT {version})" if version else self.name()

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)

    def versionInfo(self):  # noqa: N802
        return plugin_version()

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(SpaceTimeSRAlgorithm())
        self.addAlgorithm(InstallDepsAlgorithm())
        self.addAlgorithm(FinetuneAlgorithm())
