"""Progress, cancel and per-stage timing of a run, shared by its threads."""
from __future__ import annotations

import contextlib
import threading
import time

import torch

from ..errors import Canceled


# Stages a run's Clock times: the network thread's work and waits, and its helper threads' work.
STAGES = ("read", "flow", "model", "blend", "write", "wait_flow", "wait_read", "wait_write")


class Clock:
    """Seconds per stage into ``timings``; a no-op when ``timings`` is None.

    Exclusive within a thread (a write inside a blend pauses the blend), summed over threads:
    the flow thread ("read", "flow"), the reader ("read", "flow" crops) and the writer
    ("blend", "write") run beside the network ("model"), so stages may add up to more than
    the wall time. What the network thread spent waiting for them is "wait_flow",
    "wait_read" and "wait_write". On CUDA the device is
    synchronised around "model" so that its time is not billed to whatever waits next."""

    def __init__(self, timings, dev):
        self.timings, self.dev = timings, dev
        self.local, self.lock = threading.local(), threading.Lock()

    def __call__(self, stage: str):
        if self.timings is None:
            return contextlib.nullcontext()
        return self._timed(stage)

    def wrap(self, fn, stage: str):
        if self.timings is None:
            return fn

        def wrapped(*a, **k):
            with self._timed(stage):
                return fn(*a, **k)
        return wrapped

    def _add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def _timed(self, stage):
        sync = stage == "model" and self.dev.type == "cuda"

        @contextlib.contextmanager
        def cm():
            stack = self.local.__dict__.setdefault("stack", [])
            if sync:
                torch.cuda.synchronize(self.dev)
            now = time.perf_counter()
            if stack:
                self._add(stack[-1][0], now - stack[-1][1])
            stack.append([stage, now])
            try:
                yield
            finally:
                if sync:
                    torch.cuda.synchronize(self.dev)
                end = time.perf_counter()
                st, t0 = stack.pop()
                self._add(st, end - t0)
                if stack:
                    stack[-1][1] = end
        return cm()


class Progress:
    def __init__(self, progress, is_canceled):
        self.progress, self.is_canceled = progress, is_canceled
        self.total, self.done_units = 1.0, 0.0

    def check(self):
        if self.is_canceled is not None and self.is_canceled():
            raise Canceled("canceled by the user; no output was written")

    def step(self, message: str, units: float = 1.0) -> None:
        self.check()
        if self.progress is not None:
            self.progress(min(0.999, self.done_units / max(self.total, 1e-9)), message)
        self.done_units += units

    def restart(self, done_units: float, total: float) -> None:
        self.total, self.done_units = total, done_units

    def message(self, message: str) -> None:
        self.check()
        if self.progress is not None:
            self.progress(min(0.999, self.done_units / max(self.total, 1e-9)), message)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(1.0, "done")


