"""Time: which model window makes which output frame, and when each output frame was taken.

N input frames give 2N-1 outputs: output ``2k`` is input ``k`` super-resolved, output ``2k+1``
is new, halfway between inputs ``k`` and ``k+1``. The network sees 4 consecutive frames and
makes 7 (positions 0..6; inputs at even positions). A window starting at input ``j`` covers
outputs ``2j .. 2j+6`` and its centre is output ``2j+3``; frames before the first or after the
last input are mirrored (``-1 -> 1``, ``N -> N-2``), which keeps motion continuous (time runs
backwards) and lets N = 2 or 3 fill a window.

Each output is taken from the window where it is most central, because there the network
has context on both sides; among equally central windows, the one with fewer mirrored frames
(more real information) wins, then one already chosen for the previous output (fewer network
calls). For N >= 4 this costs N-1 windows per tile.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .errors import InputError

N_IN, N_OUT = 4, 7


def mirror_index(i: int, n: int) -> int:
    """Index into ``n`` frames, reflected at both ends without repeating the end frame."""
    if n < 1:
        raise ValueError("need at least one frame")
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return period - i if i > n - 1 else i


@dataclass(frozen=True)
class Window:
    """One network call: ``frames`` are the 4 input indices (after mirroring) it is fed;
    ``outputs`` the (output index, position 0..6 among the network's outputs) taken from it."""

    start: int
    frames: tuple
    outputs: tuple

    @property
    def pairs(self) -> tuple:
        """The 3 consecutive (earlier, later) input index pairs whose middle flows it needs."""
        return tuple((self.frames[i], self.frames[i + 1]) for i in range(N_IN - 1))


def mirrored_count(start: int, n: int) -> int:
    return sum(1 for i in range(start, start + N_IN) if not 0 <= i < n)


def plan_windows(n: int) -> list[Window]:
    """Windows (in time order) covering outputs 0..2n-2, each output in exactly one window."""
    if n < 2:
        raise InputError(f"at least 2 frames are needed, got {n}")
    chosen: dict[int, list] = {}
    last = None
    for p in range(2 * n - 1):
        # windows covering output p: 2j <= p <= 2j + 6
        cands = range(-((6 - p) // 2), p // 2 + 1)
        score = {j: (abs(p - (2 * j + 3)), mirrored_count(j, n)) for j in cands}
        best = min(score.values())
        optimal = [j for j in cands if score[j] == best]
        j = last if last in optimal else max(optimal)
        chosen.setdefault(j, []).append((p, p - 2 * j))
        last = j
    return [
        Window(j, tuple(mirror_index(i, n) for i in range(j, j + N_IN)), tuple(outs))
        for j, outs in sorted(chosen.items())
    ]


def output_sources(n: int) -> list[tuple]:
    """For each output: the input indices it depicts, ``(k,)`` or ``(k, k+1)`` for a new frame."""
    return [(p // 2,) if p % 2 == 0 else (p // 2, p // 2 + 1) for p in range(2 * n - 1)]


# -- times -----------------------------------------------------------------------------------
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
