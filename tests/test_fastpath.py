"""GPU fast-path helpers, exercised on CPU: tile choice, tiles per forward, compile fallback,
host staging, prefetch and asynchronous writes."""
import threading
import time

import numpy as np
import pytest
import torch

from mstt_stvsr.core.run import compile as compiling
from mstt_stvsr.core.run import cost
from mstt_stvsr.core.run import threads as worker_threads
from mstt_stvsr.core.run.tiling import axis_spans


def test_choose_tile_minimises_computed_flops():
    sizes = range(80, 961, 80)
    for h, w in ((2048, 2048), (5000, 12000), (300, 300)):
        costs = {t: cost.grid_flops(h, w, t, 16) for t in sizes}
        t = cost.choose_tile(h, w, 960, 16)
        assert t % 80 == 0 and 80 <= t <= 960
        assert costs[t] <= 1.03 * min(costs.values())
        assert all(costs[u] > 1.03 * min(costs.values()) for u in sizes if u > t)  # largest within 3 %
    # the memory limit is respected, and the biggest tile is not blindly taken: three 960-px
    # tiles for 2048 px waste a lot, and attention over a huge tile costs more per pixel
    assert cost.choose_tile(2048, 2048, 160, 16) <= 160
    best = cost.choose_tile(2048, 2048, 960, 16)
    assert cost.grid_flops(2048, 2048, 960, 16) > 1.5 * cost.grid_flops(2048, 2048, best, 16)


def test_window_flops_grow_faster_than_area():
    per_px = [cost.window_flops(t, t) / t ** 2 for t in (80, 160, 320, 640)]
    assert per_px == sorted(per_px) and per_px[-1] > 1.3 * per_px[0]
    assert cost.window_flops(160, 160, batch=3) == pytest.approx(3 * cost.window_flops(160, 160))
    assert cost.window_flops(100, 100) == cost.window_flops(160, 160)  # padded to 80-multiples


def test_grid_flops_follow_the_pipeline_grid():
    rows = axis_spans(1000, 320, 16, 8, 80)
    cols = axis_spans(700, 320, 16, 8, 80)
    assert cost.grid_flops(1000, 700, 320, 16) == pytest.approx(len(rows) * len(cols) * cost.window_flops(320, 320))


def test_tiles_per_forward():
    assert cost.tiles_per_forward(torch.device("cpu"), 160) == 1
    cuda = torch.device("cuda")  # only the memory arithmetic: no GPU is touched with free_bytes given
    counts = [cost.tiles_per_forward(cuda, 160, torch.bfloat16, free_bytes=g * 2 ** 30) for g in (0, 2, 8, 80)]
    assert counts[0] == 1 and counts == sorted(counts) and counts[-1] == 8
    assert cost.tiles_per_forward(cuda, 160, torch.float32, free_bytes=8 * 2 ** 30) <= counts[2]
    assert cost.tiles_per_forward(cuda, 640, torch.bfloat16, free_bytes=8 * 2 ** 30) <= counts[2]
    assert [len(b) for b in worker_threads.batches(range(7), 3)] == [3, 3, 1]
    assert list(worker_threads.batches([], 3)) == []


def test_configure_backends_cpu_is_noop():
    assert compiling.configure_backends(torch.device("cpu")) == {}


class Stages(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 1)

    def extract(self, x):
        return self.conv(x) * 2

    def reconstruct(self, x):
        return x + 1


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_compile_falls_back_to_eager():
    net = Stages().eval()
    x = torch.rand(1, 2, 4, 4)
    want = net.reconstruct(net.extract(x))
    messages = []
    names = compiling.compile_stages(net, stages=("extract", "reconstruct", "missing"), log=messages.append,
                              backend=_broken_backend)
    assert names == ["extract", "reconstruct"]
    with torch.inference_mode():
        got = net.reconstruct(net.extract(x))
        again = net.extract(x)
    assert torch.allclose(got, want)
    assert torch.allclose(again, want - 1)
    assert len(messages) == 2 and "running eager" in messages[0]  # once per stage, not per call
    assert "conv.weight" in net.state_dict()  # parameters untouched


def test_eager_fallback_reraises_out_of_memory():
    def compiled(x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    f = compiling.EagerFallback(lambda x: x, compiled, log=lambda m: None)
    with pytest.raises(RuntimeError, match="out of memory"):
        f(1)
    assert f.failed is None


def test_host_stager_cpu_copies_faithfully():
    st = worker_threads.HostStager(torch.device("cpu"))
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = st.to_device(a)
    b = st.to_device(a + 100)
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), a) and np.array_equal(b.numpy(), a + 100)


def test_prefetch_runs_ahead_in_order():
    started = []
    second_started = threading.Event()

    def load(i):
        started.append(i)
        if i == 1:
            second_started.set()
        return i * i

    out = []
    for v in worker_threads.prefetch(load, range(6), depth=2):
        if not out:  # while the caller still holds item 0, item 1 is prepared without being asked for
            assert second_started.wait(5)
        out.append(v)
    assert out == [i * i for i in range(6)]
    assert started == list(range(6))  # one worker: calls in order, one at a time


def test_prefetch_error_and_early_close():
    calls = []

    def load(i):
        calls.append(i)
        if i == 3:
            raise ValueError("bad tile 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad tile 3"):
        for v in worker_threads.prefetch(load, range(10), depth=2):
            got.append(v)
    assert got == [0, 1, 2] and max(calls) <= 5

    calls.clear()
    gen = worker_threads.prefetch(lambda i: calls.append(i) or i, range(100), depth=3)
    assert next(gen) == 0
    gen.close()
    assert len(calls) <= 5


def test_async_writer_order_thread_and_errors():
    seen, threads = [], set()

    def job(i):
        time.sleep(0.001)
        seen.append(i)
        threads.add(threading.current_thread().name)

    with worker_threads.AsyncWriter(max_pending=2) as w:
        for i in range(20):
            w.submit(job, i)
    assert seen == list(range(20)) and threads == {"mstt-writer"}

    w = worker_threads.AsyncWriter()
    w.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        w.flush()
    w.submit(seen.append, "after")  # the error was reported; the writer goes on
    w.close()
    assert seen[-1] == "after"

    ran = []
    gate = threading.Event()
    with pytest.raises(KeyError):
        with worker_threads.AsyncWriter(max_pending=4) as w:
            w.submit(gate.wait, 5)
            for i in range(3):
                w.submit(ran.append, i)
            threading.Timer(0.1, gate.set).start()
            raise KeyError("caller failed")
    assert ran == []  # jobs still queued when the caller failed are skipped
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(ran.append, 9)
