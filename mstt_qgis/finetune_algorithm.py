"""``mstt:finetune``: the Processing face of ``core.training.finetune.finetune``.

Thin like the main algorithm: parameters in, one call to the engine, its messages out. Its
output is a weights file, so in the Model Builder it feeds the main algorithm's Weights
parameter.
"""
from __future__ import annotations

from qgis.core import (
    QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination, QgsProcessingParameterNumber, QgsProcessingParameterString,
)

from ..core.run.options import DEVICES
from ..core.training.config import load_config
from ..core.training.finetune import DEFAULT_CONFIG, KEPT_FINETUNED, SYNTH_SHARE
from .algorithm import ensure_engine, processing_message
from .described import DescribedAlgorithm

# The engine's messages name the CLI's options; here they are named as these parameters.
CLI_OPTIONS = {"minutes": "MINUTES", "weights": "WEIGHTS", "crop": "CROP", "synth-share": "SYNTH_SHARE",
               "resume": "RESUME", "device": "DEVICE", "overwrite": "OUTPUT"}
DEFAULT_MINUTES = 30.0
PROGRESS_EVERY_S = 60.0  # one line a minute in the dialog's log (the bar moves every step)

HELP = "\n".join((
    "Fine-tunes the super-resolution network on your own satellite video, so that it adapts to your sensor "
    "(Jilin-1, SkySat...): your native frames are the ground truth and their 4x reduction (the Jilin-189 "
    "degradation) the input, as the network's published training video was made.",
    "<b>In:</b> a folder of consecutive native frames of one video (PNG, JPEG or 8-bit GeoTIFF, in name order, "
    "at least 7, one size), and optionally more such folders (or list files naming frames). Each video's last "
    "frames (10 %, whole 7-frame clips) are held out and never trained on.",
    "<b>Out:</b> a weights file (.safetensors) for the <i>Weights file</i> of the super-resolution algorithm (in "
    "the Model Builder too). The held-out frames are scored before and after; the file is the better of the "
    "starting and the fine-tuned weights, and records both scores, the videos, steps and minutes (the log "
    "says which was kept). The shipped weights are never replaced.",
    "<b>Time:</b> <i>Minutes</i> boxes the whole run, both validations included. On a 2-core CPU a training "
    "step of the full network takes seconds, so an hour gives some hundreds of steps; a CUDA GPU is about a "
    "hundred times faster. A share of the plugin's synthetic training video is mixed in when it is present "
    "(a checkout after <code>make data</code>), so that the network does not forget; otherwise your video alone.",
    "<b>Cancel:</b> training stops at the next step, the weights trained so far are scored on the held-out "
    "frames, and the better of them and the starting weights is written. <i>Resume</i> continues a stopped run "
    "of the same output from its checkpoint (kept in a folder beside the output).",
    "<b>Needs PyTorch</b> in QGIS's Python (run <i>Install Python dependencies</i> once).",
))


class FinetuneAlgorithm(DescribedAlgorithm):
    VIDEO = "VIDEO"
    MORE_VIDEOS = "MORE_VIDEOS"
    MINUTES = "MINUTES"
    WEIGHTS = "WEIGHTS"
    DEVICE = "DEVICE"
    SYNTH_SHARE = "SYNTH_SHARE"
    CROP = "CROP"
    RESUME = "RESUME"
    OUTPUT = "OUTPUT"
    BEFORE = "PSNR_BEFORE"
    AFTER = "PSNR_AFTER"
    KEPT = "KEPT"

    ID = "finetune"
    TITLE = "Fine-tune the network on your own video"
    DESCRIPTION = "Adapts the super-resolution network to your sensor from your own video's native frames."
    TAGS = ('fine-tune', 'training', 'weights', 'satellite video', 'super-resolution', 'deep learning', 'MSTT',
            'Jilin-1', 'SkySat')
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.VIDEO, "Video: folder of native frames, in time order", QgsProcessingParameterFile.Folder))
        more = QgsProcessingParameterString(self.MORE_VIDEOS, "More videos (folders or list files, separated by ;)",
                                            optional=True)
        more.setHelp("Further videos of the same sensor, e.g. /data/pass1;/data/pass2")
        self.addParameter(more)
        self.addParameter(QgsProcessingParameterNumber(
            self.MINUTES, "Minutes (time box of the whole run)", QgsProcessingParameterNumber.Double,
            defaultValue=DEFAULT_MINUTES, minValue=0.01))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, "Starting weights (empty = the shipped weights)", QgsProcessingParameterFile.File,
            optional=True, fileFilter="MSTT weights (*.safetensors);;All files (*.*)"))
        device = QgsProcessingParameterEnum(self.DEVICE, "Device", list(DEVICES), defaultValue="auto")
        device.setUsesStaticStrings(True)
        self.addParameter(device)
        share = QgsProcessingParameterNumber(
            self.SYNTH_SHARE, "Share of synthetic training video mixed in", QgsProcessingParameterNumber.Double,
            defaultValue=SYNTH_SHARE, minValue=0.0, maxValue=0.95)
        share.setHelp("So that the network keeps what its synthetic training taught it; used when the plugin's "
                      "synthetic set (build/data/train_city) is present, else your video alone.")
        crop = QgsProcessingParameterNumber(self.CROP, "Training crop (input pixels, multiple of 4)",
                                            QgsProcessingParameterNumber.Integer,
                                            defaultValue=load_config(DEFAULT_CONFIG)["data"]["crop"], minValue=4)
        crop.setHelp("Frames must be at least 4x this (the default 80 needs 320-pixel frames).")
        resume = QgsProcessingParameterBoolean(self.RESUME, "Resume a stopped fine-tune of this output", False)
        for param in (share, crop, resume):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Fine-tuned weights", fileFilter="MSTT weights (*.safetensors)"))
        self.addOutput(QgsProcessingOutputNumber(self.BEFORE, "PSNR on the held-out frames before (dB)"))
        self.addOutput(QgsProcessingOutputNumber(self.AFTER, "PSNR on the held-out frames after (dB)"))
        self.addOutput(QgsProcessingOutputString(self.KEPT, "Weights kept (fine-tuned or base)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        videos = [self.parameterAsFile(parameters, self.VIDEO, context)]
        videos += [v.strip() for v in self.parameterAsString(parameters, self.MORE_VIDEOS, context).split(";") if v.strip()]
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not output:
            raise QgsProcessingException("no output weights file given (OUTPUT)")
        feedback.pushInfo(ensure_engine())
        from ..core.errors import MsttError
        from ..core.training.finetune import finetune, summary_line

        def report(fraction, text):
            feedback.setProgress(100.0 * fraction)
            if text:
                feedback.setProgressText(text)

        def log(line):
            if line.startswith("note:"):
                feedback.pushWarning(processing_message(line, self, CLI_OPTIONS))
            else:
                feedback.pushInfo(line)

        try:
            rec = finetune(
                videos, output, weights=self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
                minutes=self.parameterAsDouble(parameters, self.MINUTES, context),
                synth_share=self.parameterAsDouble(parameters, self.SYNTH_SHARE, context),
                crop=self.parameterAsInt(parameters, self.CROP, context),
                device=self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto",
                resume=self.parameterAsBoolean(parameters, self.RESUME, context),
                overwrite=True,  # a file destination: QGIS has asked before replacing it (the shipped weights never are)
                report=report, log=log, is_canceled=feedback.isCanceled,
                progress_every=PROGRESS_EVERY_S)
        except MsttError as err:
            raise QgsProcessingException(processing_message(err, self, CLI_OPTIONS)) from None
        line = summary_line(rec)
        (feedback.pushInfo if rec["kept"] == KEPT_FINETUNED else feedback.pushWarning)(line)
        after = rec["after"]["psnr"] if rec["after"] else rec["before"]["psnr"]
        return {self.OUTPUT: output, self.BEFORE: rec["before"]["psnr"], self.AFTER: after, self.KEPT: rec["kept"]}
