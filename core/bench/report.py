"""What a benchmark tells its reader: ratios between its own measurements, a text report, and
the whole result as JSON."""
from __future__ import annotations

import json
from pathlib import Path

from ..net.spec import SCALE
from .compare import DEFAULT_PATH, EAGER_PATH, PREVIOUS_PATH
from .throughput import find_row

# ratios whose names contain these are fractions, printed as percentages; the others are "x"
PERCENT_WORDS = ("share", "overhead", "vs untiled", "waiting")


def ratios(result: dict) -> dict:
    """Ratios between measurements of this run only: precision and batch speed-ups, larger
    tiles against the smallest, and where the end-to-end run's time went."""
    out = throughput_ratios(result.get("throughput", []))
    if result.get("e2e"):
        out.update(e2e_ratios(result["e2e"]))
    if result.get("paths"):
        out.update(path_ratios(result["paths"]))
    if result.get("window_plans"):
        w = result["window_plans"]
        out[f"windows fast/central speed-up, {w['frames']} frames end to end"] = (
            w["central"]["wall_seconds"] / w["fast"]["wall_seconds"])
    return out


def path_ratios(p: dict) -> dict:
    t = {name: r["seconds"] for name, r in p["paths"].items()}
    tag = f"tile {p['tile']}, {p['precision']}"
    r = p["paths"]
    return {tagged(f"network default path/{PREVIOUS_PATH} speed-up, {tag}", r[PREVIOUS_PATH], r[DEFAULT_PATH]):
            t[PREVIOUS_PATH] / t[DEFAULT_PATH],
            tagged(f"network default path/eager fp32 speed-up, tile {p['tile']}", r[EAGER_PATH], r[DEFAULT_PATH]):
            t[EAGER_PATH] / t[DEFAULT_PATH],
            tagged(f"network FLOP/s share of a same-run {p['precision']} matmul", r[DEFAULT_PATH]):
            p["network_tflops"] / p["matmul_tflops"]}


UNRELIABLE_TAG = " [unreliable timing]"


def tagged(name: str, *rows) -> str:
    """A ratio's name, marked when any row it comes from was disturbed."""
    return name + (UNRELIABLE_TAG if any(r.get("unreliable") for r in rows) else "")


def throughput_ratios(rows: list) -> dict:
    out = {}
    ok = [r for r in rows if r.get("status") == "ok" and not r.get("extra")]
    for r in ok:
        if r["precision"] != "fp32" and r["batch"] == 1:
            base = find_row(rows, "fp32", r["tile"], 1)
            if base:
                out[tagged(f"{r['precision']}/fp32 speed-up, tile {r['tile']}", r, base)] = r["mp_per_s"] / base["mp_per_s"]
        if r["batch"] > 1:
            base = find_row(rows, r["precision"], r["tile"], 1)
            if base:
                out[tagged(f"batch {r['batch']}/1 throughput, {r['precision']} tile {r['tile']}", r, base)] = (
                    r["mp_per_s"] / base["mp_per_s"])
    tiles = sorted({r["tile"] for r in ok})
    for prec in sorted({r["precision"] for r in ok}):
        small = find_row(rows, prec, tiles[0], 1) if tiles else None
        for t in tiles[1:]:
            big = find_row(rows, prec, t, 1)
            if small and big:
                out[tagged(f"tile {t}/{tiles[0]} throughput, {prec}", small, big)] = big["mp_per_s"] / small["mp_per_s"]
    return out


def unreliable_rows(result: dict) -> list[str]:
    """One line per timing of ``result`` that was disturbed: which, and why."""
    lines = [f"{r['precision']} tile {r['tile']} batch {r['batch']}: {'; '.join(r['unreliable'])}"
             for r in result.get("throughput", []) if r.get("unreliable")]
    for name, r in (result.get("paths") or {}).get("paths", {}).items():
        if r.get("unreliable"):
            lines.append(f"network path {name}: {'; '.join(r['unreliable'])}")
    real = (result.get("e2e") or {}).get("real_run") or {}
    if real.get("unreliable"):
        lines.append(f"end to end: {'; '.join(real['unreliable'])}")
    return lines


def e2e_ratios(e2e: dict) -> dict:
    st, wall = e2e["stages"], e2e["wall_seconds"]
    out = {"model share of wall time": st["model"] / wall,
           "flow+IO share of wall time (all but the network)": e2e["not_model_seconds"] / wall,
           "network waiting for scene optical flow": st["wait_flow"] / wall,
           "network waiting for reads/flow crops": st["wait_read"] / wall,
           "network waiting for blend/writes": st["wait_write"] / wall}
    if "tiled_overhead" in e2e:
        out["tiled overhead (overlap, margins; measured)"] = e2e["tiled_overhead"]
        out["tiled overhead expected (tile area / scene area)"] = e2e["tiled_overhead_expected"]
        out["time-window overhead (the run's window plan; FLOPs)"] = e2e["window_overhead_flops"]
        out["run's network time vs untiled 7-output forward"] = e2e["network_overhead"]
        out["end-to-end overhead (wall vs untiled network)"] = e2e["end_to_end_overhead"]
    return out


def format_ratio(name: str, value: float) -> str:
    return f"{100 * value:.1f}%" if any(w in name for w in PERCENT_WORDS) else f"{value:.2f}x"


def format_report(result: dict) -> str:
    """The result as text for people: device, throughput table, end-to-end stages, ratios."""
    lines = header_lines(result)
    if result.get("throughput"):
        lines += throughput_lines(result["throughput"], result["device"]["type"] == "cuda")
        lines += [result["flop_note"] + ".", ""]
    if result.get("e2e"):
        lines += e2e_lines(result["e2e"]) + [""]
    if result.get("paths"):
        lines += path_lines(result["paths"]) + [""]
    if result.get("window_plans"):
        w = result["window_plans"]
        lines += [f"Window plans end to end: {w['frames']} frames of {w['scene']}x{w['scene']}, one tile"]
        lines += [f"  {m:>8}: {w[m]['wall_seconds']:.2f} s wall, network {w[m]['model_seconds']:.2f} s"
                  for m in ("central", "fast")] + [""]
    if result.get("ratios"):
        lines.append("Ratios (all from this run)")
        width = max(len(k) for k in result["ratios"])
        lines += [f"  {k:<{width}}  {format_ratio(k, v)}" for k, v in result["ratios"].items()]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    bad = result.get("unreliable") or []
    if bad:
        lines += ["", f"WARNING: {len(bad)} timing(s) disturbed (other processes on the CPUs, or repeats "
                  "spread too far); their figures and ratios are not to be quoted:"] + [f"  {b}" for b in bad]
    return "\n".join(lines)


def header_lines(result: dict) -> list:
    d = result["device"]
    where = (f", {d['threads']} threads, load {d.get('load_avg')}" if d["type"] == "cpu"
             else f", {d.get('memory_gb')} GB")
    compiled = f"; compiled: {', '.join(result['compiled'])}" if result.get("compiled") else ""
    if result.get("compile_fallbacks"):
        compiled += f" (ran eager instead: {', '.join(result['compile_fallbacks'])})"
    return [f"MSTT benchmark on {d['name']} ({d['type']}{where}), torch {d['torch']}",
            f"model: {result['model']}; deformable conv: {result['deform_conv']}{compiled}",
            f"peak: {d.get('peak_source')}", ""]


def throughput_lines(rows: list, cuda: bool) -> list:
    head = (f"{'precision':>9} {'tile':>5} {'batch':>5} {'s/fwd':>8} {'spread':>7} {'out MP/s':>9} {'GFLOP/MP':>9} "
            f"{'TFLOP/s':>8} {'% peak':>7}" + (f" {'GPU MB':>8}" if cuda else ""))
    lines = ["Network: 4 LR frames -> 7 HR frames, one forward (flows given)", head]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r.get('precision', ''):>9} {r.get('tile', ''):>5} {r.get('batch', ''):>5}  {r.get('status')}")
            continue
        frac = r.get("peak_fraction")
        pct = "-" if frac is None else format(100 * frac, ".1f")
        spread = "-" if r.get("spread") is None else f"{100 * r['spread']:.0f}%"
        line = (f"{r['precision']:>9} {r['tile']:>5} {r['batch']:>5} {r['seconds']:>8.3f} {spread:>7} "
                f"{r['mp_per_s']:>9.4g} {r['gflop_per_mp']:>9.4g} {r['tflops']:>8.4g} {pct:>7}")
        if cuda:
            line += f" {r.get('gpu_peak_mb', 0):>8.0f}"
        if r.get("unreliable"):
            line += "  UNRELIABLE"
        lines.append(line)
    return lines


def e2e_lines(e: dict) -> list:
    hr = SCALE * e["scene"]
    gpu = f"; peak GPU {e['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in e else ""
    lines = [f"End to end: {e['frames']} frames of {e['scene']}x{e['scene']} -> {e['outputs']} frames of "
             f"{hr}x{hr}, tile {e['tile']}, overlap {e['overlap']}, "
             f"{e['precision']}, {e['grid']['tiles']} tiles x {e['windows']['windows']} time windows",
             f"  wall {e['wall_seconds']:.2f} s, {e['mp_per_s']:.4g} output MP/s; peak host RSS "
             f"{e['rss_peak_mb']:.0f} MB ({e['rss_peak_scope']}; {e['rss_before_mb']:.0f} MB before){gpu}"]
    lines += [f"  pipeline: {line}" for line in e.get("pipeline_log", [])]
    if real := e.get("real_run"):
        if "seconds" in real:
            flag = "  UNRELIABLE" if real.get("unreliable") else ""
            lines.append(f"  real run (fresh process, `{real['command']}`): {real['seconds']:.2f} s as it reports "
                         f"itself, {100 * real['difference']:+.1f} % from the bench's {real['bench_seconds']:.2f} s "
                         f"(tolerance {100 * real['tolerance']:.0f} %); {real['process_seconds']:.2f} s with the "
                         f"interpreter's start{flag}")
        else:
            lines.append(f"  real run: {real['unreliable'][0]}  UNRELIABLE")
    lines.append(f"  {'stage':>10} {'seconds':>8} {'of wall':>7}   (busy time; reader and writer threads overlap the network)")
    for s, v in e["stages"].items():
        lines.append(f"  {s:>10} {v:>8.2f} {100 * v / e['wall_seconds']:>6.1f}%")
    return lines


def path_lines(p: dict) -> list:
    lines = [f"Network paths, tile {p['tile']} (4 -> 7 frames): s/forward, PSNR of the outputs against eager fp32"]
    for name, r in p["paths"].items():
        flag = "  UNRELIABLE" if r.get("unreliable") else ""
        lines.append(f"  {name:>24}: {r['seconds']:.3f} s, {r['psnr_vs_fp32_db']:.1f} dB{flag}")
    lines.append(f"  default path {p['network_tflops']:.3f} TFLOP/s; {p['precision']} 2048^3 matmul "
                 f"{p['matmul_tflops']:.3f} TFLOP/s (same run)")
    return lines


def save_json(result: dict, path) -> Path:
    """All of ``result`` (every timing, not only the medians) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
