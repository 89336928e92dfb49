"""Each dataset layout loads from a small generated example."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mstt_stvsr.core.training.datasets import (GeoTiffFramesDataset, SeptupletDataset, SplitDataset, open_dataset)
from mstt_stvsr.core.training.degrade import downsample
from mstt_stvsr.core.errors import InputError


def frames(n, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_septuplet(tmp_path):
    hr = frames(7)
    d = tmp_path / "sequences" / "00042" / "0003"
    d.mkdir(parents=True)
    for t, f in enumerate(hr):
        Image.fromarray(f).save(d / f"im{t + 1}.png")
    (tmp_path / "sep_testlist.txt").write_text("00042/0003\n\n")
    ds = open_dataset(tmp_path)
    assert isinstance(ds, SeptupletDataset) and len(ds) == 1
    c = ds.clip(0)
    assert c.name == "00042/0003" and np.array_equal(c.hr, hr)
    assert np.array_equal(c.lr, downsample(hr[[0, 2, 4, 6]]))
    with pytest.raises(InputError, match="list file not found"):
        SeptupletDataset(tmp_path, "sep_trainlist.txt")


def write_split(root, seq, hr, lr=None):
    for t, f in enumerate(hr):
        p = root / "train" / "GT" / seq
        p.mkdir(parents=True, exist_ok=True)
        Image.fromarray(f).save(p / f"{t:03d}.png")
        if lr is not None:
            q = root / "train" / "LR4x" / seq
            q.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lr[t]).save(q / f"{t:03d}.png")
        b = root / "train" / "Bicubic4x" / seq  # present in the seed layout, ignored
        b.mkdir(parents=True, exist_ok=True)


def test_split_layout_with_and_without_lr(tmp_path):
    hr_a = frames(9, seed=1)
    lr_a = frames(9, 8, 10, seed=2)  # distinct from a degradation, to see it is read
    write_split(tmp_path, "a", hr_a, lr_a)
    hr_b = frames(7, seed=3)
    write_split(tmp_path, "b", hr_b)
    write_split(tmp_path, "short", frames(3, seed=4))  # fewer than 7 frames: no clip
    ds = open_dataset(tmp_path)
    assert isinstance(ds, SplitDataset)
    assert len(ds) == 3 + 1  # seq a: starts 0, 1, 2; seq b: 0
    c = ds.clip(2)
    assert c.name == "a/2" and np.array_equal(c.hr, hr_a[2:9])
    assert np.array_equal(c.lr, lr_a[[2, 4, 6, 8]])
    c = ds.clip(3)
    assert c.name == "b/0" and np.array_equal(c.lr, downsample(hr_b[[0, 2, 4, 6]]))
    assert len(SplitDataset(tmp_path, stride=7)) == 2


def test_geotiff_folder_ordered_by_time(tmp_path):
    from rasterio.transform import from_origin

    from mstt_stvsr.core.geo.synthetic import write_frames

    hr = frames(8, seed=5)
    order = [3, 0, 7, 1, 5, 2, 6, 4]  # file names deliberately not in time order
    write_frames(tmp_path, hr, names=[f"scene_{k}.tif" for k in order], transform=from_origin(500000, 4000000, 1, 1),
                 times=[f"2021-05-03T10:00:0{t}.5Z" for t in range(8)], time_keys=("ACQUISITIONDATETIME",))
    ds = open_dataset(tmp_path)
    assert isinstance(ds, GeoTiffFramesDataset) and len(ds) == 2
    c = ds.clip(1)
    assert np.array_equal(c.hr, hr[1:8])
    assert np.array_equal(c.lr, downsample(hr[[1, 3, 5, 7]]))


def test_unknown_layout(tmp_path):
    with pytest.raises(InputError, match="not a known dataset layout"):
        open_dataset(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "nope")
