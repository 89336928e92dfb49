"""Weights IO: safetensors round trip, upstream .pth wrappers, clear errors, no pickle execution."""
import pickle

import pytest
import torch

from mstt_stvsr.core.errors import WeightsError
from mstt_stvsr.core.net.model import MSTT
from mstt_stvsr.core.net.weights import load_model, read_metadata, save_weights


def tiny(skip=True):
    torch.manual_seed(3)
    return MSTT(nf=8, groups=2, front_RBs=2, back_RBs=1, skip=skip)


def same_params(a, b, atol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=0)


def test_safetensors_round_trip_keeps_config_and_meta(tmp_path):
    model = tiny()
    path = save_weights(model, tmp_path / "w.safetensors", extra_meta={"steps": 12, "data": "synthetic"})
    loaded = load_model(path)
    assert loaded.config == model.config
    same_params(model, loaded)
    meta = read_metadata(path)
    assert meta["steps"] == "12" and meta["data"] == "synthetic"
    assert not loaded.training


def test_half_precision_file_is_half_size_and_close(tmp_path):
    model = tiny()
    p32 = save_weights(model, tmp_path / "a.safetensors")
    p16 = save_weights(model, tmp_path / "b.safetensors", half=True)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    same_params(model, load_model(p16), atol=1e-3)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "params", "module"])
def test_upstream_pth_wrappers(tmp_path, wrap):
    model = tiny(skip=False)
    state = model.state_dict()
    if wrap == "state_dict":
        obj = {"state_dict": state, "epoch": 3}
    elif wrap == "params":
        obj = {"params": state}
    elif wrap == "module":
        obj = {"module." + k: v for k, v in state.items()}
    else:
        obj = state
    path = tmp_path / "up.pth"
    torch.save(obj, path)
    loaded = load_model(path)
    # inferred from shapes; an upstream checkpoint runs upstream's wiring (no base)
    assert loaded.config == dict(model.config, upstream_exact=True)
    same_params(model, loaded)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = tiny(skip=False).state_dict()
    state.pop("HRconv.weight")
    state["extra.layer"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys: HRconv\.weight.*unexpected keys: extra\.layer"):
        load_model(path)


def test_shape_mismatch_is_named(tmp_path):
    state = tiny(skip=False).state_dict()
    state["fusion.weight"] = torch.zeros(8, 15, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatches: fusion\.weight \(8, 15, 1, 1\) != \(8, 16, 1, 1\)"):
        load_model(path)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {Evil.marker}",))


def test_pickle_code_is_never_executed(tmp_path):
    Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(WeightsError, match="without running pickle code"):
        load_model(path)
    assert not Evil.marker.exists()


@pytest.mark.parametrize("content,suffix", [(b"not a model at all", ".pth"), (b"\x00\x01garbage", ".safetensors")])
def test_garbage_files(tmp_path, content, suffix):
    path = tmp_path / ("junk" + suffix)
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=str(path.name)):
        load_model(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="not a file"):
        load_model(tmp_path)


def test_non_mstt_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="not an MSTT state_dict"):
        load_model(path)
