"""``mstt:installdeps``: the Processing face of installer.install (PyTorch and the engine's other
packages for QGIS's own Python, into a folder of the QGIS profile)."""
from __future__ import annotations

from qgis.core import (
    QgsApplication, QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputFolder,
    QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterString,
)

from . import deps
from .described import DescribedAlgorithm
from .install_plan import BUILDS, PYPI, TORCH_INDEX, Request

BUILD_LABELS = [label if driver is None else f"{label} (NVIDIA GPU, driver {driver} or newer)"
                for label, driver in BUILDS.values()]

HELP = "\n".join((
    "Installs what space-time super-resolution needs into QGIS's own Python: PyTorch "
    f"{deps.TORCH_VERSION} and safetensors (and Dask if asked for). Run it once; afterwards the "
    "super-resolution algorithm works without restarting QGIS.",
    "<b>Where:</b> into <code>python/mstt_stvsr_deps</code> in your QGIS profile folder, for QGIS's Python "
    "only. Nothing outside it changes, and QGIS's own packages (numpy, GDAL, PyQt, rasterio, OpenCV) are "
    "never replaced or hidden: they are pinned to the versions QGIS has. Uninstall: delete that folder.",
    f"<b>Size:</b> the CPU build is {deps.size_text('cpu')}; a CUDA build is {deps.size_text('cuda')}.",
    "<b>Build:</b> CPU works everywhere (on macOS it is the only one). Choose a CUDA build only with an "
    "NVIDIA GPU whose driver is at least the version named (nvidia-smi shows it); the installer checks.",
    "<b>Offline or behind a mirror:</b> set <i>Package index</i> to your mirror, or empty it and give a "
    "<i>Folder of wheel files</i>; empty the <i>PyTorch index</i> when the mirror or folder holds torch. "
    "pip's own settings (pip.conf / pip.ini, HTTPS_PROXY) apply too.",
    "<b>Progress:</b> pip's log appears below; Cancel stops it and leaves the folder as it was. When "
    "everything is in place already, it says so and lists the versions.",
))


class InstallDepsAlgorithm(DescribedAlgorithm):
    BUILD = "BUILD"
    DASK = "DASK"
    INDEX_URL = "INDEX_URL"
    TORCH_INDEX_URL = "TORCH_INDEX_URL"
    FIND_LINKS = "FIND_LINKS"
    REINSTALL = "REINSTALL"
    FOLDER = "FOLDER"
    VERSIONS = "VERSIONS"

    ID = "installdeps"
    TITLE = "Install Python dependencies (PyTorch)"
    DESCRIPTION = "Installs PyTorch and the other packages space-time super-resolution needs into QGIS's Python."
    TAGS = ('install', 'dependencies', 'pytorch', 'torch', 'pip', 'cuda', 'setup')
    HELP = HELP

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagHideFromModeler  # a set-up step, not a data step

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(self.BUILD, "PyTorch build", BUILD_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(self.DASK, "Also install Dask (for the cluster option)", False))
        index = QgsProcessingParameterString(self.INDEX_URL, "Package index (empty = none)", PYPI, optional=True)
        torch_index = QgsProcessingParameterString(
            self.TORCH_INDEX_URL, "PyTorch index, without the build's folder (empty = none)", TORCH_INDEX, optional=True)
        folder = QgsProcessingParameterFile(self.FIND_LINKS, "Folder of wheel files (offline install)",
                                            QgsProcessingParameterFile.Folder, optional=True)
        reinstall = QgsProcessingParameterBoolean(self.REINSTALL, "Reinstall even if already installed", False)
        for param in (index, torch_index, folder, reinstall):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, "Dependency folder"))
        self.addOutput(QgsProcessingOutputString(self.VERSIONS, "Versions in use"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from .installer import Hooks, InstallError, install

        request = Request(
            build=list(BUILDS)[self.parameterAsEnum(parameters, self.BUILD, context)],
            dask=self.parameterAsBoolean(parameters, self.DASK, context),
            index_url=self.parameterAsString(parameters, self.INDEX_URL, context).strip(),
            torch_index_url=self.parameterAsString(parameters, self.TORCH_INDEX_URL, context).strip(),
            find_links=self.parameterAsFile(parameters, self.FIND_LINKS, context) or "",
            reinstall=self.parameterAsBoolean(parameters, self.REINSTALL, context))
        folder = deps.deps_folder(QgsApplication.qgisSettingsDirPath())

        def progress(fraction, text=None):
            feedback.setProgress(100.0 * fraction)
            if text:
                feedback.setProgressText(text)

        hooks = Hooks(progress=progress, log=feedback.pushInfo, console=feedback.pushConsoleInfo,
                      is_canceled=feedback.isCanceled)
        try:
            outcome = install(request, folder, hooks=hooks)
        except InstallError as err:
            raise QgsProcessingException(str(err)) from None
        summary = outcome.summary(folder)
        (feedback.pushWarning if outcome.restart else feedback.pushInfo)(summary)
        versions = ", ".join(f"{k} {v.get('version', '?')}" for k, v in outcome.versions.items())
        return {self.FOLDER: str(folder), self.VERSIONS: versions}
