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
    path = d / "palette.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.Affine(2, 0, 0, 0, -2, 0)) as dst:
        dst.write(np.zeros((1, 16, 16), np.uint8))
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255)})
    return [str(path), str(path)]


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
    "times count": (lambda q, p, d: q.update(TIMES="2021-01-01T00:00:00Z"), "TIMES gives 1 times for 3 input frames"),
    "times order": (lambda q, p, d: q.update(TIMES="2021-01-03,2021-01-02,2021-01-04"),
                    "TIMES item 2: time 2021-01-02T00:00:00 is not after TIMES item 1"),
    "weights missing": (lambda q, p, d: q.update(WEIGHTS=str(d / "none.safetensors")), "weights file not found"),
    "weights not MSTT": (lambda q, p, d: ((d / "w.safetensors").write_bytes(b"\0" * 64),
                                         q.update(WEIGHTS=str(d / "w.safetensors"))), "w.safetensors: not a readable safetensors file"),
    "output exists": (lambda q, p, d: ((d / "out").mkdir(), (d / "out" / "frame_x4_t002.tif").write_text("mine")),
                      "frame_x4_t002.tif already exists; use the OVERWRITE option to replace"),
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

    feedback = RecordingFeedback.create(cancel_at="window 2")
    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match="canceled"):
        run(dict(INPUT=small_stack, WEIGHTS=str(tiny_weights), TILE_SIZE=80, OUTPUT=str(out)), feedback)
    assert any(t.startswith("window 1") for t in feedback.texts)  # it was well under way
    assert feedback.isCanceled()
    assert not out.exists() or list(out.iterdir()) == []


def test_batch_of_two_stacks_loads_each_into_its_temporal_group(tmp_path, project, small_stack, tiny_weights):
    """As the batch dialog does: one processing.run per row, each row's layers loaded after it."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication, QgsProcessingContext, QgsRasterLayerTemporalProperties

    second = write_stack(tmp_path / "b", n=2, h=32, w=48, dtype="uint16", name="scene", times=None, seed=3)
    rows = [(small_stack, tmp_path / "out_a", 5), (second, tmp_path / "out_b", 3)]
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    for inputs, out, n_out in rows:
        context = QgsProcessingContext()
        context.setProject(project)
        feedback = RecordingFeedback.create()
        res = run(dict(INPUT=inputs, WEIGHTS=str(tiny_weights), TILE_SIZE=80, DEVICE="cpu", OUTPUT=str(out)),
                  feedback, context)
        assert res["OUTPUT"] == str(out) and len(res["OUTPUT_LAYERS"]) == n_out
        assert res["OUTPUT_LAYERS"] == sorted(str(p) for p in out.glob("*.tif"))
        infos = "\n".join(feedback.infos)
        assert "device cpu" in infos and "tiles: 1x1 of 80 px" in infos and "elapsed:" in infos
        with rasterio.open(inputs[0]) as src, rasterio.open(res["OUTPUT_LAYERS"][0]) as dst:
            assert (dst.width, dst.height, dst.dtypes, dst.crs) == (4 * src.width, 4 * src.height, src.dtypes, src.crs)
            assert dst.transform.a == src.transform.a / 4 and dst.transform.c == src.transform.c
        assert handleAlgorithmResults(alg, context, feedback)

    root = project.layerTreeRoot()
    groups = {g.name(): g for g in root.children() if g.nodeType() == g.NodeGroup}
    assert set(groups) == {"frame_x4", "scene_x4"}
    t0 = datetime(2021, 5, 3, 10, 15, tzinfo=timezone.utc)  # stackgen's first frame, 2 s apart
    expect = {"frame_x4": [t0 + timedelta(seconds=k) for k in range(6)],
              "scene_x4": [datetime(2000, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=k) for k in range(4)]}
    for name, group in groups.items():
        layers = [n.layer() for n in group.findLayers()]
        assert [lyr.name() for lyr in layers] == [f"{name}_t{k:03d}" for k in range(len(layers))]
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
