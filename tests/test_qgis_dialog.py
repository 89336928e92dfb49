"""The Toolbox dialog, headless: parameters set through its widgets, the run started from the
dialog as the Run button does, frames loaded into a temporal group, the Temporal Controller's
range and step set."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from qgis_fixtures import ALG

pytestmark = pytest.mark.qgis


class _Iface:
    """The one thing of the desktop's iface our code reads: the map canvas (a real one, with a
    real temporal navigation object, as in the desktop)."""

    def __init__(self, canvas):
        self._canvas = canvas

    def mapCanvas(self):  # noqa: N802
        return self._canvas


def _wait(predicate, timeout=240.0):
    from qgis.PyQt.QtCore import QCoreApplication

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the dialog's run did not finish")
        QCoreApplication.processEvents()
        time.sleep(0.02)


def test_dialog_sets_parameters_runs_and_loads_a_temporal_group(tmp_path, project, small_stack, tiny_weights,
                                                                 monkeypatch):
    import qgis.utils
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import (
        QgsApplication, QgsProcessingContext, QgsRasterLayer, QgsRasterLayerTemporalProperties,
        QgsInterval, QgsTemporalNavigationObject, QgsUnitTypes,
    )
    from qgis.gui import QgsMapCanvas
    from qgis.PyQt.QtWidgets import QComboBox

    # the frames are layers of the project, as a user would have them; the user picks them
    layers = [QgsRasterLayer(p, f"frame {i}", "gdal") for i, p in enumerate(small_stack)]
    project.addMapLayers(layers)
    canvas = QgsMapCanvas()
    nav = QgsTemporalNavigationObject(canvas)
    nav.setNavigationMode(QgsTemporalNavigationObject.Animated)  # the Temporal Controller already on
    nav.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalHours))  # and its default step
    canvas.setTemporalController(nav)
    monkeypatch.setattr(qgis.utils, "iface", _Iface(canvas))

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    dialog = AlgorithmDialog(alg)
    panel = dialog.mainWidget()
    wrappers = panel.wrappers
    assert set(wrappers) == {"INPUT", "WEIGHTS", "TILE_SIZE", "OVERLAP", "DEVICE", "PRECISION", "TIMES",
                             "WINDOWS", "ENSEMBLE", "OVERWRITE", "COG", "RESUME", "CLUSTER", "OUTPUT"}
    assert dialog.windowTitle().startswith("Space-time super-resolution")
    context = QgsProcessingContext()
    context.setProject(project)
    wrappers["INPUT"].setParameterValue([lyr.id() for lyr in layers], context)
    wrappers["WEIGHTS"].setParameterValue(str(tiny_weights), context)
    tile_combo = wrappers["TILE_SIZE"].wrappedWidget()
    assert tile_combo.currentText() == "auto" and tile_combo.itemText(1) == "80"
    tile_combo.setCurrentIndex(1)  # as a user's pick of 80
    spin = wrappers["OVERLAP"].wrappedWidget()
    assert spin.text() == "16"  # the default the engine uses, not "Not set"
    spin.stepUp()  # one click up: one pixel more, not a jump from "Not set" to 0
    assert spin.text() == "17" and wrappers["OVERLAP"].parameterValue() == 17
    spin.stepDown()
    combo = wrappers["DEVICE"].wrappedWidget()
    assert isinstance(combo, QComboBox) and [combo.itemText(i) for i in range(combo.count())] == ["auto", "cpu", "cuda"]
    combo.setCurrentIndex(1)  # as a user's click on "cpu"
    out = tmp_path / "frames"
    wrappers["OUTPUT"].setParameterValue(str(out), context)

    params = dialog.createProcessingParameters()
    assert params["INPUT"] == small_stack  # the picked layers, in the order picked
    assert params["WEIGHTS"] == str(tiny_weights) and params["TILE_SIZE"] == "80" and params["OVERLAP"] == 16
    assert params["DEVICE"] == "cpu" and params["PRECISION"] == "auto" and params["OVERWRITE"] is False
    assert params["OUTPUT"] == str(out)
    assert alg.checkParameterValues(params, context)[0]

    finished = []
    dialog.algorithmFinished.connect(lambda ok, results: finished.append((ok, results)))
    dialog.runAlgorithm()  # what the Run button does: a background task, then loading
    _wait(lambda: finished)
    ok, results = finished[0]  # emitted only after the frames were loaded without error
    assert ok
    names = [f"frame_x4_t{k:03d}" for k in range(5)]
    assert results["OUTPUT_LAYERS"] == [str(out / f"{n}.tif") for n in names]

    group = project.layerTreeRoot().findGroup("frame_x4 2021-05-03 10:15:00\u201310:15:04")
    assert group is not None and group.parent() == project.layerTreeRoot()
    assert not group.isExpanded() and not any(node.isExpanded() for node in group.findLayers())
    loaded = [node.layer() for node in group.findLayers()]
    assert [lyr.name() for lyr in loaded] == [f"{n} 10:15:0{k}" for k, n in enumerate(names)]
    assert [lyr.source() for lyr in loaded] == results["OUTPUT_LAYERS"]
    t0 = datetime(2021, 5, 3, 10, 15)  # stackgen's frames: 2 s apart, so outputs 1 s apart
    for k, layer in enumerate(loaded):
        props = layer.temporalProperties()
        assert props.isActive() and props.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange
        rng = props.fixedTemporalRange()
        assert rng.begin().toPyDateTime() == t0 + timedelta(seconds=k)
        assert rng.end().toPyDateTime() == t0 + timedelta(seconds=k + 1)
    # the input layers are untouched, outside the group
    assert all(project.layerTreeRoot().findLayer(lyr.id()).parent() == project.layerTreeRoot() for lyr in layers)

    extents = nav.temporalExtents()
    assert extents.begin().toPyDateTime() == t0 and extents.end().toPyDateTime() == t0 + timedelta(seconds=5)
    assert nav.frameDuration().seconds() == 1.0 and nav.frameDuration().originalUnit() == QgsUnitTypes.TemporalSeconds
    assert nav.totalFrameCount() == 5  # the controller steps through exactly the 5 frames
    settings = project.timeSettings()
    assert settings.temporalRange().begin().toPyDateTime() == t0 and (settings.timeStep(), settings.timeStepUnit()) == (1.0, QgsUnitTypes.TemporalSeconds)


def test_help_panel_shows_whole_paragraphs(qgis_app):
    """The dialog's help panel: one paragraph per paragraph of the help, none cut mid-sentence."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication
    from qgis.PyQt.QtWidgets import QTextBrowser

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    dialog = AlgorithmDialog(alg)
    browser = dialog.findChild(QTextBrowser, "textShortHelp")
    shown = [p for p in browser.toPlainText().split("\n") if p.strip()]
    assert shown[0] == alg.displayName()  # the title, then the paragraphs
    assert len(shown) - 1 == len(alg.shortHelpString().split("\n"))
    assert all(p.rstrip(")").endswith((".", ":")) for p in shown[1:]), shown
    assert shown[1].startswith("Super-resolves a stack") and shown[2].startswith("In: N \u2265 2 raster frames")
    dialog.deleteLater()
