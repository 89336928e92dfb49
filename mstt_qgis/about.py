"""The plugin's icon and version, for the provider and the algorithm alike (no QGIS import)."""
from ..core import PLUGIN_DIR, plugin_version  # noqa: F401 (the provider's version)

ICON = PLUGIN_DIR / "resources" / "icon.svg"
