"""Loading the output frames into the project: one group per run at the top of the Layers
panel, in time order, each frame named with its time and given a fixed temporal range so that
the Temporal Controller animates the stack (temporal.py).

Only file paths are queued when the algorithm finishes: ``qgis_process`` and ``processing.run``
ignore the queue, so nothing is opened (no statistics, no .aux.xml) unless QGIS really loads the
frames. When it does (dialog, batch dialog, ``runAndLoadResults``), a post-processor per frame
names it, sets its temporal range and moves it into the run's group; after the last frame, the
group is collapsed and the project's (and desktop's) time settings follow the stack.
"""
from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

from qgis.core import QgsLayerTreeGroup, QgsProcessingContext, QgsProcessingLayerPostProcessorInterface, QgsProcessingUtils
from qgis.PyQt.QtCore import QTimer

from .temporal import fallback_times, frame_ranges, frame_step, set_fixed_range, show_stack_in_time, utc

INDEX_PROPERTY = "mstt_stvsr/frame_index"

# Processing does not own post-processors: keep each alive until it has run. Runs whose frames
# are never loaded (processing.run in a script) would pile them up: keep the newest 20000.
_PENDING: deque = deque(maxlen=20000)


def stack_name(paths) -> str:
    """The stack's name: the outputs' shared prefix (``frame_x4`` for ``frame_x4_t000.tif``)."""
    stem = Path(paths[0]).stem
    head, sep, tail = stem.rpartition("_t")
    return head if sep and tail.isdigit() else stem


def clock(t: datetime, sub_second: bool) -> str:
    """Time of day, with milliseconds when frames are less than a second apart (the Temporal
    Controller shows milliseconds then too)."""
    return t.strftime("%H:%M:%S.%f")[:-3] if sub_second else t.strftime("%H:%M:%S")


def stack_labels(paths, times) -> tuple:
    """(group label, layer labels): the group says the stack and its time span, each layer its
    file's name and its time, so that two stacks never share names; no times, no time labels."""
    name = stack_name(paths)
    stems = [Path(p).stem for p in paths]
    if times is None:
        return f"{name} (no acquisition times)", stems
    starts = [utc(t) for t in times]
    sub = any(t.microsecond for t in starts) or frame_step(frame_ranges(starts)) < timedelta(seconds=1)
    first, last = starts[0], starts[-1]
    end = clock(last, sub) if last.date() == first.date() else f"{last:%Y-%m-%d} {clock(last, sub)}"
    group = f"{name} {first:%Y-%m-%d} {clock(first, sub)}\u2013{end}"
    return group, [f"{stem} {clock(t, sub)}" for stem, t in zip(stems, starts)]


def unique_name(parent, label: str) -> tuple:
    """(name, suffix): ``label``, or ``label (2)``, ``(3)``... when a group of that name is
    already there (the same stack run twice)."""
    taken = {child.name() for child in parent.children() if isinstance(child, QgsLayerTreeGroup)}
    suffix, n = "", 1
    while label + suffix in taken:
        n += 1
        suffix = f" ({n})"
    return label + suffix, suffix


def results_parent(project):
    """Where a run's group goes: the top of the tree, or Processing's results group when the
    user has set one (Processing > Options > General > Results group name). Never beside the
    selected layer, where QGIS adds new layers: that could be inside an earlier run's group."""
    root = project.layerTreeRoot()
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        name = ProcessingConfig.getSetting(ProcessingConfig.RESULTS_GROUP_NAME)
    except Exception:  # Processing's Python side not loaded (a script with only qgis.core)
        name = None
    return (root.findGroup(name) or root) if name else root


def collapse(group) -> None:
    group.setExpanded(False)
    for node in group.children():
        node.setExpanded(False)  # a raster's legend (one row per band) closed too


class StackGroup:
    """Shared by the post-processors of one run: creates the group once, names the frames."""

    def __init__(self, label: str, layer_labels: list, span: tuple, step: timedelta):
        self.label = label
        self.layer_labels = layer_labels
        self.span = span
        self.step = step
        self.group = None
        self.suffix = ""
        self.placed = 0

    def group_in(self, project) -> QgsLayerTreeGroup:
        if self.group is None:
            parent = results_parent(project)
            name, self.suffix = unique_name(parent, self.label)
            self.group = parent.insertGroup(0, name)
            self.group.setExpanded(False)
        return self.group

    def layer_name(self, index: int) -> str:
        return self.layer_labels[index] + self.suffix

    def finished(self, project) -> None:
        """All frames placed: collapse the group (now, and once more after the desktop has
        selected the last added layer, which expands the group holding it), and let the
        project's and the desktop's time settings follow the stack."""
        collapse(self.group)
        root, name = project.layerTreeRoot(), self.group.name()

        def collapse_later():
            group = root.findGroup(name)
            if group is not None:
                collapse(group)

        QTimer.singleShot(0, collapse_later)
        show_stack_in_time(project, self.span, self.step)


class FramePlacer(QgsProcessingLayerPostProcessorInterface):
    """Names one loaded frame, gives it its time range and moves it into its run's group,
    keeping the group in time order."""

    def __init__(self, stack: StackGroup, index: int, start: datetime, end: datetime):
        super().__init__()
        self.stack = stack
        self.index = index
        self.start, self.end = start, end
        _PENDING.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        try:
            project = context.project()
            if project is None or layer is None:
                return
            set_fixed_range(layer, self.start, self.end)
            node = project.layerTreeRoot().findLayer(layer.id())
            if node is None:
                return
            group = self.stack.group_in(project)
            layer.setName(self.stack.layer_name(self.index))
            position = sum(1 for child in group.children()
                           if int(child.customProperty(INDEX_PROPERTY, -1)) < self.index)
            clone = node.clone()
            clone.setCustomProperty(INDEX_PROPERTY, self.index)
            clone.setExpanded(False)
            group.insertChildNode(position, clone)
            node.parent().removeChildNode(node)  # after inserting the clone: the layer stays in the project
            self.stack.placed += 1
            if self.stack.placed == len(self.stack.layer_labels):
                self.stack.finished(project)
        finally:
            try:
                _PENDING.remove(self)
            except ValueError:
                pass


def add_frames_to_load(context: QgsProcessingContext, paths, times, output_name: str) -> StackGroup:
    """Queue the output frames for loading when the algorithm completes (dialog, batch dialog,
    ``processing.runAndLoadResults``); qgis_process and ``processing.run`` ignore the queue.
    ``times``: the frames' datetimes, or None when they have none (then they are placed 1 s
    apart from 2000-01-01 in time, without time labels)."""
    ranges = frame_ranges(times if times is not None else fallback_times(len(paths)))
    label, layer_labels = stack_labels(paths, times)
    span = (ranges[0][0], ranges[-1][1])
    stack = StackGroup(label, layer_labels, span, frame_step(ranges))
    for i, (path, (start, end)) in enumerate(zip(paths, ranges)):
        details = QgsProcessingContext.LayerDetails(layer_labels[i], context.project(), output_name,
                                                    QgsProcessingUtils.LayerHint.Raster)
        details.setPostProcessor(FramePlacer(stack, i, start, end))
        context.addLayerToLoadOnCompletion(str(path), details)
    return stack
