"""Loading the output frames into the project: one group per run, in time order, each frame with
a fixed temporal range so that the Temporal Controller animates the stack.

Only file paths are queued when the algorithm finishes: ``qgis_process`` and ``processing.run``
ignore the queue, so nothing is opened (no statistics, no .aux.xml) unless QGIS really loads the
frames. When it does (dialog, batch dialog, ``runAndLoadResults``), a post-processor per frame
sets its temporal range and moves it into the run's group; after the last frame, the project's
time range and, in the desktop, the Temporal Controller's range and frame step cover the stack.
"""
from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

from qgis.core import (
    Qgis, QgsDateTimeRange, QgsInterval, QgsLayerTreeGroup, QgsMessageLog, QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface, QgsProcessingUtils, QgsRasterLayerTemporalProperties,
    QgsTemporalNavigationObject, QgsUnitTypes,
)
from qgis.PyQt.QtCore import QDateTime, Qt

FALLBACK_START = datetime(2000, 1, 1, tzinfo=timezone.utc)
FALLBACK_STEP = timedelta(seconds=1)
INDEX_PROPERTY = "mstt_stvsr/frame_index"

# Processing does not own post-processors: keep each alive until it has run. Runs whose frames
# are never loaded (processing.run in a script) would pile them up: keep the newest 20000.
_PENDING: deque = deque(maxlen=20000)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def frame_ranges(times) -> list:
    """[start, end) per output frame: each lasts until the next one starts; the last lasts as
    long as the one before it. ``times``: datetimes (naive = UTC), at least 2."""
    starts = [_utc(t) for t in times]
    ends = starts[1:] + [starts[-1] + (starts[-1] - starts[-2])]
    return list(zip(starts, ends))


def fallback_times(n: int) -> list:
    """Frames without acquisition times still animate: 1 s apart from 2000-01-01 UTC."""
    return [FALLBACK_START + i * FALLBACK_STEP for i in range(n)]


def qdatetime(t: datetime) -> QDateTime:
    return QDateTime.fromMSecsSinceEpoch(int(round(_utc(t).timestamp() * 1000)), Qt.UTC)


def qrange(start: datetime, end: datetime) -> QgsDateTimeRange:
    return QgsDateTimeRange(qdatetime(start), qdatetime(end), True, False)


def group_name_for(paths) -> str:
    """The stack's name: the outputs' shared prefix (``frame_x4`` for ``frame_x4_t000.tif``)."""
    stem = Path(paths[0]).stem
    head, sep, tail = stem.rpartition("_t")
    return head if sep and tail.isdigit() else stem


def set_fixed_range(layer, start: datetime, end: datetime) -> None:
    props = layer.temporalProperties()
    props.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
    props.setFixedTemporalRange(qrange(start, end))
    props.setIsActive(True)


class StackGroup:
    """Shared by the post-processors of one run: creates the group once, beside the first frame
    (at the top of the tree, or inside Processing's results group if the user set one)."""

    def __init__(self, name: str, n_frames: int, span: tuple, step: timedelta):
        self.name = name
        self.n_frames = n_frames
        self.span = span
        self.step = step
        self.group = None
        self.placed = 0

    def group_in(self, parent) -> QgsLayerTreeGroup:
        if self.group is None:
            self.group = parent.insertGroup(0, self.name)
            self.group.setExpanded(False)
        return self.group

    def finished(self, project) -> None:
        """All frames placed: the project's time range (and the desktop's Temporal Controller)
        must cover them, stepping one output frame at a time unless already set up."""
        settings = project.timeSettings()
        rng = _union(settings.temporalRange(), qdatetime(self.span[0]), qdatetime(self.span[1]))
        had_range = _valid(settings.temporalRange())
        settings.setTemporalRange(rng)
        if not had_range:  # only a project without time settings gets our frame step
            settings.setTimeStepUnit(QgsUnitTypes.TemporalMilliseconds)
            settings.setTimeStep(self.step.total_seconds() * 1000.0)
        try:
            update_temporal_controller(self.span, self.step)
        except Exception as exc:  # a nicety of the desktop: never let it fail the loading
            QgsMessageLog.logMessage(f"could not set the Temporal Controller: {exc}", "Processing", Qgis.Warning)


def _valid(rng) -> bool:
    return rng is not None and rng.begin().isValid() and rng.end().isValid()


def _union(old, start: QDateTime, end: QDateTime) -> QgsDateTimeRange:
    if _valid(old):
        start, end = min(start, old.begin()), max(end, old.end())
    return QgsDateTimeRange(start, end)


def update_temporal_controller(span: tuple, step: timedelta) -> None:
    """In the desktop, QGIS sets the Temporal Controller's range when the first temporal layer
    arrives; our frames get their ranges just after they arrive, so set it here: the range
    widened to the stack and, if the controller is off, a frame step of one output frame (its
    mode is left to the user)."""
    try:
        from qgis.utils import iface
    except ImportError:
        return
    canvas = iface.mapCanvas() if iface is not None else None
    nav = canvas.temporalController() if canvas is not None else None
    if not isinstance(nav, QgsTemporalNavigationObject):
        return
    was_off = nav.navigationMode() == QgsTemporalNavigationObject.NavigationOff
    extents = nav.temporalExtents()
    nav.setTemporalExtents(_union(None if was_off else extents, qdatetime(span[0]), qdatetime(span[1])))
    if was_off:  # the user switches it on (the play button) to animate the frames
        nav.setFrameDuration(QgsInterval(step.total_seconds()))


class FramePlacer(QgsProcessingLayerPostProcessorInterface):
    """Gives one loaded frame its time range and moves it into its run's group, keeping the
    group in time order."""

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
            root = project.layerTreeRoot()
            node = root.findLayer(layer.id())
            if node is None:
                return
            parent = node.parent()
            group = self.stack.group_in(parent)
            position = sum(1 for child in group.children()
                           if int(child.customProperty(INDEX_PROPERTY, -1)) < self.index)
            clone = node.clone()
            clone.setCustomProperty(INDEX_PROPERTY, self.index)
            group.insertChildNode(position, clone)
            parent.removeChildNode(node)  # after inserting the clone: the layer stays in the project
            self.stack.placed += 1
            if self.stack.placed == self.stack.n_frames:
                self.stack.finished(project)
        finally:
            try:
                _PENDING.remove(self)
            except ValueError:
                pass


def add_frames_to_load(context: QgsProcessingContext, paths, times, output_name: str) -> StackGroup:
    """Queue the output frames for loading when the algorithm completes (dialog, batch dialog,
    ``processing.runAndLoadResults``); qgis_process and ``processing.run`` ignore the queue."""
    ranges = frame_ranges(times)
    stack = StackGroup(group_name_for(paths), len(paths), (ranges[0][0], ranges[-1][1]),
                       ranges[0][1] - ranges[0][0])
    for i, (path, (start, end)) in enumerate(zip(paths, ranges)):
        details = QgsProcessingContext.LayerDetails(Path(path).stem, context.project(), output_name,
                                                    QgsProcessingUtils.LayerHint.Raster)
        details.setPostProcessor(FramePlacer(stack, i, start, end))
        context.addLayerToLoadOnCompletion(str(path), details)
    return stack
