"""Threads and staging that keep the network busy: pinned host buffers for non-blocking copies,
a prefetching reader, and a background writer. Each takes values and callables and holds no
global state; on CPU pinning is a no-op, which is how their logic is tested here."""
from __future__ import annotations

import collections
import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def batches(items, size: int):
    """Consecutive groups of ``size`` items (the last one may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, max(1, int(size)))):
        yield chunk


class HostStager:
    """Copies numpy arrays to the device through a ring of reusable pinned buffers with
    non-blocking copies, so the copy of the next tile overlaps the GPU's work on this one.

    A buffer is rewritten only after the copy that last read it has finished (a CUDA event per
    slot). On CPU the array is wrapped without any copy."""

    def __init__(self, device: torch.device, slots: int = 2):
        self.device = device
        self.cuda = device.type == "cuda"
        self.slots = [dict() for _ in range(max(1, slots))]
        self.events = [None] * len(self.slots)
        self.turn = 0

    def to_device(self, arr: np.ndarray) -> torch.Tensor:
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(arr))
        i = self.turn
        self.turn = (i + 1) % len(self.slots)
        if self.events[i] is not None:
            self.events[i].synchronize()
        key = (arr.shape, arr.dtype.str)
        buf = self.slots[i].get(key)
        if buf is None:
            buf = torch.empty(arr.shape, dtype=torch.from_numpy(np.empty(0, arr.dtype)).dtype, pin_memory=True)
            self.slots[i] = {key: buf}  # one shape per slot: tiles of a run share their shape
        buf.numpy()[...] = arr
        out = buf.to(self.device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.events[i] = ev
        return out


def to_host(t: torch.Tensor) -> np.ndarray:
    """float32 numpy copy of a device tensor (waits for it)."""
    return t.detach().float().cpu().numpy()


_END = object()


def prefetch(fn, items, depth: int = 2, workers: int = 1):
    """Yield ``fn(item)`` for each item in order, computing up to ``depth`` items ahead in
    worker threads: reads and flow crops of the next tiles run while the GPU works.

    An exception in ``fn`` is raised where its result would have been yielded; closing the
    generator early cancels what has not started. With ``workers=1`` every call of ``fn`` runs
    in the same thread, one at a time (GDAL datasets may be used by one thread at a time)."""
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mstt-prefetch")
    pending = collections.deque(pool.submit(fn, x) for x in itertools.islice(it, max(1, depth)))
    try:
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)


class AsyncWriter:
    """Runs jobs (blend a tile, write finished blocks) in one background thread, in submission
    order, while the caller goes on with the next tile. At most ``max_pending`` jobs wait, which
    bounds the memory held by queued tiles. The first error is raised by the next ``submit`` or
    by ``close``; jobs after a failure are skipped."""

    def __init__(self, max_pending: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="mstt-writer", daemon=True)
        self.thread.start()
        self.closed = False

    def _loop(self):
        while True:
            job = self.queue.get()
            try:
                if job is _END:
                    return
                if self.error is None:
                    fn, args, kwargs = job
                    fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller's thread
                self.error = exc
            finally:
                self.queue.task_done()

    def _raise(self):
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def submit(self, fn, *args, **kwargs) -> None:
        if self.closed:
            raise RuntimeError("writer is closed")
        self._raise()
        self.queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until every submitted job ran; raise the first error."""
        self.queue.join()
        self._raise()

    def close(self, discard: bool = False) -> None:
        """Finish the queued jobs (or, with ``discard``, skip them) and stop the thread."""
        if self.closed:
            return
        self.closed = True
        if discard and self.error is None:
            self.error = _Discarded()
        self.queue.put(_END)
        self.thread.join()
        if isinstance(self.error, _Discarded):
            self.error = None
        self._raise()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the caller failed: stop quickly, its error is the one to report
            try:
                self.close(discard=True)
            except BaseException:
                pass
        return False


class _Discarded(Exception):
    pass
