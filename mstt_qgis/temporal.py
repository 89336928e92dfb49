"""Time for the loaded frames: each frame's fixed range, the project's time settings and, in the
desktop, the Temporal Controller, so that it steps one output frame at a time.

The Temporal Controller prints times to the second unless its step is in milliseconds, so a
frame spacing under a second (10 fps video gives 0.05 s between output frames) is given to it
in milliseconds: then it shows "18:05:30.050 to 18:05:30.100" instead of the same second twice.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from qgis.core import (
    Qgis, QgsDateTimeRange, QgsInterval, QgsMessageLog, QgsRasterLayerTemporalProperties,
    QgsTemporalNavigationObject, QgsUnitTypes,
)
from qgis.PyQt.QtCore import QDateTime, Qt

FALLBACK_START = datetime(2000, 1, 1, tzinfo=timezone.utc)
FALLBACK_STEP = timedelta(seconds=1)


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def frame_ranges(times) -> list:
    """[start, end) per output frame: each lasts until the next one starts; the last lasts as
    long as the one before it. ``times``: datetimes (naive = UTC), at least 2."""
    starts = [utc(t) for t in times]
    ends = starts[1:] + [starts[-1] + (starts[-1] - starts[-2])]
    return list(zip(starts, ends))


def fallback_times(n: int) -> list:
    """Frames without acquisition times still animate: 1 s apart from 2000-01-01 UTC."""
    return [FALLBACK_START + i * FALLBACK_STEP for i in range(n)]


def frame_step(ranges) -> timedelta:
    """The Temporal Controller's step: the shortest frame, so that no frame is stepped over
    when acquisition times are irregular."""
    return min(end - start for start, end in ranges)


def step_in_units(step: timedelta) -> tuple:
    """(value, QGIS unit): whole seconds in seconds, anything else in milliseconds."""
    seconds = step.total_seconds()
    if seconds >= 1 and step.microseconds == 0:
        return float(seconds), QgsUnitTypes.TemporalSeconds
    return seconds * 1000.0, QgsUnitTypes.TemporalMilliseconds


def qdatetime(t: datetime) -> QDateTime:
    return QDateTime.fromMSecsSinceEpoch(int(round(utc(t).timestamp() * 1000)), Qt.UTC)


def qrange(start: datetime, end: datetime) -> QgsDateTimeRange:
    return QgsDateTimeRange(qdatetime(start), qdatetime(end), True, False)


def set_fixed_range(layer, start: datetime, end: datetime) -> None:
    props = layer.temporalProperties()
    props.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
    props.setFixedTemporalRange(qrange(start, end))
    props.setIsActive(True)


def _valid(rng) -> bool:
    return rng is not None and rng.begin().isValid() and rng.end().isValid()


def _union(old, start: QDateTime, end: QDateTime) -> QgsDateTimeRange:
    if _valid(old):
        start, end = min(start, old.begin()), max(end, old.end())
    return QgsDateTimeRange(start, end)


def show_stack_in_time(project, span: tuple, step: timedelta) -> None:
    """The project's time range widened to the stack, its frame step set to the stack's (a new
    stack is what the user wants to play), and the same in the desktop's Temporal Controller."""
    settings = project.timeSettings()
    settings.setTemporalRange(_union(settings.temporalRange(), qdatetime(span[0]), qdatetime(span[1])))
    value, unit = step_in_units(step)
    settings.setTimeStepUnit(unit)
    settings.setTimeStep(value)
    try:
        update_temporal_controller(span, value, unit)
    except Exception as exc:  # a nicety of the desktop: never let it fail the loading
        QgsMessageLog.logMessage(f"could not set the Temporal Controller: {exc}", "Processing", Qgis.Warning)


def update_temporal_controller(span: tuple, value: float, unit) -> None:
    """In the desktop, QGIS sets the Temporal Controller's range when the first temporal layer
    arrives; our frames get their ranges just after they arrive, so set it here: the new
    stack's span (a union with an older stack's could hold millions of steps of this one's
    size) and its frame step; the controller's panel follows both. Its mode (off, fixed range,
    animated) stays the user's."""
    try:
        from qgis.utils import iface
    except ImportError:
        return
    canvas = iface.mapCanvas() if iface is not None else None
    nav = canvas.temporalController() if canvas is not None else None
    if not isinstance(nav, QgsTemporalNavigationObject):
        return
    nav.setTemporalExtents(QgsDateTimeRange(qdatetime(span[0]), qdatetime(span[1])))
    nav.setFrameDuration(QgsInterval(value, unit))
