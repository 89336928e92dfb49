"""What a training step eats: random LR crops of a clip dataset with their HR crops (the same
window at 4x) and optical flow, augmented alike.

Augmentation is one of the 8 flips/rotations and an optional time reversal, applied to all 7
frames and to the flow; the flow's vectors are transformed too (a flip negates a component, a
transpose swaps them), so frames and flow keep agreeing. The flow of each clip is computed once
on its whole LR clip (``core.run.flow.middle_flows``, as at inference) and cached on disk;
crops cut the cached flow with the frames' window.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..net.spec import SCALE
from .datasets import open_dataset, refuse_validation_only


# -- augmentation (frames and flows alike) ------------------------------------------------
def dihedral_frames(x: np.ndarray, transpose: bool, hflip: bool, vflip: bool) -> np.ndarray:
    """(T, H, W, C) frames: optional transpose (swap x and y), then flips."""
    if transpose:
        x = x.transpose(0, 2, 1, 3)
    if hflip:
        x = x[:, :, ::-1]
    if vflip:
        x = x[:, ::-1]
    return x


def dihedral_flows(f: np.ndarray, transpose: bool, hflip: bool, vflip: bool) -> np.ndarray:
    """(P, 4, H, W) middle flows [dx, dy, dx, dy] under the same transform as the frames.

    A transpose swaps the fields' axes and the dx/dy components; a horizontal flip mirrors the
    field and negates dx; a vertical flip negates dy.
    """
    if transpose:
        f = f.transpose(0, 1, 3, 2)[:, [1, 0, 3, 2]]
    if hflip:
        f = f[:, :, :, ::-1].copy()
        f[:, 0::2] *= -1
    if vflip:
        f = f[:, :, ::-1].copy()
        f[:, 1::2] *= -1
    return f


def reverse_time(lr: np.ndarray, hr: np.ndarray, flows: np.ndarray):
    """Play the clip backwards: pair k becomes pair P-1-k and mid->prev swaps with mid->next."""
    return lr[::-1], hr[::-1], flows[::-1][:, [2, 3, 0, 1]]


# -- flow cache ---------------------------------------------------------------------------
class FlowCache:
    """Middle flows (P, 4, h, w) of each clip's whole LR input, computed once, stored as float16
    .npy under a key of ``tag`` (the dataset) and the clip's name."""

    def __init__(self, folder, tag: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tag = tag

    def path(self, name: str) -> Path:
        key = hashlib.sha1(f"{self.tag}|{name}".encode()).hexdigest()[:16]
        return self.folder / f"{key}.npy"

    def get(self, name: str, lr: np.ndarray) -> np.ndarray:
        p = self.path(name)
        if p.is_file():
            try:
                f = np.load(p)
                if f.shape == (lr.shape[0] - 1, 4, *lr.shape[1:3]):
                    return f.astype(np.float32)
            except (OSError, ValueError):  # a torn or foreign file: compute it again
                pass
        from ..run.flow import middle_flows

        f = np.asarray(middle_flows(lr), np.float32)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp.npy")  # atomic: readers never see half a file
        np.save(tmp, f.astype(np.float16))
        tmp.replace(p)
        return f


# -- crops --------------------------------------------------------------------------------
def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float().div_(255.0)


class Sampler:
    """What the training loop draws from: ``sample(rng)`` one training example, ``batch`` many;
    ``precompute`` fills the flow cache before training."""

    def sample(self, rng: np.random.Generator):
        raise NotImplementedError

    def precompute(self, progress: bool = True, pool=None) -> None:
        raise NotImplementedError

    def batch(self, rng, n: int, pool=None):
        """``n`` samples stacked: (n, 4, 3, c, c), (n, 7, 3, 4c, 4c), (n, 3, 4, c, c).

        Each sample draws from its own generator seeded from ``rng``, so a batch is the same
        whether ``pool`` (a thread pool: PNG decoding and resampling release the GIL) draws its
        samples in parallel or this thread draws them in turn."""
        gens = [np.random.default_rng(int(seed)) for seed in rng.integers(2**63, size=n)]
        items = list(pool.map(self.sample, gens)) if pool else [self.sample(g) for g in gens]
        return tuple(torch.stack(z) for z in zip(*items))


class CropSampler(Sampler):
    """Random augmented crops of a dataset: (lr (4, 3, c, c), hr (7, 3, 4c, 4c), flows (3, 4, c, c))."""

    def __init__(self, dataset, crop: int, flows: FlowCache, time_reverse: bool = True):
        self.ds, self.crop, self.flows, self.time_reverse = dataset, crop, flows, time_reverse

    def precompute(self, progress: bool = True, pool=None) -> None:
        """Fill the flow cache for every clip before training, so steps time only training;
        ``pool`` (a thread pool: OpenCV's flow releases the GIL) does clips in parallel. Once
        done, a second call returns at once (it would read every clip again to find its flow)."""
        if getattr(self, "_precomputed", False):
            return

        def one(i):
            c = self.ds.clip(i)
            self.flows.get(c.name, c.lr)

        done = pool.map(one, range(len(self.ds))) if pool else map(one, range(len(self.ds)))
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(self.ds), desc="flows", unit="clip", file=sys.stderr)
        for _ in done:
            pass
        self._precomputed = True

    def sample(self, rng: np.random.Generator):
        c = self.ds.clip(int(rng.integers(len(self.ds))))
        flows = self.flows.get(c.name, c.lr)
        h, w = c.lr.shape[1:3]
        s = self.crop
        if h < s or w < s:
            raise InputError(f"clip {c.name}: LR size {w}x{h} is smaller than the crop {s}")
        y, x = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        lr = c.lr[:, y:y + s, x:x + s]
        hr = c.hr[:, SCALE * y:SCALE * (y + s), SCALE * x:SCALE * (x + s)]
        fl = flows[:, :, y:y + s, x:x + s]
        t, hf, vf = (bool(b) for b in rng.integers(0, 2, 3))
        lr, hr, fl = dihedral_frames(lr, t, hf, vf), dihedral_frames(hr, t, hf, vf), dihedral_flows(fl, t, hf, vf)
        if self.time_reverse and rng.random() < 0.5:
            lr, hr, fl = reverse_time(lr, hr, fl)
        return to_tensor(lr), to_tensor(hr), torch.from_numpy(np.ascontiguousarray(fl)).float()


class MixedSampler(Sampler):
    """Samples from several samplers, each sample from one drawn with probability its share
    (e.g. a user's video and a share of the synthetic set, so that fine-tuning does not forget
    what the synthetic set taught). ``parts``: [(sampler, share)]; parts with share 0 are left
    out, the others' shares normalised. All crops have one size (they stack into one batch)."""

    def __init__(self, parts):
        parts = [(s, float(w)) for s, w in parts if float(w) > 0]
        if not parts:
            raise InputError("a mixed sampler needs at least one part with a share > 0")
        if len({s.crop for s, _ in parts}) != 1:
            raise InputError(f"mixed samplers need one crop size, got {sorted({s.crop for s, _ in parts})}")
        total = sum(w for _, w in parts)
        self.parts = [s for s, _ in parts]
        self.shares = [w / total for _, w in parts]
        self.crop = self.parts[0].crop

    def precompute(self, progress: bool = True, pool=None) -> None:
        for s in self.parts:
            s.precompute(progress, pool)

    def sample(self, rng: np.random.Generator):
        k = int(np.searchsorted(np.cumsum(self.shares), rng.random(), side="right"))
        return self.parts[min(k, len(self.parts) - 1)].sample(rng)


def build_sampler(cfg: dict) -> CropSampler:
    """The sampler of ``cfg["data"]``; the flow cache defaults to ``<root>/flow_cache``."""
    d = cfg["data"]
    refuse_validation_only(d["root"])
    ds = open_dataset(d["root"], d["layout"], list_file=d["list"] or None)
    cache = Path(d["flow_cache"]) if d["flow_cache"] else Path(d["root"]) / "flow_cache"
    return CropSampler(ds, int(d["crop"]), FlowCache(cache, f"{Path(d['root']).resolve()}|{d['layout']}"),
                       bool(d["time_reverse"]))
