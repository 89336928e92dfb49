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


def write_frames(folder, hr, ext=".jpg", names=None):
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"f{t + 1}{ext}" for t in range(len(hr))]
    for name, f in zip(names, hr):
        Image.fromarray(f).save(folder / name, quality=95) if ext == ".jpg" else Image.fromarray(f).save(folder / name)
    return folder


def test_frame_folders_natural_order_hidden_files_and_even_counts(tmp_path):
    from mstt_stvsr.core.training.datasets import FrameFoldersDataset

    hr = frames(11, 32, 40, seed=3)
    a = write_frames(tmp_path / "video" / "a", hr, ".png")  # f1 .. f11: f10 sorts after f9
    (a / "._f1.png").write_bytes(b"\0\x05\x16\x07")  # macOS resource fork: not a frame
    (a / "Thumbs.db").write_bytes(b"x")
    write_frames(tmp_path / "video" / "b", frames(8, 32, 40, seed=4), ".png")  # even: the last is dropped
    ds = FrameFoldersDataset([tmp_path / "video"])
    assert len(ds) == 2
    c = ds.clip(0)
    assert c.name == "a" and c.hr.shape == (11, 32, 40, 3)
    assert np.array_equal(c.hr, hr)  # in f1, f2, ..., f10, f11 order
    assert np.array_equal(c.lr, downsample(hr[0::2]))
    assert ds.clip(1).hr.shape[0] == 7
    # the clip folders themselves, and a centre crop
    one = FrameFoldersDataset([a], crop=16).clip(0)
    assert np.array_equal(one.hr, hr[:, 8:24, 12:28])


def test_frame_folders_refuse_bad_input(tmp_path):
    from mstt_stvsr.core.training.datasets import FrameFoldersDataset

    write_frames(tmp_path / "few", frames(5), ".png")
    with pytest.raises(InputError, match="5 frame"):
        FrameFoldersDataset([tmp_path / "few"])
    mixed = write_frames(tmp_path / "mixed", frames(7), ".png")
    Image.fromarray(frames(1, 36, 40)[0]).save(mixed / "f4.png")
    with pytest.raises(InputError, match="different sizes"):
        FrameFoldersDataset([mixed]).clip(0)
    bad = write_frames(tmp_path / "bad", frames(7), ".png")
    (bad / "f3.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="f3.png: cannot read"):
        FrameFoldersDataset([bad]).clip(0)
    with pytest.raises(InputError, match="not a folder"):
        FrameFoldersDataset([tmp_path / "missing"])
    with pytest.raises(InputError, match="multiple of 4"):
        FrameFoldersDataset([mixed], crop=10)
