"""Time windows: which network call makes which output frame.

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

from dataclasses import dataclass

from ..errors import InputError
from ..net.spec import N_IN, N_OUT
from .options import WINDOW_MODES



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


# A pair's flows are [applied to the earlier frame, applied to the later frame], 2 channels
# each; for the same two frames in reverse order the halves exchange roles.
SWAPPED_HALVES = [2, 3, 0, 1]


def stored_pair(a: int, b: int) -> tuple:
    """(k, swapped): frames ``a`` then ``b`` of a window are the consecutive pair k (k -> k+1),
    in reverse time order when ``swapped`` (a mirrored window)."""
    if b == a + 1:
        return a, False
    if a == b + 1:
        return b, True
    raise ValueError(f"frames {a} and {b} are not neighbours")


def mirrored_count(start: int, n: int) -> int:
    return sum(1 for i in range(start, start + N_IN) if not 0 <= i < n)


def plan_windows(n: int, mode: str = "central") -> list[Window]:
    """Windows (in time order) covering outputs 0..2n-2, each output in exactly one window.

    ``central``: each output from the window where it is most central (N-1 windows for N >= 4).
    ``fast``: windows start every 3 inputs, so neighbouring windows share one input frame and
    N frames cost about (N-1)/3 windows; the last window is shifted back to end at the last
    frame instead of being mirrored (N >= 4). Each output still goes to the most central of
    the windows run, ties to the one with fewer mirrored frames."""
    if n < 2:
        raise InputError(f"at least 2 frames are needed, got {n}")
    if mode not in WINDOW_MODES:
        raise InputError(f"unknown window plan {mode!r}; choose one of {', '.join(WINDOW_MODES)}")
    starts = None if mode == "central" else fast_starts(n)
    chosen: dict[int, list] = {}
    last = None
    for p in range(2 * n - 1):
        # windows covering output p: 2j <= p <= 2j + (N_OUT - 1)
        cands = [j for j in range(-((N_OUT - 1 - p) // 2), p // 2 + 1) if starts is None or j in starts]
        score = {j: (abs(p - (2 * j + N_IN - 1)), mirrored_count(j, n)) for j in cands}
        best = min(score.values())
        optimal = [j for j in cands if score[j] == best]
        j = last if last in optimal else max(optimal)
        chosen.setdefault(j, []).append((p, p - 2 * j))
        last = j
    return [
        Window(j, tuple(mirror_index(i, n) for i in range(j, j + N_IN)), tuple(outs))
        for j, outs in sorted(chosen.items())
    ]


def fast_starts(n: int) -> list[int]:
    """First input of each ``fast`` window: 0, 3, 6, ... and one ending at the last frame.
    Fewer than 4 frames: one window, mirrored at the end."""
    if n <= N_IN:
        return [0]
    starts = list(range(0, n - N_IN + 1, N_IN - 1))
    if starts[-1] != n - N_IN:
        starts.append(n - N_IN)
    return starts
