"""Upstream-exact MSTT: an upstream checkpoint computes what its authors' code computes.

The reference case (``../shared/reference/upstream_forward_vectors.safetensors``) is one
forward of the unmodified upstream code: seeded random weights, 4 LR frames, upstream's full
frame-to-frame flows and its 7 output frames. An upstream-style ``.pth`` then runs the
upstream-exact variant end to end through the CLI and ``qgis_process``."""
from pathlib import Path

import pytest
import torch

from mstt_stvsr.core.net.model import MSTT
from mstt_stvsr.core.net.spec import FLOW_FULL
from mstt_stvsr.core.net.weights import load_model, save_weights
from mstt_stvsr.core.run.flow import flows_tensor
from stackgen import write_stack

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "upstream_forward_vectors.safetensors"


@pytest.fixture(scope="module")
def vectors():
    if not VECTORS.exists():
        pytest.skip(f"no reference vectors at {VECTORS}")
    from safetensors.torch import load_file

    v = load_file(str(VECTORS))
    v["state"] = {k[len("weights."):]: t.float() for k, t in v.items() if k.startswith("weights.")}
    return v


def forward(model, lr, flows):
    with torch.no_grad():
        return model.eval()(lr, flows)


def test_upstream_exact_matches_the_reference_forward(vectors):
    """float32 on the CPU: the same arithmetic in another order differs by ~1e-7 here."""
    model = MSTT(upstream_exact=True)
    model.load_state_dict(vectors["state"], strict=True)
    out = forward(model, vectors["lr"], vectors["flows_project"])
    assert out.shape == vectors["output"].shape
    assert (out - vectors["output"]).abs().max().item() <= 1e-4


def test_our_variant_does_not_match_it(vectors):
    """Negative control: our wiring and warp (same weights, no base) differ on the new frames,
    so the test above tells the two apart."""
    model = MSTT(skip=False)
    model.load_state_dict(vectors["state"], strict=True)
    out = forward(model, vectors["lr"], vectors["flows_project"])
    assert (out - vectors["output"])[:, 1::2].abs().max().item() > 1e-3


def test_full_flows_are_upstreams_inputs(vectors):
    """Our OpenCV flow in upstream's form gives the reference's flows (DIS, the same settings;
    OpenCV's SIMD paths may differ across CPUs by far less than 0.05 px on average)."""
    fl = flows_tensor(vectors["lr"], FLOW_FULL)
    assert fl.shape == vectors["flows_project"].shape
    assert (fl - vectors["flows_project"]).abs().mean().item() < 0.05
    # and through the whole network: the frames upstream makes from them
    model = MSTT(upstream_exact=True)
    model.load_state_dict(vectors["state"], strict=True)
    assert (forward(model, vectors["lr"], fl) - vectors["output"]).abs().mean().item() < 1e-3


def test_checkpoints_pick_their_variant(tmp_path):
    torch.manual_seed(0)
    tiny = dict(nf=8, groups=2, front_RBs=1, back_RBs=1)
    ours = load_model(save_weights(MSTT(**tiny), tmp_path / "ours.safetensors"))
    assert not ours.upstream_exact and ours.skip and ours.flow_kind == "middle"
    pth = tmp_path / "upstream.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in MSTT(**tiny, skip=False).state_dict().items()}}, pth)
    up = load_model(pth)
    assert up.upstream_exact and not up.skip and up.flow_kind == FLOW_FULL
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(tmp_path / "converted.safetensors"))
    assert load_model(tmp_path / "converted.safetensors").upstream_exact  # no variant metadata: upstream's
    again = load_model(save_weights(up, tmp_path / "again.safetensors"))
    assert again.upstream_exact  # ours record the variant they were saved with


def upstream_pth(path: Path) -> Path:
    """Random tiny weights under upstream's key names, wrapped as a DataParallel checkpoint."""
    torch.manual_seed(1)
    net = MSTT(nf=8, groups=2, front_RBs=1, back_RBs=1, skip=False)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def test_cli_runs_an_upstream_pth_and_says_which_variant(tmp_path, capsys):
    from mstt_stvsr.core.cli import main

    paths = write_stack(tmp_path / "in", n=3, h=24, w=32)
    rc = main(["run", *paths, "-o", str(tmp_path / "out"), "--weights", str(upstream_pth(tmp_path / "up.pth")),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "network: MSTT upstream-exact variant, full flows" in err
    assert len(list((tmp_path / "out").glob("*.tif"))) == 5


@pytest.mark.qgis
def test_qgis_process_runs_an_upstream_pth(tmp_path, small_stack):
    from qgis_fixtures import ALG, QGIS_PROCESS, headless_env, run_qgis_process

    if not QGIS_PROCESS.exists():
        pytest.skip("no .venv/bin/qgis_process: run `make setup`")
    env = headless_env(tmp_path / "profile")
    r = run_qgis_process(["run", ALG, "--", *[f"INPUT={p}" for p in small_stack],
                          f"WEIGHTS={upstream_pth(tmp_path / 'up.pth')}", "DEVICE=cpu",
                          f"OUTPUT={tmp_path / 'out'}"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "upstream-exact variant" in r.stdout + r.stderr
    assert len(list((tmp_path / "out").glob("*.tif"))) == 2 * len(small_stack) - 1
