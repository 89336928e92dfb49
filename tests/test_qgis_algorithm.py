"""The algorithm through processing.run in the session's headless QgsApplication: each bad
input is a clean Processing error that leaves nothing behind, cancel mid-run leaves no file,
and a batch of two stacks runs, each stack's frames loading into their own temporal group."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis_fixtures import ALG, RecordingFeedback
from stackgen import rewrite_crs, write_stack

pytestmark = pytest.mark.qgis


def run(params, feedback=None, context=None):
    import processing

    return processing.run(ALG, params, feedback=feedback or RecordingFeedback.create(), context=context)


def _palette(d):
    paths = [d / "palette_0.tif", d / "palette_1.tif"]
    for path in paths:
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                           crs="EPSG:32633", transform=rasterio.Affine(2, 0, 0, 0, -2, 0)) as dst:
            dst.write(np.zeros((1, 16, 16), np.uint8))
            dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255)})
    return [str(p) for p in paths]


def _xyz_layer():
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer("type=xyz&url=https://tile.example.invalid/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    QgsProject.instance().addMapLayer(layer)
    return layer


# name -> (change the parameters (params, input paths, folder), expected message part)
BAD = {
    "one frame": (lambda q, p, d: q.update(INPUT=p[:1]), "at least 2 frames are needed, got 1"),
    "missing file": (lambda q, p, d: q.update(INPUT=[p[0], str(d / "gone.tif")]), "gone.tif: file not found"),
    "not a raster": (lambda q, p, d: ((d / "notes.txt").write_text("hello"),
                                      q.update(INPUT=[p[0], str(d / "notes.txt")])), "notes.txt: not a raster GDAL can read"),
    "size mismatch": (lambda q, p, d: q.update(INPUT=[p[0], write_stack(d / "other", n=1, h=24, w=56)[0]]),
                      "size 56x24 differs from"),
    "CRS mismatch": (lambda q, p, d: rewrite_crs(p[1]), "frame_01.tif: CRS EPSG:4326 differs"),
    "palette": (lambda q, p, d: q.update(INPUT=_palette(d)), "colour table"),
    "times count": (lambda q, p, d: q.update(TIMES="2021-01-01T00:00:00Z"),
                    '"Frame times" (TIMES) gives 1 times for 3 input frames'),
    "times order": (lambda q, p, d: q.update(TIMES="2021-01-03,2021-01-02,2021-01-04"),
                    '"Frame times" (TIMES) item 2: time 2021-01-02T00:00:00 is not after "Frame times" (TIMES) item 1'),
    "weights missing": (lambda q, p, d: q.update(WEIGHTS=str(d / "none.safetensors")), "weights file not found"),
    "weights not MSTT": (lambda q, p, d: ((d / "w.safetensors").write_bytes(b"\0" * 64),
                                         q.update(WEIGHTS=str(d / "w.safetensors"))), "w.safetensors: not a readable safetensors file"),
    "output exists": (lambda q, p, d: ((d / "out").mkdir(), (d / "out" / "frame_x4_t002.tif").write_text("mine")),
                      'frame_x4_t002.tif already exists; use "Replace existing output files" (OVERWRITE) to replace'),
    "cuda without cuda": (lambda q, p, d: q.update(DEVICE="cuda"), "CUDA is not available"),
    "fp16 on cpu": (lambda q, p, d: q.update(DEVICE="cpu", PRECISION="fp16"), "precision fp16 needs a CUDA device"),
    "web tiles layer": (lambda q, p, d: q.update(INPUT=[_xyz_layer().id(), p[0]]),
                        "tiles: a wms layer; only file rasters GDAL reads can be super-resolved"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_a_clean_processing_error(tmp_path, project, tiny_weights, name):
    from qgis.core import QgsProcessingException

    if name == "cuda without cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    paths = write_stack(tmp_path, n=3, h=40, w=56)
    params = dict(INPUT=paths, WEIGHTS=str(tiny_weights), TILE_SIZE=80, OUTPUT=str(tmp_path / "out"))
    change, expected = BAD[name]
    change(params, paths, tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    feedback = RecordingFeedback.create()
    with pytest.raises(QgsProcessingException) as err:
        run(params, feedback)
    message = str(err.value).strip()
    # one line, like the CLI's (processing.run puts "Unable to execute algorithm" above a
    # parameter check's message)
    assert expected in message.splitlines()[-1] and len(message.splitlines()) <= 2, message
    assert "Traceback" not in message + "".join(feedback.errors) and "File \"" not in message
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing written


def test_cancel_mid_run_leaves_no_file(tmp_path, qgis_app, small_stack, tiny_weights):
    from qgis.core import QgsProcessingException

    feedback = RecordingFeedback.create(cancel_at="window 1")
    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match="canceled"):
        run(dict(INPUT=small_stack, WEIGHTS=str(tiny_weights), TILE_SIZE=80, OUTPUT=str(out)), feedback)
    assert any(t.startswith("window 1") for t in feedback.texts)  # it was well under way (the network had run)
    assert feedback.isCanceled()
    assert not out.exists() or list(out.iterdir()) == []


def test_resume_parameter_keeps_a_canceled_runs_windows_and_reuses_them(tmp_path, qgis_app, tiny_weights):
    """RESUME: a canceled run keeps its finished windows (hidden, no frame), and the next run
    with RESUME computes only the rest."""
    from qgis.core import QgsProcessingException

    stack = write_stack(tmp_path / "in", n=5, h=40, w=56)  # central plan: 4 time windows
    params = dict(INPUT=stack, WEIGHTS=str(tiny_weights), TILE_SIZE=80, WINDOWS="central", RESUME=True,
                  OUTPUT=str(tmp_path / "out"))
    feedback = RecordingFeedback.create(cancel_at="window 2")
    with pytest.raises(QgsProcessingException, match="canceled"):
        run(params, feedback)
    assert any("2 finished part(s) kept in" in line and "(RESUME)" in line for line in feedback.warnings)
    assert not list((tmp_path / "out").glob("*.tif"))
    feedback = RecordingFeedback.create()
    res = run(params, feedback)
    assert "resume: 2 of 4 time window(s) reused, 2 to compute" in feedback.infos
    assert not any(t.startswith(("window 1/", "window 2/")) for t in feedback.texts)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(Path(p).name for p in res["OUTPUT_LAYERS"])


def _run_and_load(project, inputs, out, weights, **extra):
    """One processing.run, then the loading the dialog (and the batch dialog, row by row) does."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication, QgsProcessingContext

    context = QgsProcessingContext()
    context.setProject(project)
    feedback = RecordingFeedback.create()
    res = run(dict(INPUT=inputs, WEIGHTS=str(weights), TILE_SIZE="80", DEVICE="cpu", OUTPUT=str(out), **extra),
              feedback, context)
    assert handleAlgorithmResults(QgsApplication.processingRegistry().algorithmById(ALG), context, feedback), feedback.errors
    return res, feedback


def _groups(project) -> dict:
    root = project.layerTreeRoot()
    return {g.name(): g for g in root.children() if g.nodeType() == g.NodeGroup}


def test_batch_of_two_stacks_loads_each_into_its_temporal_group(tmp_path, project, small_stack, tiny_weights):
    from qgis.core import QgsRasterLayerTemporalProperties

    second = write_stack(tmp_path / "b", n=2, h=32, w=48, dtype="uint16", name="scene", times=None, seed=3)
    rows = [(small_stack, tmp_path / "out_a", 5), (second, tmp_path / "out_b", 3)]
    for inputs, out, n_out in rows:
        res, feedback = _run_and_load(project, inputs, out, tiny_weights)
        assert res["OUTPUT"] == str(out) and len(res["OUTPUT_LAYERS"]) == n_out
        assert res["OUTPUT_LAYERS"] == sorted(str(p) for p in out.glob("*.tif"))
        infos = "\n".join(feedback.infos)
        assert "device cpu" in infos and "tiles: 1x1 of 80 px" in infos and "elapsed:" in infos
        with rasterio.open(inputs[0]) as src, rasterio.open(res["OUTPUT_LAYERS"][0]) as dst:
            assert (dst.width, dst.height, dst.dtypes, dst.crs) == (4 * src.width, 4 * src.height, src.dtypes, src.crs)
            assert dst.transform.a == src.transform.a / 4 and dst.transform.c == src.transform.c

    # stackgen's first frame 2021-05-03 10:15:00, inputs 2 s apart: outputs 1 s apart
    groups = _groups(project)
    assert list(groups) == ["scene_x4 (no acquisition times)", "frame_x4 2021-05-03 10:15:00\u201310:15:04"]
    t0 = datetime(2021, 5, 3, 10, 15, tzinfo=timezone.utc)
    expect = {"frame_x4": [t0 + timedelta(seconds=k) for k in range(6)],
              "scene_x4": [datetime(2000, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=k) for k in range(4)]}
    for label, group in groups.items():
        name = label.split()[0]
        layers = [n.layer() for n in group.findLayers()]
        timed = [f" {t:%H:%M:%S}" if name == "frame_x4" else "" for t in expect[name]]
        assert [lyr.name() for lyr in layers] == [f"{name}_t{k:03d}{timed[k]}" for k in range(len(layers))]
        for k, layer in enumerate(layers):
            props = layer.temporalProperties()
            assert props.isActive() and props.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange
            rng = props.fixedTemporalRange()
            assert (rng.begin().toPyDateTime(), rng.end().toPyDateTime()) == (
                _naive(expect[name][k]), _naive(expect[name][k + 1]))
            assert rng.includeBeginning() and not rng.includeEnd()
    span = project.timeSettings().temporalRange()
    assert span.begin().toPyDateTime() == _naive(expect["scene_x4"][0])
    assert span.end().toPyDateTime() == _naive(expect["frame_x4"][-1])


def test_second_run_of_a_stack_gets_its_own_top_level_group(tmp_path, project, small_stack, tiny_weights):
    """QGIS adds layers beside the selected one: with a layer of the first run's group selected,
    the second run's group must still land at the top level, under another name, with frames
    named apart from the first run's; both open collapsed (group and band legends)."""
    from qgis.core import QgsLayerTreeRegistryBridge

    _run_and_load(project, small_stack, tmp_path / "first", tiny_weights)
    first = next(iter(_groups(project).values()))
    bridge = project.layerTreeRegistryBridge()  # as a user's click on a frame of the first run
    bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(first, 1))
    _run_and_load(project, small_stack, tmp_path / "second", tiny_weights)

    label = "frame_x4 2021-05-03 10:15:00\u201310:15:04"
    groups = _groups(project)
    assert list(groups) == [f"{label} (2)", label]  # the newest on top, nothing nested
    assert not [c for c in first.children() if c.nodeType() == c.NodeGroup]
    names = {g: [n.layer().name() for n in group.findLayers()] for g, group in groups.items()}
    assert names[label][1] == "frame_x4_t001 10:15:01" and names[f"{label} (2)"][1] == "frame_x4_t001 10:15:01 (2)"
    assert not set(names[label]) & set(names[f"{label} (2)"])
    for group in groups.values():
        assert not group.isExpanded() and not any(n.isExpanded() for n in group.findLayers())


def test_sub_second_frames_are_named_and_stepped_in_milliseconds(tmp_path, project, small_stack, tiny_weights):
    """10 fps input (0.1 s): outputs 0.05 s apart. Layer names carry milliseconds, and the
    project's frame step is one frame, in milliseconds (the Temporal Controller shows
    milliseconds only then)."""
    from qgis.core import QgsUnitTypes

    times = "2019-07-15T18:05:30.0Z,2019-07-15T18:05:30.1Z,2019-07-15T18:05:30.2Z"
    _run_and_load(project, small_stack, tmp_path / "out", tiny_weights, TIMES=times)
    (label, group), = _groups(project).items()
    assert label == "frame_x4 2019-07-15 18:05:30.000\u201318:05:30.200"
    assert [n.layer().name() for n in group.findLayers()] == [
        f"frame_x4_t{k:03d} 18:05:30.{50 * k:03d}" for k in range(5)]
    settings = project.timeSettings()
    assert (settings.timeStep(), settings.timeStepUnit()) == (50.0, QgsUnitTypes.TemporalMilliseconds)
    span = settings.temporalRange()
    assert span.begin().msecsTo(span.end()) == 250  # 5 frames of 50 ms


def _naive(t: datetime) -> datetime:
    """QDateTime.toPyDateTime() gives naive datetimes of the UTC wall clock for UTC QDateTimes."""
    return t.astimezone(timezone.utc).replace(tzinfo=None)


def test_output_layers_match_files_on_disk(tmp_path, qgis_app, small_stack, tiny_weights):
    """OVERWRITE and COG reach the engine: a second run into the same folder replaces the frames."""
    out = tmp_path / "out"
    params = dict(INPUT=small_stack, WEIGHTS=str(tiny_weights), TILE_SIZE=80, OUTPUT=str(out))
    first = run(params)["OUTPUT_LAYERS"]
    stamp = {p: os.stat(p).st_mtime_ns for p in first}
    second = run(dict(params, OVERWRITE=True, COG=True))["OUTPUT_LAYERS"]
    assert second == first and all(os.stat(p).st_mtime_ns != stamp[p] for p in first)
    with rasterio.open(second[0]) as ds:
        assert ds.overviews(1) or ds.profile.get("tiled")  # a COG is tiled
    assert sorted(Path(p).name for p in first) == sorted(os.listdir(out))
