"""Benchmark: a quick run gives sane numbers from one run, FLOPs match the published cost,
and reduced precision (the GPU fast path's autocast) keeps the output's quality."""
import json
import math
import os
import time

import pytest
import torch

from mstt_stvsr.core.bench import hardware, report, suite, throughput
from mstt_stvsr.core.bench.config import BenchConfig
from mstt_stvsr.core.bench.flops import count_flops
from mstt_stvsr.core.run import cost
from mstt_stvsr.core.net.model import MSTT

TINY = dict(nf=8, groups=2, front_RBs=1, back_RBs=1)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bf16_ok():
    dtype, why = throughput.precision_usable("bf16", torch.device("cpu"))
    return dtype is not None, why


def test_quick_bench_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = MSTT(**TINY)
    use_bf16, _ = bf16_ok()
    precisions = ("fp32", "bf16") if use_bf16 else ("fp32",)
    cfg = BenchConfig.quick_config(tiles=(80,), batches=(1,), precisions=precisions, warmup=0, reps=1,
                                   scene=64, e2e_tile=80, threads=1, workdir=str(tmp_path), compare_tile=80,
                                   window_frames=5, window_scene=64)
    lines = []
    res = suite.run_bench(cfg, model=model, log=lines.append)

    rows = [r for r in res["throughput"] if r.get("status") == "ok"]
    assert {r["precision"] for r in rows} == set(precisions)
    flops = count_flops(model, 1, 80, 80)
    for r in rows:
        assert r["seconds"] > 0 and r["mp_per_s"] > 0
        assert math.isclose(r["out_mp"], 7 * 320 * 320 / 1e6)
        assert math.isclose(r["mp_per_s"], r["out_mp"] / r["seconds"])
        assert math.isclose(r["gflop"], flops / 1e9)
        assert math.isclose(r["tflops"], flops / r["seconds"] / 1e12)
        if r["peak_tflops"]:  # an estimate from this CPU's clock and vector width
            assert 0 < r["peak_fraction"] == pytest.approx(r["tflops"] / r["peak_tflops"])

    e = res["e2e"]
    real = e["real_run"]  # the same stack through `mstt-stvsr run` in a fresh process
    assert real["seconds"] > 0 and real["process_seconds"] > real["seconds"]
    assert real["difference"] == pytest.approx(real["seconds"] / e["wall_seconds"] - 1)
    assert "--tile-size 80 --overlap" in real["command"] and "--threads 1" in real["command"]
    # a tiny stack: the fresh process's cold start may exceed the tolerance; it must say so then
    assert bool(real.get("unreliable")) == (abs(real["difference"]) > real["tolerance"])
    assert e["outputs"] == 7 and e["tile"] == 80 and e["grid"]["tiles"] == 1
    assert e["windows"]["windows"] == 1 and e["windows"]["window_factor"] == pytest.approx(1)  # fast plan
    st = e["stages"]
    for s in ("read", "flow", "model", "blend", "write"):
        assert st[s] > 0, s
    assert st["model"] > st["read"]
    # the network thread's own time: the network and its waits for the reader and writer
    assert st["model"] + st["wait_flow"] + st["wait_read"] + st["wait_write"] <= e["wall_seconds"]
    assert e["not_model_seconds"] == pytest.approx(e["wall_seconds"] - st["model"])
    assert any(line.startswith("tiles: 1x1 of 80 px") and "1 per forward" in line for line in e["pipeline_log"])
    assert e["rss_peak_mb"] > e["rss_before_mb"] > 0
    assert e["mp_per_s"] == pytest.approx(7 * 256 * 256 / 1e6 / e["wall_seconds"])

    # a ratio from a disturbed timing keeps its name with a tag (the machine may be busy here)
    ratios = {k.replace(report.UNRELIABLE_TAG, ""): v for k, v in res["ratios"].items()}
    ref = throughput.find_row(res["throughput"], e["precision"], 80, 1)  # auto: bf16 on AMX CPUs
    ideal = e["out_mp"] / ref["mp_per_s"]
    assert ratios["run's network time vs untiled 7-output forward"] == pytest.approx(st["model"] / ideal - 1)
    assert ratios["tiled overhead (overlap, margins; measured)"] == pytest.approx(
        st["model"] / (ideal * e["windows"]["window_factor"]) - 1)
    assert ratios["tiled overhead expected (tile area / scene area)"] == pytest.approx(80 * 80 / 64 ** 2 - 1)
    assert ratios["flow+IO share of wall time (all but the network)"] == pytest.approx(1 - st["model"] / e["wall_seconds"])
    assert ratios["network waiting for reads/flow crops"] == pytest.approx(st["wait_read"] / e["wall_seconds"])
    if use_bf16:
        b, f = (throughput.find_row(res["throughput"], p, 80, 1) for p in ("bf16", "fp32"))
        assert ratios["bf16/fp32 speed-up, tile 80"] == pytest.approx(b["mp_per_s"] / f["mp_per_s"])

    assert not list(tmp_path.iterdir())  # the synthetic stacks were removed

    paths = res["paths"]["paths"]
    assert set(paths) == {"default", "previous default (NCHW, SDPA, whole frames)", "eager fp32 NCHW"}
    assert paths["eager fp32 NCHW"]["psnr_vs_fp32_db"] == math.inf
    assert min(p["psnr_vs_fp32_db"] for p in paths.values()) > 40  # bf16 or layout: tiny differences
    assert ratios["network default path/eager fp32 speed-up, tile 80"] == pytest.approx(
        paths["eager fp32 NCHW"]["seconds"] / paths["default"]["seconds"])
    assert 0 < ratios[f"network FLOP/s share of a same-run {res['paths']['precision']} matmul"] < 2
    w = res["window_plans"]
    assert ratios["windows fast/central speed-up, 5 frames end to end"] == pytest.approx(
        w["central"]["wall_seconds"] / w["fast"]["wall_seconds"])
    assert any("4 time window(s), central plan" in line for line in w["central"]["pipeline_log"])
    assert any("2 time window(s), fast plan" in line for line in w["fast"]["pipeline_log"])

    path = report.save_json(res, tmp_path / "r" / "bench.json")
    back = json.loads(path.read_text())
    assert back["e2e"]["stages"]["model"] == pytest.approx(st["model"])
    assert back["ratios"].keys() == res["ratios"].keys()
    text = report.format_report(res)
    assert "out MP/s" in text and "flow+IO share" in text and "grid_sample" in text


def test_cli_bench_writes_json(tmp_path):
    """`mstt-stvsr bench` through the real CLI (full model or shipped weights), network only."""
    from mstt_stvsr.core import cli

    out = tmp_path / "b.json"
    rc = cli.main(["bench", "--quick", "--tiles", "80", "--batches", "1", "--precisions", "fp32", "--warmup", "0",
                   "--reps", "1", "--scene", "0", "--compare-tile", "0", "--window-frames", "0", "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    (row,) = res["throughput"]
    assert row["status"] == "ok" and row["mp_per_s"] > 0
    assert 0.8 * 1435 / 4 < row["gflop"] < 1.25 * 1435 / 4  # full model, 80x80 window
    assert "e2e" not in res


def test_cli_rejects_bad_lists(capsys):
    from mstt_stvsr.core import cli

    with pytest.raises(SystemExit):
        cli.main(["bench", "--tiles", "80,abc"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_full_model_flops_match_published_cost():
    """~1435 GFLOP per 4x3x160x160 window (reference README), counted on the meta device."""
    model = MSTT()
    flops = count_flops(model, 1, 160, 160)
    assert 0.75 * 1435e9 < flops < 1.25 * 1435e9
    assert count_flops(model, 2, 160, 160) == pytest.approx(2 * flops)
    # the pipeline's analytic cost model (tile choice) agrees, also for non-square tiles
    for h, w in ((160, 160), (80, 240), (320, 320)):
        assert cost.window_flops(h, w) == pytest.approx(count_flops(model, 1, h, w), rel=0.01)


def test_peaks():
    assert hardware.gpu_peaks("NVIDIA H100 80GB HBM3")[0]["bf16"] == 989.0
    assert hardware.gpu_peaks("NVIDIA H200")[0]["fp16"] == 989.0
    assert hardware.gpu_peaks("NVIDIA H100 PCIe")[0]["bf16"] == 756.0
    peaks, why = hardware.gpu_peaks("Some Future GPU")
    assert peaks == {} and "unknown" in why
    peaks, why = hardware.cpu_peaks(2)
    if peaks:
        assert peaks["bf16"] >= peaks["fp32"] > 0 and "estimate" in why
    else:
        assert "unknown" in why


def psnr(a, b):
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def test_bf16_autocast_keeps_psnr():
    """Fast path: bf16 autocast changes the PSNR against ground truth by <= 0.05 dB."""
    ok, why = bf16_ok()
    if not ok:
        pytest.skip(f"CPU bf16 autocast not usable here: {why}")
    from mstt_stvsr.core.training.degrade import downsample
    from mstt_stvsr.core.run.flow import flows_tensor
    from mstt_stvsr.core.training.clips import make_clip
    from mstt_stvsr.core.net.weights import default_weights_path, load_model

    if default_weights_path().exists():
        model = load_model(None)
    else:  # untrained: give the residual branch real weights, else output = the parameter-free base
        torch.manual_seed(0)
        model = MSTT()
        torch.nn.init.kaiming_uniform_(model.conv_last.weight, a=5 ** 0.5)
        torch.nn.init.uniform_(model.conv_last.bias, -0.05, 0.05)
    model.eval()
    clip, _ = make_clip(3, size=(320, 320), frames=7)
    gt = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255  # (7, 3, 320, 320)
    lr = torch.from_numpy(downsample(clip[0::2])).permute(0, 3, 1, 2).float()[None] / 255
    fl = flows_tensor(lr)
    with torch.inference_mode():
        y32 = model(lr, fl)[0].clamp(0, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = model(lr, fl)[0].float().clamp(0, 1)
    assert y16.dtype == torch.float32 and not torch.equal(y16, y32)  # bf16 really ran
    gap = abs(psnr(y16, gt) - psnr(y32, gt))
    assert gap <= 0.05, gap
    assert psnr(y16, y32) > 40


def test_gpu_bench_script_dry_run(tmp_path):
    """tools/gpu_bench.sh as a lent session would run it, on the CPU at tiny sizes: the wheels
    for this interpreter installed when build/gpu_wheels has them, the network and end-to-end
    parts run, compile skipped with a note, results.json and results.md written and readable."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mstt_stvsr.core.net.weights import save_weights

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    torch.manual_seed(0)
    tiny = save_weights(MSTT(**TINY), tmp_path / "tiny.safetensors")  # the script's plumbing, not the network
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=sys.executable,
               BENCH_WEIGHTS=str(tiny))
    r = subprocess.run(["bash", str(root / "tools" / "gpu_bench.sh")], capture_output=True, text=True,
                       env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "results.json").read_text())
    assert set(res["parts"]) == {"network", "e2e"}
    assert res["device"]["type"] == "cpu"
    assert any("compile skipped" in n for n in res["notes"])
    e2e = res["parts"]["e2e"]["e2e"]
    assert e2e["outputs"] == 7 and e2e["stages"]["model"] > 0
    md = (out / "results.md").read_text()
    assert md.startswith("## MSTT benchmark on ") and "| fp32 | 80 | 1 | off |" in md
    assert "network waiting for scene optical flow" in md and "% of the wall time for flow and IO (flow " in md
    assert "real run (fresh process" in md  # the end-to-end row checked against `mstt-stvsr run`
    for name in ("network", "e2e"):
        assert json.loads((out / f"{name}.json").read_text())["model"] == f"weights {tiny}"


def test_combine_parts_and_bench_without_rasterio():
    """The combined report: compile on/off ratios, the end-to-end part's reference rows kept out
    of the table, a missing part named; and the benchmark imports where rasterio is missing (the
    network part then still runs on a bare GPU machine); stages that fell back to eager named."""
    import subprocess
    import sys

    from mstt_stvsr.core.bench import combine

    def row(tile, mp):
        return {"precision": "bf16", "tile": tile, "batch": 1, "status": "ok", "seconds": 1.0, "mp_per_s": mp,
                "tflops": 1.0, "peak_fraction": None}

    dev = {"type": "cuda", "name": "GPU X", "memory_gb": 80, "torch": "2", "cuda": "12"}
    parts = {"network": {"device": dev, "throughput": [row(160, 100.0)]},
             "e2e": None,
             "compile": {"device": dev, "throughput": [row(160, 150.0)], "compile_fallbacks": {}}}
    c = combine.combine(parts, ["x"])
    assert c["compile_speedups"] == {"torch.compile/eager, bf16 tile 160 batch 1": 1.5}
    assert c["best_bf16"]["mp_per_s"] == 150.0
    assert "part 'e2e' has no result (see its .log)" in c["notes"]
    md = combine.markdown(c)
    assert "on GPU X (cuda, 80 GB)" in md and "| bf16 | 160 | 1 | on |" in md and "1.50x" in md

    from mstt_stvsr.core.run.compile import compile_stages, uncompile_stages

    net = MSTT(**TINY)
    names = compile_stages(net)  # lazy: nothing compiles until called
    net.extract.failed = "BackendCompilerFailed: no compiler"  # as EagerFallback marks a failure
    assert suite.compile_fallbacks(net, names) == {"extract": "BackendCompilerFailed: no compiler"}
    uncompile_stages(net, names)

    code = ("import sys\n"
            "for m in ('rasterio', 'osgeo', 'qgis', 'tqdm', 'affine'): sys.modules[m] = None\n"
            "import mstt_stvsr.core.bench.command, mstt_stvsr.core.bench.combine\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_judge_flags_spread_and_foreign_cpu():
    """disturbance.judge: steady repeats on an otherwise idle machine are trusted; repeats that
    spread over 15 %, or other processes' CPU time above 10 % of the CPUs, are not."""
    from mstt_stvsr.core.bench.disturbance import Sample, judge

    steady = [Sample(1.00, 1.9, 2.0), Sample(1.05, 2.0, 2.05), Sample(0.98, 1.9, 1.95)]
    v = judge(steady, cpus=2)
    assert v.reliable and v.median == 1.00 and v.spread == pytest.approx(0.07) and v.foreign_cpu < 0.05
    spread = judge([Sample(1.0, 2, 2), Sample(1.3, 2.6, 2.6), Sample(1.0, 2, 2)], cpus=2)
    assert not spread.reliable and "spread 30 %" in spread.reasons[0]
    busy = judge([Sample(1.0, 1.0, 2.0)] * 3, cpus=2)  # the machine was busy twice what we used
    assert not busy.reliable and busy.foreign_cpu == pytest.approx(0.5) and "other processes used 50 %" in busy.reasons[0]
    assert judge([Sample(1.0, 1.0, None)], cpus=2).reliable  # one repeat, no /proc/stat: nothing to judge


def test_a_bench_beside_a_busy_process_is_flagged(tmp_path):
    """A tiny bench while two busy processes share the CPUs: its rows, its summary and its JSON
    say the timing is unreliable (the load average before the run would not have)."""
    import subprocess
    import sys

    torch.manual_seed(0)
    model = MSTT(**TINY)
    cfg = BenchConfig.quick_config(tiles=(80,), batches=(1,), precisions=("fp32",), scene=0, threads=1,
                                   compare_tile=0, window_frames=0)
    spin = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 60\nwhile time.time() < t: pass"])
            for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.5)
        res = suite.run_bench(cfg, model=model)
    finally:
        for p in spin:
            p.kill()
            p.wait()
    row = res["throughput"][0]
    assert row["status"] == "ok" and row["foreign_cpu"] > 0.3, row
    assert any("other processes used" in why for why in row["unreliable"])
    assert res["unreliable"] and "fp32 tile 80 batch 1" in res["unreliable"][0]
    text = report.format_report(res)
    assert "UNRELIABLE" in text and "WARNING: 1 timing(s) disturbed" in text
    report.save_json(res, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["throughput"][0]["unreliable"]


def test_a_bench_that_no_real_run_reproduces_is_flagged(tmp_path):
    """The end-to-end check runs the stack through `mstt-stvsr run` in a fresh process: a bench
    figure far from what that run takes (here a made-up 0.01 s) is marked unreliable with both
    times, in the row and in the summary; a run that fails is reported as such, not as a time."""
    from mstt_stvsr.core.bench.end_to_end import real_run_check
    from mstt_stvsr.core.bench.synthetic import write_synthetic_stack
    from mstt_stvsr.core.run.options import RunOptions

    torch.manual_seed(0)
    paths = write_synthetic_stack(tmp_path / "in", 64)
    options = RunOptions(tile_size=80, overlap=16, device="cpu", precision="fp32", threads=1)
    real = real_run_check(paths, tmp_path, options, MSTT(**TINY), bench_seconds=0.01)
    assert real["seconds"] > 0.01 and real["difference"] > 1
    assert "a real `mstt-stvsr run` of this stack took" in real["unreliable"][0] and "0.0 s" in real["unreliable"][0]
    assert len(list((tmp_path / "real_run").glob("*.tif"))) == 7  # it really ran: 4 frames -> 7
    summary = report.unreliable_rows({"e2e": {"real_run": real}})
    assert summary and summary[0].startswith("end to end: a real `mstt-stvsr run`")

    failed = real_run_check(paths[:1], tmp_path / "one", options, MSTT(**TINY), bench_seconds=1.0)
    assert "seconds" not in failed and "the real run of this stack failed (exit 2)" in failed["unreliable"][0]
