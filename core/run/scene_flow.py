"""Optical flow of a whole scene, pair by pair: computed once per consecutive frame pair and band
group in a background thread (in blocks for large scenes), kept on disk when large, and cropped
per tile (reflected beyond the scene) so that every tile of a window sees the same motion."""
from __future__ import annotations

import shutil
import threading

import numpy as np

from ..geo.outputs import OutputSet
from ..geo.read import read_frame
from ..geo.stack import StackInfo
from ..net.spec import FLOW_MIDDLE
from .flow import middle_flows, to_gray
from .tiling import axis_spans, axis_weights, reflect_flow
from .windows import SWAPPED_HALVES, stored_pair

FLOW_COST = 0.5  # one pair's optical flow, in units of one network call on one tile (progress)


class FlowStore:
    """Middle flows (4, H, W) per (band group, pair k -> k+1), on disk when large."""

    IN_MEMORY_BYTES = 64 * 2 ** 20

    def __init__(self, n_groups: int, n_pairs: int, height: int, width: int, outs: OutputSet):
        self.shape = (4, height, width)
        nbytes = n_groups * n_pairs * 4 * height * width * 4
        self.arrays = {}
        self.on_disk = nbytes > self.IN_MEMORY_BYTES
        self.outs = outs
        self.folder = None
        if self.on_disk:
            self.folder = outs.temp_path("flows")
            self.folder.mkdir(exist_ok=True)  # a resumed run's may be there: each pair is written before it is read

    def writable(self, g: int, k: int) -> np.ndarray:
        """A zeroed (4, H, W) array to fill with the flows of pair k; then ``seal`` it."""
        if self.on_disk:
            return np.lib.format.open_memmap(self.folder / f"g{g}_p{k}.npy", mode="w+", dtype=np.float32,
                                             shape=self.shape)
        return np.zeros(self.shape, np.float32)

    def seal(self, g: int, k: int, arr: np.ndarray) -> None:
        if self.on_disk:
            arr.flush()
            del arr
            self.arrays[(g, k)] = np.load(self.folder / f"g{g}_p{k}.npy", mmap_mode="r")
        else:
            self.arrays[(g, k)] = arr

    def pair(self, g: int, a: int, b: int):
        """(array, swapped): flows of pair a->b; the pair b->a is the same with its two
        halves swapped (mid->a and mid->b exchange roles)."""
        k, swapped = stored_pair(a, b)
        return self.arrays[(g, k)], swapped

    def close(self) -> None:
        self.arrays.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class FlowWorker:
    """Computes the flows of every consecutive pair (all band groups) in a background thread,
    in time order, while the network works on the windows whose pairs are ready: on a GPU the
    CPU's optical flow for later windows then costs no wall time. Progress, cancel and errors
    stay with the caller's thread (``wait``); ``close`` stops the thread between blocks.

    Each frame is read straight into the grey image the flow works on (the luma
    ``flows_tensor`` takes), so only two grey frames per band group are held."""

    def __init__(self, info: StackInfo, groups, scaler, store: FlowStore, clock, kind: str = FLOW_MIDDLE,
                 needed=None):
        self.info, self.groups, self.scaler, self.store, self.clock = info, groups, scaler, store, clock
        self.kind = kind  # the flows the network takes (MSTT.flow_kind)
        self.needed = needed  # the pairs to compute (None: all); a resumed run skips finished windows' pairs
        self.n_pairs = info.n_frames - 1
        self.ready = [threading.Event() for _ in range(self.n_pairs)]
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.reported = 0
        self.thread = threading.Thread(target=self._run, name="mstt-flow", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        color = list(self.info.color_bands)
        last = {}  # band group -> (frame index, grey frame)

        def grey(k, g):
            if g in last and last[g][0] == k:
                return last[g][1]
            with self.clock("read"):
                img = read_frame(self.info.paths[k], [color[i] for i in self.groups[g]], self.scaler, to_gray)
            last[g] = (k, img)
            return img

        try:
            for k in range(self.n_pairs):
                if self.needed is not None and k not in self.needed:
                    self.ready[k].set()
                    continue
                for g in range(len(self.groups)):
                    prev = grey(k, g)
                    cur = grey(k + 1, g)
                    arr = self.store.writable(g, k)
                    with self.clock("flow"):
                        scene_flows(prev, cur, arr, self.stop, kind=self.kind)
                    if self.stop.is_set():
                        return
                    self.store.seal(g, k, arr)
                self.ready[k].set()
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        finally:
            for ev in self.ready:  # nobody waits forever, whatever happened
                ev.set()

    def wait(self, upto: int, tracker) -> None:
        """Block until pairs 0..upto are done; report each once as progress; check cancel."""
        for k in range(self.reported, upto + 1):
            label = f" ({len(self.groups)} band groups)" if len(self.groups) > 1 else ""
            tracker.step(f"optical flow {k + 1}/{self.n_pairs}{label}", FLOW_COST * len(self.groups))
            while not self.ready[k].wait(0.1):
                tracker.check()
            if self.error is not None:
                raise self.error
            self.reported = k + 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


FLOW_BLOCK, FLOW_OVERLAP = 1024, 64


def scene_flows(prev: np.ndarray, cur: np.ndarray, out: np.ndarray, stop=None, block: int = FLOW_BLOCK,
                overlap: int = FLOW_OVERLAP, kind: str = FLOW_MIDDLE) -> None:
    """Middle flows (4, H, W) of two grey frames into ``out`` (zeroed).

    Frames up to ``block`` pixels a side are processed whole. Larger scenes go in blocks of
    ``block`` overlapping by ``overlap``, blended with the tiles' raised-cosine weights: the
    flow's memory (about 200 bytes per pixel in DIS) would otherwise grow with the scene (3.5 GB
    for 4096 x 4096), while satellite-video motion (a few pixels) is well inside a block. The
    result is still one field for the whole scene, computed once, so tiles agree on motion.
    ``stop`` (a threading.Event) ends the work between blocks."""
    h, w = prev.shape[:2]
    if h <= block and w <= block:
        out[...] = middle_flows(np.stack([prev, cur]), kind)[0]
        return
    rows, cols = axis_spans(h, block, overlap), axis_spans(w, block, overlap)
    wy, wx = axis_weights(rows, h, scale=1), axis_weights(cols, w, scale=1)
    for r, ys in enumerate(rows):
        for c, xs in enumerate(cols):
            if stop is not None and stop.is_set():
                return
            sy, sx = slice(ys.start, ys.stop), slice(xs.start, xs.stop)
            f = middle_flows(np.stack([prev[sy, sx], cur[sy, sx]]), kind)[0]
            out[:, sy, sx] += f * (wy[r][:, None] * wx[c][None, :])


def tile_flows(store: FlowStore, g: int, pairs, tile, height: int, width: int) -> np.ndarray:
    out = []
    for a, b in pairs:
        arr, swapped = store.pair(g, a, b)
        f = reflect_flow(arr, tile, height, width)
        out.append(f[SWAPPED_HALVES] if swapped else f)
    return np.stack(out)


