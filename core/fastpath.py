"""Helpers that keep an accelerator busy: cost model and tile choice, tiles per forward,
cuDNN autotuning, optional ``torch.compile`` with an eager fallback, pinned host staging,
and threads that prefetch the next tile's inputs and write the previous tile's outputs.

Each piece takes values (device, sizes, callables) and holds no global state, so the
pipeline can adopt them one at a time. All of them also run on CPU (where pinning,
autotuning and batching are no-ops or 1), which is how their logic is tested here.
"""
from __future__ import annotations

import collections
import itertools
import threading
import warnings

import numpy as np
import torch

from .tiling import axis_spans

MULTIPLE = 80  # the network's LR padding unit (transformer patches of 40 at half resolution)
PATCH_SIZES = (40, 20, 10, 5)
# FLOPs per padded LR pixel of a 4-frame window that grow linearly with area (all convolutions
# and the deformable conv's contraction), counted with FlopCounterMode on the full model
# (nf=64) for a 160x160 window: 1396.4 GFLOP convolutions + 11.3 GFLOP DCN matmul.
LINEAR_FLOP_PER_LR_PX = (1396.428e9 + 11.325e9) / (160 * 160)


# -- cost model and tile choice --------------------------------------------------------------
def padded(n: int, multiple: int = MULTIPLE) -> int:
    return -(-int(n) // multiple) * multiple


def window_flops(th: int, tw: int, nf: int = 64, frames_out: int = 7, batch: int = 1) -> float:
    """Estimated FLOPs of one forward on a ``th`` x ``tw`` LR window.

    Convolutions grow with area, but the transformer's attention is global over the window:
    each head makes 7 * (h/2p) * (w/2p) tokens of dimension (d/4) * p^2 and costs
    4 * tokens^2 * dim, quadratic in area. That term is why big tiles cost more per pixel."""
    hp, wp = padded(th), padded(tw)
    linear = LINEAR_FLOP_PER_LR_PX * (nf / 64) ** 2 * hp * wp
    dh = 4 * nf // len(PATCH_SIZES)  # d_model = 4 nf, one head per patch size
    attn = 0.0
    for p in PATCH_SIZES:
        tokens = frames_out * (hp // 2 // p) * (wp // 2 // p)
        attn += 4.0 * tokens * tokens * dh * p * p
    return batch * (linear + attn)


def grid_flops(height: int, width: int, tile: int, overlap: int, margin: int | None = None, nf: int = 64) -> float:
    """Estimated FLOPs of all tiles of one time window over a scene (equal tiles per axis,
    spread evenly as ``tiling.axis_spans`` does; the overlap is capped at half a tile)."""
    ov = min(int(overlap), tile // 2)
    m = ov // 2 if margin is None else int(margin)
    rows = axis_spans(height, tile, ov, m, MULTIPLE)
    cols = axis_spans(width, tile, ov, m, MULTIPLE)
    return sum(window_flops(r.size, c.size, nf) for r in rows for c in cols)


def choose_tile(height: int, width: int, max_tile: int, overlap: int = 16, margin: int | None = None,
                nf: int = 64, min_tile: int = MULTIPLE) -> int:
    """The tile size (multiple of 80, <= ``max_tile``) that computes a scene with the fewest
    estimated FLOPs. Equal tiles spread over a scene can overshoot it by almost a tile per axis
    (3 tiles of 960 for a 2048 scene compute 2x its area), and attention makes very big tiles
    dearer per pixel, so the largest tile that fits in memory is rarely the cheapest. Within 3 %
    of the best, the larger tile wins (fewer calls, more context)."""
    max_tile = max(min_tile, (int(max_tile) // MULTIPLE) * MULTIPLE)
    costs = {t: grid_flops(height, width, t, overlap, margin, nf) for t in range(min_tile, max_tile + 1, MULTIPLE)}
    best = min(costs.values())
    return max(t for t, c in costs.items() if c <= 1.03 * best)


def tiles_per_forward(device: torch.device, tile: int, dtype: torch.dtype = torch.float32, nf: int = 64,
                      max_batch: int = 8, free_bytes: int | None = None) -> int:
    """How many tiles to stack into one forward: a GPU runs small tiles far below its peak, so
    several go together while their activations fit in half of the free memory. CPU: 1 (cores
    are already busy with one tile; batching only adds memory)."""
    if device.type != "cuda":
        return 1
    from .accel import BYTES_PER_LR_PX_FP32

    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_tile = BYTES_PER_LR_PX_FP32 * (nf / 64) * (0.5 if dtype != torch.float32 else 1.0) * padded(tile) ** 2
    return int(max(1, min(max_batch, (0.5 * free_bytes) // per_tile)))


def batches(items, size: int):
    """Consecutive groups of ``size`` items (the last one may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, max(1, int(size)))):
        yield chunk


# -- backend settings and compilation --------------------------------------------------------
def configure_backends(device: torch.device) -> dict:
    """cuDNN autotuning: all tiles of a run share one shape, so the kernel search is paid once.
    TF32 settings are left as PyTorch sets them (cuDNN convs use TF32 in fp32 by default)."""
    if device.type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = True
    return {"cudnn.benchmark": True, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}


class EagerFallback:
    """Calls a compiled function; on the first failure that is not out-of-memory, warns once
    and uses the eager function from then on (a missing compiler must not stop a run)."""

    def __init__(self, eager, compiled, name: str = "", log=None):
        self.eager, self.compiled, self.name, self.log = eager, compiled, name, log
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                from .accel import is_oom

                if is_oom(exc):
                    raise
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                msg = f"torch.compile of {self.name or 'the model'} failed ({self.failed}); running eager"
                (self.log or (lambda m: warnings.warn(m, RuntimeWarning)))(msg)
        return self.eager(*args, **kwargs)


STAGES = ("extract", "middle_features", "MSST_former", "reconstruct")


def compile_stages(net, stages=STAGES, log=None, **compile_kwargs) -> list:
    """``torch.compile`` the network's stages in place, each with an eager fallback; returns
    the names compiled. A method stage becomes an instance attribute of ``net``; a submodule
    stage (``MSST_former``) gets its ``forward`` replaced on the instance, so module names and
    the state_dict are untouched. ``uncompile_stages`` undoes both. Stages, not ``forward``:
    the pipeline asks only for the outputs a window owns, so each stage's shapes stay fixed
    within a run and compile once."""
    done = []
    for name in stages:
        target = getattr(net, name, None)
        if target is None:
            continue
        if isinstance(target, torch.nn.Module):
            fn = target.forward
            target.forward = EagerFallback(fn, torch.compile(fn, **compile_kwargs), name, log)
        else:
            setattr(net, name, EagerFallback(target, torch.compile(target, **compile_kwargs), name, log))
        done.append(name)
    return done


def uncompile_stages(net, names) -> None:
    """Give ``net`` back its own stages after ``compile_stages``."""
    for name in names:
        target = getattr(net, name, None)
        if isinstance(target, torch.nn.Module):
            target.__dict__.pop("forward", None)
        else:
            net.__dict__.pop(name, None)


# -- host <-> device staging -----------------------------------------------------------------
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


# -- overlap with worker threads --------------------------------------------------------------
_END = object()


def prefetch(fn, items, depth: int = 2, workers: int = 1):
    """Yield ``fn(item)`` for each item in order, computing up to ``depth`` items ahead in
    worker threads: reads and flow crops of the next tiles run while the GPU works.

    An exception in ``fn`` is raised where its result would have been yielded; closing the
    generator early cancels what has not started. With ``workers=1`` every call of ``fn`` runs
    in the same thread, one at a time (GDAL datasets may be used by one thread at a time)."""
    from concurrent.futures import ThreadPoolExecutor

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
        import queue

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
