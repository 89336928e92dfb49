"""The plugin's icon and version, for the provider and the algorithm alike (no QGIS import)."""
from ..core import PLUGIN_DIR

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
