"""``mstt:spacetimesr``: the Processing face of ``core.run.pipeline.run_stack``.

Thin on purpose: parameters in, one call to the engine, its messages out. The engine (torch,
rasterio) is imported only inside ``processAlgorithm``, after a dependency check that turns a
missing torch into one message with the install command.
"""
from __future__ import annotations

import os
import re
import time

from qgis.core import (
    QgsApplication, QgsMapLayer, QgsProcessing, QgsProcessingException,
    QgsProcessingOutputMultipleLayers, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber, QgsProcessingParameterString,
    QgsProcessingUtils, QgsProviderRegistry,
)

from ..core.net.spec import MULTIPLE
from ..core.run.options import DEFAULT_OVERLAP, DEFAULT_WINDOWS, DEVICES, PRECISIONS, WINDOW_MODES
from . import deps
from .described import DescribedAlgorithm

# The engine's messages name the CLI's options; the dialog names them by their labels, and
# qgis_process by their names: both are given, e.g. "Frame times" (TIMES).
CLI_OPTIONS = {"overwrite": "OVERWRITE", "times": "TIMES", "device": "DEVICE", "weights": "WEIGHTS",
               "tile-size": "TILE_SIZE", "overlap": "OVERLAP", "precision": "PRECISION", "cog": "COG",
               "resume": "RESUME"}
# Tile sizes are multiples of the network's padding unit (the engine rounds others up); 12 units
# is the largest tile the engine's automatic choice uses.
TILE_CHOICES = ("auto",) + tuple(str(MULTIPLE * k) for k in range(1, 13))

# QGIS's help panel makes each line of shortHelpString a paragraph: one line per paragraph.
HELP = "\n".join((
    "Super-resolves a stack of georeferenced satellite-video frames in space and time with the MSTT "
    "network (multi-scale spatial-temporal transformer, Xiao et al., JAG 2022).",
    "<b>In:</b> N &ge; 2 raster frames of one scene <b>in time order</b> (same size, CRS, geotransform, "
    "band count, data type and nodata), e.g. Jilin-1 or SkySat video frames. Colour bands are processed in "
    "groups of 3 (RGB; other counts work band group by band group); alpha bands are kept as masks. Times come "
    "from each frame's metadata (ACQUISITIONDATETIME, TIFFTAG_DATETIME...) or from <i>Frame times</i>.",
    "<b>Out:</b> 2N-1 GeoTIFFs in the output folder, <code>&lt;name&gt;_x4_t000.tif</code> ...: each input "
    "frame 4x finer (pixel size / 4) and a new frame halfway between each pair (its time is the midpoint). "
    "They line up exactly with the inputs: same CRS and origin, data type, nodata, band descriptions. Nothing "
    "is written unless the whole run succeeds; a cancel leaves no file behind (with <i>Resume an interrupted "
    "run</i>, its finished parts stay hidden in the output folder, and the next run with it set reuses them).",
    "<b>In the map:</b> run from this dialog, the frames load into a new group at the top of the Layers "
    "panel, named after the stack and its time span, each frame named with its time. The Temporal "
    "Controller's step is set to the frame spacing, so that it shows one frame at a time.",
    "<b>Cost:</b> the network runs once per tile and time window. On a 2-core CPU one 160x160-pixel tile "
    "takes roughly 15-20 s per window, so a 10-frame stack of 1000x1000 pixels takes hours; a CUDA GPU "
    "(<i>Device</i> auto or cuda) is far faster. CPU memory stays about 2 GB with the automatic tile size. "
    "Outputs take 16x the input size per frame.",
    "<b>Weights:</b> empty = the weights shipped with the plugin; or an MSTT <code>.safetensors</code> file, "
    "or an upstream <code>.pth</code> checkpoint. <b>Tile size</b> (input pixels; auto = 80 or 160 on a CPU, "
    "whichever computes this scene faster on this processor, the cheapest that fits in free memory on a GPU) and <b>Tile overlap</b> (input pixels blended between "
    "tiles) trade memory for speed and seams.",
    "<b>Needs PyTorch</b> in QGIS's Python. If it is missing, run <i>Install Python dependencies</i> once "
    "(in this provider, or Plugins menu &gt; MSTT Space-Time Super-Resolution).",
))


class SpaceTimeSRAlgorithm(DescribedAlgorithm):
    INPUT = "INPUT"
    WEIGHTS = "WEIGHTS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    TIMES = "TIMES"
    OVERWRITE = "OVERWRITE"
    COG = "COG"
    CLUSTER = "CLUSTER"
    WINDOWS = "WINDOWS"
    ENSEMBLE = "ENSEMBLE"
    RESUME = "RESUME"
    OUTPUT = "OUTPUT"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"

    def __init__(self):
        super().__init__()
        self._to_load = None  # (paths, times) for postProcessAlgorithm

    # -- identity ----------------------------------------------------------------------------
    ID = "spacetimesr"
    TITLE = "Space-time super-resolution (x4, 2x frame rate)"
    DESCRIPTION = 'N georeferenced video frames in, 2N-1 frames out with 4x finer pixels (MSTT network).'
    TAGS = ('super-resolution', 'satellite video', 'frame interpolation', 'temporal', 'upscale', 'deep learning', 'MSTT', 'Jilin-1', 'SkySat')
    HELP = HELP

    # -- parameters --------------------------------------------------------------------------
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Input frames, in time order", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, "Weights file (empty = the shipped weights)", QgsProcessingParameterFile.File,
            optional=True, fileFilter="MSTT weights (*.safetensors *.pth *.pt);;All files (*.*)"))
        tile = QgsProcessingParameterEnum(self.TILE_SIZE, "Tile size (input pixels)", list(TILE_CHOICES),
                                          defaultValue="auto")
        tile.setHelp("auto: 80 or 160 on a CPU, whichever computes this scene faster on this processor (measured "
                     "per processor kind); on a GPU the cheapest tiling among the tiles that fit in half its "
                     "free memory. "
                     "Larger tiles need more memory and give the network more context.")
        overlap = QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap (input pixels)", QgsProcessingParameterNumber.Integer,
            defaultValue=DEFAULT_OVERLAP, minValue=0, maxValue=MULTIPLE - 1)  # below the smallest tile
        overlap.setHelp("Pixels that neighbouring tiles share and blend, so that no seam shows.")
        device = QgsProcessingParameterEnum(self.DEVICE, "Device", list(DEVICES), defaultValue="auto")
        device.setHelp("auto: a CUDA GPU if PyTorch sees one, else the CPU.")
        precision = QgsProcessingParameterEnum(self.PRECISION, "Precision", list(PRECISIONS), defaultValue="auto")
        precision.setHelp("auto: bf16/fp16 on a GPU; bf16 on CPUs where it was measured faster (Intel AMX, AMD AVX-512 BF16), else fp32.")
        windows = QgsProcessingParameterEnum(self.WINDOWS, "Time windows", list(WINDOW_MODES),
                                             defaultValue=DEFAULT_WINDOWS)
        windows.setHelp("fast: one network window per 3 input frames (about 3x fewer than central, the same "
                        "quality with the shipped weights); central: each output from the window where it is "
                        "most central (N-1 windows).")
        ensemble = QgsProcessingParameterBoolean(self.ENSEMBLE, "Self-ensemble (8 flips/rotations, 8x slower)", False)
        for enum in (tile, device, precision, windows):
            enum.setUsesStaticStrings(True)  # DEVICE=cpu, TILE_SIZE=160 on the command line and in models
        times = QgsProcessingParameterString(
            self.TIMES, "Frame times (empty = from the frames' metadata)", optional=True)
        times.setHelp("The input frames' times, comma-separated ISO 8601, e.g. "
                      "2019-07-15T18:05:30.0Z,2019-07-15T18:05:30.1Z")
        overwrite = QgsProcessingParameterBoolean(self.OVERWRITE, "Replace existing output files", False)
        cog = QgsProcessingParameterBoolean(self.COG, "Write Cloud Optimized GeoTIFFs", False)
        cluster = QgsProcessingParameterString(self.CLUSTER, "Dask cluster (empty = this process)", optional=True)
        cluster.setHelp("local:N runs N worker processes on this computer; tcp://host:8786 sends the job to a "
                        "running Dask scheduler (needs the Python packages dask and distributed).")
        resume = QgsProcessingParameterBoolean(self.RESUME, "Resume an interrupted run", False)
        resume.setHelp("Reuse what an interrupted run of the same outputs (same frames, weights and options) "
                       "finished, and compute only the rest; with nothing to resume, start from the beginning. "
                       "A run with this set that is canceled keeps its finished parts for the next one.")
        for param in (tile, overlap, device, precision, windows, ensemble, times, overwrite, cog, resume, cluster):
            if param is not device:
                param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, "Output frames, in time order"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """QGIS's own check says only "Incorrect parameter value for INPUT" for a frame it
        cannot load; name the file and the problem instead, as the engine would. A tile size
        given as a number (scripts, models) is taken as its choice."""
        parameters = self._enum_names(parameters)
        if isinstance(parameters.get(self.TILE_SIZE), int):
            parameters[self.TILE_SIZE] = str(parameters[self.TILE_SIZE])
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
        parameters = self._enum_names(parameters)
        inputs = self._input_paths(parameters, context)
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context) or None
        tile = self._tile_size(parameters)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        device = self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto"
        precision = self.parameterAsEnumString(parameters, self.PRECISION, context) or "auto"
        times = self.parameterAsString(parameters, self.TIMES, context).strip() or None
        overwrite = self.parameterAsBoolean(parameters, self.OVERWRITE, context)
        cog = self.parameterAsBoolean(parameters, self.COG, context)
        cluster = self.parameterAsString(parameters, self.CLUSTER, context).strip() or None
        out_dir = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not out_dir:
            raise QgsProcessingException("no output folder given (OUTPUT)")

        feedback.pushInfo(ensure_engine())
        from ..core.errors import MsttError
        from ..core.geo.times import output_times
        from ..core.run.options import RunOptions
        from ..core.run.pipeline import Hooks, run_stack, validate_stack
        from ..core.run.signals import SignalGuard

        try:
            options = RunOptions(weights=weights, tile_size=tile, overlap=overlap, device=device,
                                 precision=precision, times=times, overwrite=overwrite, cog=cog,
                                 windows=self.parameterAsEnumString(parameters, self.WINDOWS, context) or DEFAULT_WINDOWS,
                                 ensemble=self.parameterAsBoolean(parameters, self.ENSEMBLE, context),
                                 resume=self.parameterAsBoolean(parameters, self.RESUME, context))
            info = validate_stack(inputs, options, out_dir=out_dir)
            # qgis_process runs this in its main thread: SIGTERM (a batch system, `kill`) would end it
            # at once, leaving the claim and the work folder; the guard makes it a clean stop
            with SignalGuard() as guard:
                hooks = Hooks(**self._reporting(feedback), critical=guard.critical)
                if cluster:  # Dask only when asked for (core.scale names what to install if it is missing)
                    from ..core.scale.run import run_with_cluster

                    outputs = run_with_cluster(cluster, inputs, out_dir, options, hooks=hooks)
                else:
                    outputs = run_stack(inputs, out_dir, options, hooks=hooks)
        except MsttError as err:
            raise QgsProcessingException(processing_message(err, self)) from None
        feedback.pushInfo(f"elapsed: {time.perf_counter() - t0:.1f} s for {len(outputs)} frames")

        frame_times = output_times(info.times) if info.time_source != "none" else None
        if not frame_times or any(t is None for t in frame_times):
            from .temporal import FALLBACK_START

            frame_times = None
            feedback.pushInfo('the frames have no acquisition times (set "Frame times" (TIMES) to give them); in the '
                              f"Temporal Controller they are placed 1 s apart from {FALLBACK_START.isoformat()}")
        self._to_load = (outputs, frame_times)
        return {self.OUTPUT: out_dir, self.OUTPUT_LAYERS: outputs}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        """Main thread, after a successful run: queue the frames for loading (see layers.py)."""
        if self._to_load and context.project() is not None:
            from .layers import add_frames_to_load

            outputs, frame_times = self._to_load
            add_frames_to_load(context, outputs, frame_times, self.OUTPUT_LAYERS)
        self._to_load = None
        return {}

    # -- helpers -----------------------------------------------------------------------------
    def _reporting(self, feedback) -> dict:
        """The engine's Hooks arguments that report to ``feedback``: one progress text per phase
        (not per tile: each is a line in the dialog's log), notes as warnings."""
        last_text = [None]

        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            phase = message.split(", tile")[0]
            if phase != last_text[0]:
                last_text[0] = phase
                feedback.setProgressText(phase)

        def log(line):
            if line.startswith("note:"):
                feedback.pushWarning(processing_message(line, self))
            else:
                feedback.pushInfo(line)

        return dict(progress=progress, is_canceled=feedback.isCanceled, log=log)

    def _enum_names(self, parameters) -> dict:
        """DEVICE=1 as qgis_process help suggests (an option's number) taken as that option's
        name (DEVICE=cpu): the names are never numbers, so this is unambiguous."""
        parameters = dict(parameters)
        for name, choices in ((self.DEVICE, DEVICES), (self.PRECISION, PRECISIONS), (self.WINDOWS, WINDOW_MODES)):
            value = parameters.get(name)
            if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip().isdigit() \
                    and int(value) < len(choices):
                parameters[name] = choices[int(value)]
        return parameters

    def _tile_size(self, parameters):
        """TILE_SIZE as the engine takes it: None for auto (a number from scripts and models too)."""
        value = str(parameters.get(self.TILE_SIZE) or "auto").strip()
        return None if value == "auto" else int(value)

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


def processing_message(err, alg, options=None) -> str:
    """The engine's message with the CLI's options named as this algorithm's parameters: label
    and name, and the value where the option takes one (``--device cpu``). ``options``: the
    CLI option -> parameter map of ``alg`` (default: the main algorithm's)."""
    options = CLI_OPTIONS if options is None else options

    def named(match):
        name = options.get(match.group(1))
        param = alg.parameterDefinition(name) if name else None
        if param is None:
            return match.group(0)
        text = f'"{param.description().split(" (")[0]}" ({name})'
        return f"{text} = {match.group(2)}" if match.group(2) else text

    choices = "|".join(DEVICES + PRECISIONS)
    return re.sub(rf"--([a-z][a-z-]*)(?: ({choices})\b)?", named, str(err))


def ensure_engine() -> str:
    """Make the dependency folder importable, then raise one clear message if anything the
    engine needs is still missing; return a line saying which packages (and from where) run."""
    folder = deps.deps_folder(QgsApplication.qgisSettingsDirPath())
    deps.add_deps_folder(folder)
    missing = deps.missing_modules()
    if missing:
        raise QgsProcessingException(deps.install_message(missing, folder))
    return deps.packages_in_use()
