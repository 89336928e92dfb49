"""Signals that end a command-line run (SIGTERM from ``kill`` or a batch system, SIGHUP when the
terminal goes, SIGINT from Ctrl-C) raised as ``Interrupted`` in the main thread, so the run
cleans up as after any error: temporary files removed, the claim on its outputs released.

Inside ``critical()`` (the final renames) a signal waits until the block is done, so a commit
is never cut in half; the run, then complete, ends normally, and a batch stops before its next
stack (``raise_pending``). Only the main thread's commits need this: the signal is raised in
the main thread, so a commit on another thread (a batch on a cluster) is never cut by it. After
the first signal, further ones are ignored while cleaning up.
``kill -9`` cannot be caught: the next run for the same outputs removes what it left.
Inside an application (``qgis_process``), a signal it handles itself (QGIS cancels the
algorithm on SIGINT) is left to it; the others (SIGTERM, which would end it at once, leaving the
claim and the work folder) are taken here as on the command line.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from ..errors import Interrupted

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class SignalGuard:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing)."""

    def __init__(self, signals=SIGNALS):
        self.signals = signals
        self.previous = {}
        self.depth = 0
        self.pending = None
        self.fired = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if signal.getsignal(sig) is None:  # a handler of the application (QGIS's for SIGINT): its own
                    continue
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False

    def _handle(self, signum, frame):
        if self.fired or self.depth:  # cleaning up already, or committing: let it finish
            self.pending = signum
            return
        self.fired = True
        raise Interrupted(signum, signal.Signals(signum).name)

    @contextlib.contextmanager
    def critical(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def raise_pending(self) -> None:
        """Raise the signal that arrived during a commit (between the stacks of a batch)."""
        if self.pending is not None and not self.fired:
            self.fired = True
            raise Interrupted(self.pending, signal.Signals(self.pending).name)
