"""Acquisition times: reading them (ISO 8601 or TIFF form), checking their order, and the
2N-1 output frames' times and sources (output ``2k`` is input ``k``; output ``2k+1`` is new,
halfway in time between inputs ``k`` and ``k+1``).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..errors import InputError


def output_sources(n: int) -> list[tuple]:
    """For each output: the input indices it depicts, ``(k,)`` or ``(k, k+1)`` for a new frame."""
    return [(p // 2,) if p % 2 == 0 else (p // 2, p // 2 + 1) for p in range(2 * n - 1)]


_TIFF_RE = re.compile(r"^\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)\s*$")


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2021-05-03T10:00:00.5Z``, with or without zone, date only) or the TIFF
    ``YYYY:MM:DD HH:MM:SS``. Raises ValueError with the text if it is neither."""
    s = str(text).strip()
    m = _TIFF_RE.match(s)
    if m:
        y, mo, d, hh, mm, ss = m.groups()
        sec = float(ss)
        return datetime(int(y), int(mo), int(d), int(hh), int(mm), int(sec)) + timedelta(
            microseconds=round((sec - int(sec)) * 1e6))
    iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    # Python 3.10 fromisoformat wants exactly 3 or 6 fraction digits
    iso = re.sub(r"(\.\d+)", lambda mm: (mm.group(1) + "000000")[:7], iso, count=1)
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time (expected ISO 8601 such as "
                         f"2021-05-03T10:15:30Z, or YYYY:MM:DD HH:MM:SS)") from None


def parse_times_arg(value, n: int) -> list[datetime]:
    """``--times`` as a comma-separated string or a list: exactly n strictly increasing times."""
    items = [t.strip() for t in value.split(",")] if isinstance(value, str) else [str(t).strip() for t in value]
    items = [t for t in items if t]
    if len(items) != n:
        raise InputError(f"--times gives {len(items)} times for {n} input frames")
    out = []
    for i, t in enumerate(items):
        try:
            out.append(parse_time(t))
        except ValueError as exc:
            raise InputError(f"--times item {i + 1}: {exc}") from None
    check_increasing(out, [f"--times item {i + 1}" for i in range(n)])
    return out


def _comparable(times):
    """Aware and naive times cannot be compared; naive ones are read as UTC for ordering."""
    return [t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in times]


def check_increasing(times, names) -> None:
    c = _comparable(times)
    for i in range(1, len(c)):
        if c[i] <= c[i - 1]:
            raise InputError(f"{names[i]}: time {times[i].isoformat()} is not after {names[i - 1]} "
                             f"({times[i - 1].isoformat()}); frames must be given in time order")


def time_order(times, names, key: str) -> list[int]:
    """Indices of ``times`` from earliest to latest; InputError for two equal times."""
    c = _comparable(times)
    order = sorted(range(len(times)), key=lambda i: c[i])
    for a, b in zip(order, order[1:]):
        if c[a] == c[b]:
            raise InputError(f"{names[a]} and {names[b]} have the same acquisition time ({key}="
                             f"{times[a].isoformat()}); each frame needs its own time (the same frame twice?)")
    return order


def is_increasing(times) -> bool:
    c = _comparable(times)
    return all(c[i] > c[i - 1] for i in range(1, len(c)))


def midpoint(a: datetime, b: datetime) -> datetime:
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = _comparable([a, b])
    return a + (b - a) / 2


def output_times(times) -> list:
    """2N-1 times: the inputs' own, and the midpoint between each pair. None if unknown."""
    if times is None or any(t is None for t in times):
        return [None] * (2 * len(times) - 1) if times is not None else None
    out = []
    for k, t in enumerate(times):
        out.append(t)
        if k + 1 < len(times):
            out.append(midpoint(t, times[k + 1]))
    return out


def tiff_datetime(t: datetime) -> str:
    """TIFFTAG_DATETIME form (no zone, whole seconds): UTC when the time has a zone."""
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y:%m:%d %H:%M:%S")


def iso_time(t: datetime) -> str:
    """Full ISO 8601 with microseconds when present (midpoints are rarely whole seconds)."""
    return t.isoformat()
