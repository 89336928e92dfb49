"""What every algorithm of the provider tells QGIS about itself, from class attributes."""
from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon

from .about import ICON


class DescribedAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ID, TITLE, DESCRIPTION, TAGS and HELP; the QGIS identity methods read them."""

    ID = TITLE = DESCRIPTION = HELP = ""
    TAGS: tuple = ()

    def createInstance(self):  # noqa: N802 (QGIS API names throughout)
        return type(self)()

    def name(self):
        return self.ID

    def displayName(self):  # noqa: N802
        return self.TITLE

    def shortDescription(self):  # noqa: N802
        return self.DESCRIPTION

    def tags(self):
        return list(self.TAGS)

    def shortHelpString(self):  # noqa: N802
        return self.HELP

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)
