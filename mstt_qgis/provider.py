"""Processing provider ``mstt``: groups our algorithm in the Toolbox, qgis_process and models."""
from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = Path(__file__).resolve().parent.parent
ICON = PLUGIN_DIR / "resources" / "icon.svg"


def plugin_version() -> str:
    """``version=`` of metadata.txt (the one place the version is kept for QGIS)."""
    try:
        for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


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
        from .algorithm import SpaceTimeSRAlgorithm

        self.addAlgorithm(SpaceTimeSRAlgorithm())
