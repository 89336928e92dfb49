"""The fine-tune algorithm through processing.run with a tiny network on a tiny video: its
output feeds the main algorithm's weights (directly and in a model), Cancel keeps the best
weights so far, and bad input is a clean Processing error that writes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from qgis_fixtures import ALG, RecordingFeedback

from test_finetune import write_video

pytestmark = pytest.mark.qgis
FT = "mstt:finetune"


def run(alg, params, feedback=None, context=None):
    import processing

    return processing.run(alg, params, feedback=feedback or RecordingFeedback.create(), context=context)


def params(video, weights, out, **extra):
    return {**dict(VIDEO=str(video), WEIGHTS=str(weights), MINUTES=0.15, CROP=20, DEVICE="cpu", SYNTH_SHARE=0.0,
                   OUTPUT=str(out)), **extra}


def record(path) -> dict:
    from mstt_stvsr.core.net.weights import read_metadata

    return json.loads(read_metadata(path)["finetune"])


def test_registered_for_the_toolbox_and_the_model_builder(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingAlgorithm

    alg = QgsApplication.processingRegistry().algorithmById(FT)
    assert alg is not None and alg.displayName() == "Fine-tune the network on your own video"
    assert not alg.flags() & QgsProcessingAlgorithm.FlagHideFromModeler
    types = {p.name(): p.type() for p in alg.parameterDefinitions()}
    assert types == {"VIDEO": "file", "MORE_VIDEOS": "string", "MINUTES": "number", "WEIGHTS": "file", "DEVICE": "enum",
                     "SYNTH_SHARE": "number", "CROP": "number", "RESUME": "boolean", "OUTPUT": "fileDestination"}
    assert alg.parameterDefinition("SYNTH_SHARE").defaultValue() == 0.25
    assert alg.parameterDefinition("CROP").defaultValue() == 80


def test_fine_tuned_weights_feed_the_super_resolution(tmp_path, qgis_app, tiny_weights, small_stack):
    video = write_video(tmp_path / "video", frames=21)
    more = write_video(tmp_path / "more", frames=14, seed=6)
    out = tmp_path / "mine.safetensors"
    feedback = RecordingFeedback.create()
    res = run(FT, params(video, tiny_weights, out, MORE_VIDEOS=f" {more} ;"), feedback)
    rec = record(out)
    assert res["OUTPUT"] == str(out) and res["KEPT"] == rec["kept"]
    assert res["PSNR_BEFORE"] == rec["before"]["psnr"] and rec["steps"] > 0 and rec["after"] is not None
    assert [s["video"] for s in rec["sources"]] == [str(video), str(more)]
    logged = "\n".join(feedback.infos + feedback.warnings)
    assert "held-out frames of your video: base weights" in logged
    assert any(t.startswith("fine-tuning: step") and "left (ends ~" in t for t in feedback.texts)
    sr = run(ALG, dict(INPUT=small_stack, WEIGHTS=res["OUTPUT"], TILE_SIZE=80, DEVICE="cpu", OUTPUT=str(tmp_path / "sr")))
    assert len(sr["OUTPUT_LAYERS"]) == 5 and all(Path(p).is_file() for p in sr["OUTPUT_LAYERS"])


def test_cancel_keeps_the_best_weights_so_far(tmp_path, qgis_app, tiny_weights):
    video = write_video(tmp_path / "video", frames=14)
    out = tmp_path / "w.safetensors"
    feedback = RecordingFeedback.create(cancel_at="fine-tuning: step")
    res = run(FT, params(video, tiny_weights, out, MINUTES=5.0), feedback)
    assert feedback.isCanceled()
    rec = record(out)
    assert rec["ended"] == "canceled" and rec["steps"] >= 1 and rec["after"] is not None
    assert res["KEPT"] == rec["kept"] and rec["wall_minutes"] < 2  # stopped long before its 5 minutes
    assert (tmp_path / "w.finetune" / "last.pt").is_file()  # RESUME can continue it


def test_bad_input_is_a_clean_processing_error(tmp_path, qgis_app, tiny_weights):
    from mstt_stvsr.core.net.weights import default_weights_path
    from qgis.core import QgsProcessingException

    video = write_video(tmp_path / "video", frames=5)
    before = sorted(tmp_path.rglob("*"))
    shipped = default_weights_path().read_bytes()
    for change, expected in ((dict(), "5 frame(s); a video needs at least 7"),
                             (dict(VIDEO=str(write_video(tmp_path / "ok", frames=14)), OUTPUT=str(default_weights_path())),
                              "where the shipped default weights live")):
        before = sorted(tmp_path.rglob("*"))
        with pytest.raises(QgsProcessingException) as err:
            run(FT, {**params(video, tiny_weights, tmp_path / "w.safetensors"), **change})
        message = str(err.value).strip()
        assert expected in message.splitlines()[-1] and "Traceback" not in message, message
        assert sorted(tmp_path.rglob("*")) == before
    assert default_weights_path().read_bytes() == shipped


def test_model_builder_chains_fine_tune_into_super_resolution(tmp_path, qgis_app, tiny_weights, small_stack):
    """A model: fine-tune, whose output weights are the super-resolution's WEIGHTS."""
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput)

    video = write_video(tmp_path / "video", frames=14)
    model = QgsProcessingModelAlgorithm("finetune_then_sr", "tests")
    ft = QgsProcessingModelChildAlgorithm(FT)
    ft.setChildId("ft")
    for name, value in params(video, tiny_weights, "").items():
        if name != "OUTPUT":
            ft.addParameterSources(name, [Source.fromStaticValue(value)])
    weights = QgsProcessingModelOutput("weights", "weights")
    weights.setChildId("ft")
    weights.setChildOutputName("OUTPUT")
    ft.setModelOutputs({"weights": weights})
    sr = QgsProcessingModelChildAlgorithm(ALG)
    sr.setChildId("sr")
    sr.addParameterSources("INPUT", [Source.fromStaticValue(small_stack)])
    sr.addParameterSources("WEIGHTS", [Source.fromChildOutput("ft", "OUTPUT")])
    sr.addParameterSources("TILE_SIZE", [Source.fromStaticValue("80")])
    sr.addParameterSources("DEVICE", [Source.fromStaticValue("cpu")])
    frames = QgsProcessingModelOutput("frames", "frames")
    frames.setChildId("sr")
    frames.setChildOutputName("OUTPUT")
    sr.setModelOutputs({"frames": frames})
    model.addChildAlgorithm(ft)
    model.addChildAlgorithm(sr)
    model.updateDestinationParameters()
    out = tmp_path / "model_weights.safetensors"
    res = run(model, {"ft:weights": str(out), "sr:frames": str(tmp_path / "frames")})
    assert record(out)["steps"] >= 0 and Path(res["ft:weights"]) == out
    assert len(list((tmp_path / "frames").glob("*.tif"))) == 5


def test_dialog_builds_and_the_plugins_menu_offers_it(qgis_app):
    """The Toolbox dialog has a widget for every parameter (the defaults shown are the ones
    run), and the plugin's Plugins-menu entries include this algorithm."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    from mstt_stvsr.mstt_qgis.plugin import ACTIONS

    dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(FT))
    wrappers = dialog.mainWidget().wrappers
    assert set(wrappers) == {"VIDEO", "MORE_VIDEOS", "MINUTES", "WEIGHTS", "DEVICE", "SYNTH_SHARE", "CROP", "RESUME",
                             "OUTPUT"}
    assert wrappers["MINUTES"].parameterValue() == 30.0 and wrappers["CROP"].parameterValue() == 80
    assert dialog.windowTitle().startswith("Fine-tune the network on your own video")
    assert (FT, "Fine-tune the network on your own video…") in ACTIONS
    dialog.deleteLater()
