"""Runs inside a real QGIS desktop (``qgis --code``), started on Xvfb by tests/test_qgis_desktop.py:
what a user does, step by step on QGIS's own event loop, with the findings written to a JSON file.

1. the sample frames as layers; the algorithm's dialog opened from the Plugins menu entry;
   parameters set through its widgets; a screenshot of the dialog; Run;
2. after the frames load: the layer tree as the Layers panel shows it (top-level group,
   collapsed, layer names) and the time settings (project, Temporal Controller panel);
3. the Temporal Controller switched to animation and moved to a frame; a screenshot;
4. a layer of that group selected (QGIS then adds new layers inside it) and a second run
   (the tiny test network): its group must be top level too, under another name.
Configuration: the JSON file named by MSTT_DESKTOP_CONFIG.
"""
import json
import os
import sys
import traceback
import faulthandler

faulthandler.enable()

from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer
from qgis.gui import QgsCollapsibleGroupBoxBasic
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QWidget
from qgis.utils import iface

CONFIG = json.loads(open(os.environ["MSTT_DESKTOP_CONFIG"], encoding="utf-8").read())
FOUND = {"steps": []}
MENU = "MSTT Space-Time Super-Resolution"


def save_and_quit(error=None):
    if error:
        FOUND["error"] = error
    with open(CONFIG["result"], "w", encoding="utf-8") as f:
        json.dump(FOUND, f, indent=1, default=str)
    QgsProject.instance().setDirty(False)
    # straight out: QGIS's own shutdown with this session's Python objects around can crash,
    # and nothing of this throw-away profile needs saving
    QTimer.singleShot(200, lambda: os._exit(0))


def step(fn):
    """Run one step from the event loop; any failure ends the session with its traceback."""
    def run(*args):
        try:
            FOUND["steps"].append(fn.__name__)
            print(f"mstt desktop session: {fn.__name__}", file=sys.stderr, flush=True)
            fn(*args)
        except Exception:
            save_and_quit(traceback.format_exc())
    return run


def later(fn, ms=500):
    QTimer.singleShot(ms, fn)


def wait_until(predicate, then, timeout_s, what):
    """Poll from the event loop (the algorithm runs in a task, its results load on this thread)."""
    deadline = [timeout_s * 5]

    def poll():
        if predicate():
            then()
        elif deadline[0] <= 0:
            save_and_quit(f"timed out waiting for {what}")
        else:
            deadline[0] -= 1
            QTimer.singleShot(200, poll)
    QTimer.singleShot(200, poll)


def menu_action(text):
    for action in iface.pluginMenu().actions():
        menu = action.menu()
        if menu is not None and menu.title().replace("&", "") == MENU:
            return next(a for a in menu.actions() if a.text() == text)
    raise LookupError(f"no {MENU} entry in the Plugins menu")


def open_dialog():
    """The dialog the plugin's menu entry opens (or brings back to the front)."""
    from qgis.utils import plugins

    menu_action("Space-time super-resolution…").trigger()
    return plugins["mstt_stvsr"].dialogs["mstt:spacetimesr"]


@step
def start():
    iface.mainWindow().resize(1400, 860)
    layers = [QgsRasterLayer(p, os.path.basename(p)[:-4], "gdal") for p in CONFIG["inputs"]]
    QgsProject.instance().addMapLayers(layers)
    FOUND["input_ids"] = [lyr.id() for lyr in layers]
    for layer in layers:  # as a user tidies them; only the run's own layers are under test
        QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setExpanded(False)
    iface.mapCanvas().setExtent(layers[0].extent())
    later(fill_dialog, 1500)


def fill(dialog, inputs, weights, out):
    wrappers = dialog.mainWidget().wrappers
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    wrappers["INPUT"].setParameterValue(inputs, context)
    if weights:
        wrappers["WEIGHTS"].setParameterValue(weights, context)
    wrappers["OUTPUT"].setParameterValue(out, context)
    return dialog.createProcessingParameters()


@step
def fill_dialog():
    dialog = open_dialog()
    FOUND["dialog_title"] = dialog.windowTitle()
    dialog.resize(1100, 840)
    dialog.show()
    advanced = dialog.findChild(QObject, "grpAdvanced")  # opened for the screenshot
    sip.cast(advanced, QgsCollapsibleGroupBoxBasic).setCollapsed(False)
    params = fill(dialog, FOUND["input_ids"], None, CONFIG["out1"])
    FOUND["params1"] = {k: str(v) for k, v in params.items()}
    FOUND["dialog"] = dialog
    later(shoot_dialog, 800)


@step
def shoot_dialog():
    dialog = FOUND.pop("dialog")  # the plugin keeps it, as for a user
    dialog.grab().save(CONFIG["shot_dialog"])
    finished = []
    dialog.algorithmFinished.connect(lambda ok, res: finished.append(ok))
    dialog.runAlgorithm()
    wait_until(lambda: finished, after_first_run, CONFIG["run_timeout_s"], "the first run")


def tree_state():
    """The layer tree as the Layers panel shows it: top-level groups, expanded or not in the view."""
    view = iface.layerTreeView()
    model = view.layerTreeModel()
    root = QgsProject.instance().layerTreeRoot()
    groups = []
    for node in root.children():
        if node.nodeType() != node.NodeGroup:
            continue
        layers = node.findLayers()
        groups.append({
            "name": node.name(), "view_expanded": view.isExpanded(model.node2index(node)),
            "layers": [n.layer().name() for n in layers],
            "legends_expanded": sum(view.isExpanded(model.node2index(n)) for n in layers),
            "nested_groups": [c.name() for c in node.children() if c.nodeType() == c.NodeGroup],
        })
    return groups


def controller_widget():
    """The Temporal Controller panel's widget (PyQt sees it as a plain QWidget: found by class name)."""
    return next(w for w in iface.mainWindow().findChildren(QWidget)
                if w.metaObject().className() == "QgsTemporalControllerWidget")


def controller_state():
    """The project's time settings, the canvas's navigation and what the Temporal Controller panel shows."""
    widget = controller_widget()
    nav = iface.mapCanvas().temporalController()
    settings = QgsProject.instance().timeSettings()
    extents = nav.temporalExtents()
    return {
        "project_step": settings.timeStep(), "project_unit": int(settings.timeStepUnit()),
        "frame_duration_s": nav.frameDuration().seconds(), "total_frames": nav.totalFrameCount(),
        "extent": [t.toString("yyyy-MM-ddTHH:mm:ss.zzz") for t in (extents.begin(), extents.end())],
        "panel_step": widget.findChild(QObject, "mStepSpinBox").text(),
        "panel_unit": widget.findChild(QObject, "mTimeStepsComboBox").currentText(),
        "panel_label": widget.findChild(QObject, "mCurrentRangeLabel").text(),
    }


@step
def after_first_run():
    QApplication.processEvents()
    FOUND["tree1"] = tree_state()
    FOUND["time1"] = controller_state()
    widget = controller_widget()
    iface.mainWindow().findChild(QDockWidget, "Temporal Controller").show()
    widget.findChild(QObject, "mNavigationAnimated").click()  # as the user does to play the stack
    iface.mapCanvas().temporalController().setCurrentFrameNumber(3)
    for layer_id in FOUND["input_ids"]:  # the inputs stay, hidden, so the map shows the result
        node = QgsProject.instance().layerTreeRoot().findLayer(layer_id)
        node.setItemVisibilityChecked(False)
    window = iface.mainWindow()  # for the screenshot: the Layers panel wide, the group opened
    window.findChild(QDockWidget, "Browser").hide()
    window.resizeDocks([window.findChild(QDockWidget, "Layers")], [470], Qt.Horizontal)
    QgsProject.instance().layerTreeRoot().children()[0].setExpanded(True)
    later(shoot_result, 2500)


@step
def shoot_result():
    FOUND["time1_animated"] = controller_state()
    iface.mainWindow().grab().save(CONFIG["shot_result"])
    group = QgsProject.instance().layerTreeRoot().children()[0]
    iface.layerTreeView().setCurrentLayer(group.findLayers()[1].layer())  # QGIS adds new layers here now
    dialog = open_dialog()
    fill(dialog, FOUND["input_ids"], CONFIG["tiny_weights"], CONFIG["out2"])  # the same stack again
    finished = []
    dialog.algorithmFinished.connect(lambda ok, res: finished.append(ok))
    dialog.runAlgorithm()
    wait_until(lambda: finished, after_second_run, CONFIG["run_timeout_s"], "the second run")


@step
def after_second_run():
    QApplication.processEvents()
    FOUND["tree2"] = tree_state()
    FOUND["time2"] = controller_state()
    save_and_quit()


QTimer.singleShot(1000, start)
