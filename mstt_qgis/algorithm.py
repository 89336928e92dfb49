"""``mstt:spacetimesr``: the Processing face of ``core.run.pipeline.run_stack``.

Thin on purpose: parameters in, one call to the engine, its messages out. The engine (torch,
rasterio) is imported only inside ``processAlgorithm``, after a dependency check that turns a
missing torch into one message with the install command.
"""
from __future__ import annotations

import os
import time

from qgis.core import (
    QgsApplication, QgsMapLayer, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
    QgsProcessingOutputMultipleLayers, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber, QgsProcessingParameterString,
    QgsProcessingUtils, QgsProviderRegistry,
)
from qgis.PyQt.QtGui import QIcon

from ..core.run.options import DEVICES, PRECISIONS
from . import deps
from .about import ICON

# the CLI's option names in the engine's messages, as this algorithm's parameters
CLI_NAMES = {"--overwrite": "the OVERWRITE option", "--times": "TIMES", "--device cpu": "DEVICE cpu",
             "--weights": "WEIGHTS", "--tile-size": "TILE_SIZE", "--overlap": "OVERLAP", "--precision": "PRECISION"}

HELP = """<p>Super-resolves a stack of georeferenced satellite-video frames in space and time with the
MSTT network (multi-scale spatial-temporal transformer, Xiao et al., JAG 2022).</p>
<p><b>In:</b> N >= 2 raster frames of one scene <b>in time order</b> (same size, CRS, geotransform,
band count, data type and nodata), e.g. Jilin-1 or SkySat video frames. Colour bands are processed
in groups of 3 (RGB; other counts work band group by band group); alpha bands are kept as masks.
Times come from each frame's metadata (ACQUISITIONDATETIME, TIFFTAG_DATETIME...) or from
<i>Times</i>.</p>
<p><b>Out:</b> 2N-1 GeoTIFFs in the output folder, <code>&lt;name&gt;_x4_t000.tif</code> ...:
each input frame 4x finer (pixel size / 4) and a new frame halfway between each pair (its
time is the midpoint). They line up exactly with the inputs: same CRS and origin, data type,
nodata, band descriptions. Nothing is written unless the whole run succeeds; a cancel leaves no
file behind. Run from the dialog, the frames load into a group named after the stack, with
temporal ranges set so the Temporal Controller plays them.</p>
<p><b>Cost:</b> the network runs once per tile and time window (N-1 windows for N >= 4).
On a 2-core CPU one 160x160-pixel tile takes roughly 15-20 s per window, so a 10-frame stack of
1000x1000 pixels takes hours; a CUDA GPU (<i>Device</i> auto or cuda) is far faster. CPU memory
stays about 2 GB with the default tile size. Outputs take 16x the input size per frame.</p>
<p><b>Weights:</b> empty = the weights shipped with the plugin; or an MSTT <code>.safetensors</code>
file, or an upstream <code>.pth</code> checkpoint. <b>Tile size</b> (input pixels, rounded up to a
multiple of 80; empty = 160 on CPU, fitted to free memory on GPU) and <b>Overlap</b> (input pixels
blended between tiles; empty = 16) trade memory for speed and seams.</p>
<p>Needs PyTorch in QGIS's Python: if it is missing, the algorithm says how to install it.</p>"""


class SpaceTimeSRAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    WEIGHTS = "WEIGHTS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    TIMES = "TIMES"
    OVERWRITE = "OVERWRITE"
    COG = "COG"
    OUTPUT = "OUTPUT"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"

    def __init__(self):
        super().__init__()
        self._to_load = None  # (paths, times) for postProcessAlgorithm

    # -- identity ----------------------------------------------------------------------------
    def createInstance(self):  # noqa: N802 (QGIS API names throughout)
        return SpaceTimeSRAlgorithm()

    def name(self):
        return "spacetimesr"

    def displayName(self):  # noqa: N802
        return "Space-time super-resolution (x4, 2x frame rate)"

    def shortDescription(self):  # noqa: N802
        return "N georeferenced video frames in, 2N-1 frames out with 4x finer pixels (MSTT network)."

    def tags(self):
        return ["super-resolution", "satellite video", "frame interpolation", "temporal", "upscale",
                "deep learning", "MSTT", "Jilin-1", "SkySat"]

    def shortHelpString(self):  # noqa: N802
        return HELP

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)

    # -- parameters --------------------------------------------------------------------------
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Input frames, in time order", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, "Weights (empty = shipped weights)", QgsProcessingParameterFile.File,
            optional=True, fileFilter="MSTT weights (*.safetensors *.pth *.pt);;All files (*.*)"))
        tile = QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size in input pixels (empty = 160 on CPU, fitted to GPU memory)",
            QgsProcessingParameterNumber.Integer, optional=True, minValue=1, maxValue=4096)
        overlap = QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap in input pixels (empty = 16)",
            QgsProcessingParameterNumber.Integer, optional=True, minValue=0, maxValue=1024)
        device = QgsProcessingParameterEnum(
            self.DEVICE, "Device (auto = CUDA GPU if available)", list(DEVICES), defaultValue="auto")
        precision = QgsProcessingParameterEnum(
            self.PRECISION, "Precision (auto = bf16/fp16 on GPU; bf16 on CPUs with AMX / AVX-512 BF16, else fp32)",
            list(PRECISIONS), defaultValue="auto")
        for enum in (device, precision):
            enum.setUsesStaticStrings(True)  # DEVICE=cpu on the command line and in models
        times = QgsProcessingParameterString(
            self.TIMES, "Times of the inputs, comma-separated ISO 8601 (empty = from the frames' metadata)",
            optional=True)
        overwrite = QgsProcessingParameterBoolean(self.OVERWRITE, "Replace existing output files", False)
        cog = QgsProcessingParameterBoolean(self.COG, "Write Cloud Optimized GeoTIFFs", False)
        for param in (tile, overlap, device, precision, times, overwrite, cog):
            if param is not device:
                param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, "Output frames, in time order"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """QGIS's own check says only "Incorrect parameter value for INPUT" for a frame it
        cannot load; name the file and the problem instead, as the engine would."""
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            values = parameters.get(self.INPUT)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, str) and value and \
                        QgsProcessingUtils.mapLayerFromString(value, context) is None:
                    problem = "not a raster GDAL can read" if os.path.exists(value) else "file not found"
                    return False, f"{value}: {problem}"
        return ok, msg

    # -- running -----------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        t0 = time.perf_counter()
        inputs = self._input_paths(parameters, context)
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context) or None
        tile = self._optional_int(parameters, self.TILE_SIZE, context)
        overlap = self._optional_int(parameters, self.OVERLAP, context)
        device = self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto"
        precision = self.parameterAsEnumString(parameters, self.PRECISION, context) or "auto"
        times = self.parameterAsString(parameters, self.TIMES, context).strip() or None
        overwrite = self.parameterAsBoolean(parameters, self.OVERWRITE, context)
        cog = self.parameterAsBoolean(parameters, self.COG, context)
        out_dir = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not out_dir:
            raise QgsProcessingException("no output folder given (OUTPUT)")

        ensure_engine()
        from ..core.errors import MsttError
        from ..core.geo.times import output_times
        from ..core.run.options import RunOptions
        from ..core.run.pipeline import Hooks, run_stack, validate_stack

        last_text = [None]

        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            phase = message.split(", tile")[0]  # one log line per phase, not per tile
            if phase != last_text[0]:
                last_text[0] = phase
                feedback.setProgressText(phase)

        def log(line):
            if line.startswith("note:"):
                feedback.pushWarning(processing_message(line))
            else:
                feedback.pushInfo(line)

        try:
            options = RunOptions(weights=weights, tile_size=tile, overlap=overlap, device=device,
                                 precision=precision, times=times, overwrite=overwrite, cog=cog)
            info = validate_stack(inputs, options, out_dir=out_dir)
            outputs = run_stack(inputs, out_dir, options,
                                hooks=Hooks(progress=progress, is_canceled=feedback.isCanceled, log=log))
        except MsttError as err:
            raise QgsProcessingException(processing_message(err)) from None
        feedback.pushInfo(f"elapsed: {time.perf_counter() - t0:.1f} s for {len(outputs)} frames")

        frame_times = output_times(info.times) if info.time_source != "none" else None
        if not frame_times or any(t is None for t in frame_times):
            from .layers import FALLBACK_START

            frame_times = None
            feedback.pushInfo("the frames have no acquisition times (set TIMES to give them); in the "
                              f"Temporal Controller they are placed 1 s apart from {FALLBACK_START.isoformat()}")
        self._to_load = (outputs, frame_times)
        return {self.OUTPUT: out_dir, self.OUTPUT_LAYERS: outputs}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        """Main thread, after a successful run: queue the frames for loading (see layers.py)."""
        if self._to_load and context.project() is not None:
            from .layers import add_frames_to_load, fallback_times

            outputs, frame_times = self._to_load
            add_frames_to_load(context, outputs, frame_times or fallback_times(len(outputs)), self.OUTPUT_LAYERS)
        self._to_load = None
        return {}

    # -- helpers -----------------------------------------------------------------------------
    def _optional_int(self, parameters, name, context):
        value = parameters.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            if hasattr(value, "isNull") and value.isNull():
                return None
        except TypeError:
            pass
        return self.parameterAsInt(parameters, name, context)

    def _input_paths(self, parameters, context) -> list:
        """File paths of the INPUT frames, in the order given. Strings that are not layers QGIS
        can load go to the engine as they are, so a missing or unreadable file gets the engine's
        message naming it."""
        values = parameters.get(self.INPUT)
        if values is None:
            values = []
        elif not isinstance(values, (list, tuple)):
            values = [values]
        paths = []
        for value in values:
            if isinstance(value, str) and os.path.isfile(value):
                paths.append(value)  # a file: no need to load it as a layer
                continue
            layer = value if isinstance(value, QgsMapLayer) else None
            if layer is None and isinstance(value, str):
                layer = QgsProcessingUtils.mapLayerFromString(value, context, True,
                                                              QgsProcessingUtils.LayerHint.Raster)
                if layer is None:
                    paths.append(value)
                    continue
            if layer is None:
                raise QgsProcessingException(f"INPUT: {value!r} is not a raster layer or file")
            paths.append(layer_path(layer))
        return paths


def layer_path(layer) -> str:
    """What GDAL (and so rasterio) opens for a raster layer; only file-like GDAL sources."""
    if layer.type() != QgsMapLayer.RasterLayer:
        raise QgsProcessingException(f"{layer.name()}: not a raster layer")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{layer.name()}: a {layer.providerType()} layer; only file rasters GDAL reads can be super-resolved "
            "(save it as GeoTIFF first: Export > Save As)")
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    if parts.get("layerName"):  # e.g. a GeoPackage raster table: GDAL's connection string
        return layer.source()
    return path


def processing_message(err) -> str:
    """The engine's message with the CLI's option names replaced by this algorithm's."""
    text = str(err)
    for cli, name in CLI_NAMES.items():
        text = text.replace(cli, name)
    return text


def ensure_engine() -> None:
    """Make the dependency folder importable, then raise one clear message if anything the
    engine needs is still missing."""
    folder = deps.deps_folder(QgsApplication.qgisSettingsDirPath())
    deps.add_deps_folder(folder)
    missing = deps.missing_modules()
    if missing:
        raise QgsProcessingException(deps.install_message(missing, folder))
