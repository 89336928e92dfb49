"""Whether a timing can be trusted: how much CPU other processes took while it ran, and how
much its repeats spread.

A load average taken before a run misses what starts during it, and on a 2-core machine one
niced job beside the benchmark made a forward 10x slower (OpenMP threads spin at barriers while
a sibling is descheduled, so the process's own CPU time does not drop). What does show it is the
machine's CPU time that was not ours: the busy time of all CPUs (``/proc/stat``; VM steal
counted as busy) minus this process's CPU time, over the CPUs' wall time. A row is marked
unreliable when that share exceeds FOREIGN_CPU_LIMIT, or when its interleaved repeats spread by
more than SPREAD_LIMIT (max - min over the median).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

SPREAD_LIMIT = 0.15
FOREIGN_CPU_LIMIT = 0.10  # of all CPUs: another process's steady use, not the odd daemon wake-up


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """Wall and CPU seconds of one timed call, and the machine's busy CPU seconds meanwhile."""
    wall: float
    own_cpu: float
    busy_cpu: float | None


class Stopwatch:
    """``with Stopwatch() as s: ...`` then ``s.sample``."""

    def __enter__(self):
        self._busy, self._cpu, self._wall = system_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        busy = system_busy_seconds()
        self.sample = Sample(wall, cpu, None if busy is None or self._busy is None else busy - self._busy)
        return False


@dataclass
class Verdict:
    median: float
    spread: float | None  # (max - min) / median; None with fewer than 3 repeats
    foreign_cpu: float | None  # share of all CPUs' time used by other processes
    reasons: list = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.reasons

    def as_row(self) -> dict:
        return {"spread": self.spread, "foreign_cpu": self.foreign_cpu, "unreliable": list(self.reasons)}


def judge(samples: list[Sample], cpus: int | None = None) -> Verdict:
    """The median wall time of ``samples`` and whether it can be trusted (see module doc)."""
    walls = [s.wall for s in samples]
    med = statistics.median(walls)
    spread = (max(walls) - min(walls)) / med if len(walls) >= 3 and med > 0 else None
    foreign = None
    if all(s.busy_cpu is not None for s in samples):
        cpus = cpus or os.cpu_count() or 1
        other = sum(max(0.0, s.busy_cpu - s.own_cpu) for s in samples)
        foreign = other / (cpus * sum(walls)) if sum(walls) > 0 else 0.0
    reasons = []
    if spread is not None and spread > SPREAD_LIMIT:
        reasons.append(f"repeats spread {100 * spread:.0f} % (> {100 * SPREAD_LIMIT:.0f} %)")
    if foreign is not None and foreign > FOREIGN_CPU_LIMIT:
        reasons.append(f"other processes used {100 * foreign:.0f} % of the CPUs")
    return Verdict(med, spread, foreign, reasons)
