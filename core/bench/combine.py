"""One report from several ``mstt-stvsr bench --json`` runs on one machine: merged JSON and a
markdown page (device name, throughput table with compile off/on, ratios, end to end) ready
for README.

tools/gpu_bench.sh runs the network, end-to-end and torch.compile parts as separate processes,
each under its own time limit, so that one slow part cannot lose the others' results; a part
that did not finish is absent here and said so in the notes.

    python -m mstt_stvsr.core.bench.combine --out DIR [--note TEXT]... NAME=RESULT.json...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .report import e2e_lines, format_ratio
from .throughput import find_row

# the part whose rows were measured with torch.compile on; all others ran eager
COMPILED_PART = "compile"


def load_parts(specs) -> dict:
    """{name: result} from "name=path" pairs; a missing or unreadable file gives None."""
    parts = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        try:
            parts[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            parts[name] = None
    return parts


def combine(parts: dict, notes=()) -> dict:
    """The parts as one JSON-ready dict, with the compile on/off and bf16-target summaries."""
    done = {k: v for k, v in parts.items() if v}
    notes = list(notes) + [f"part '{k}' has no result (see its .log)" for k, v in parts.items() if not v]
    first = next(iter(done.values()), {})
    out = {"device": first.get("device"), "model": first.get("model"), "deform_conv": first.get("deform_conv"),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "parts": done, "notes": notes,
           "compile_speedups": compile_speedups(done)}
    best = [r for p in done.values() for r in p.get("throughput", [])
            if r.get("status") == "ok" and r.get("precision") == "bf16"]
    if best:
        top = max(best, key=lambda r: r["mp_per_s"])
        out["best_bf16"] = {k: top[k] for k in ("tile", "batch", "mp_per_s")}
    return out


def compile_speedups(parts: dict) -> dict:
    """Output MP/s compiled / eager for each configuration measured both ways."""
    if COMPILED_PART not in parts:
        return {}
    eager = [r for name, p in parts.items() if name != COMPILED_PART for r in p.get("throughput", [])]
    out = {}
    for r in parts[COMPILED_PART].get("throughput", []):
        if r.get("status") != "ok":
            continue
        base = find_row(eager, r["precision"], r["tile"], r["batch"])
        if base:
            out[f"torch.compile/eager, {r['precision']} tile {r['tile']} batch {r['batch']}"] = (
                r["mp_per_s"] / base["mp_per_s"])
    return out


def markdown(c: dict) -> str:
    d = c.get("device") or {}
    where = f"{d.get('memory_gb')} GB" if d.get("type") == "cuda" else f"{d.get('threads')} threads"
    lines = [f"## MSTT benchmark on {d.get('name', '?')} ({d.get('type', '?')}, {where}), torch {d.get('torch')}"
             + (f", CUDA {d['cuda']}" if d.get("cuda") else "") + f", {c['date']}", "",
             f"Model: {c.get('model')}; deformable conv: {c.get('deform_conv')}; peak: {d.get('peak_source')}.", "",
             "Network: 4 LR frames -> 7 HR frames, one forward (flows given), median of the timed runs "
             "(the end-to-end part's own untiled reference is in its JSON).", "",
             "| precision | LR tile | batch | compile | s / forward | output MP/s | TFLOP/s | % of peak | GPU MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, part in c["parts"].items():
        for r in [] if part.get("e2e") else part.get("throughput", []):
            lines.append(table_row(r, "on" if name == COMPILED_PART else "off"))
    if "best_bf16" in c:
        b = c["best_bf16"]
        lines += ["", f"Best bf16: {b['mp_per_s']:.1f} output MP/s (tile {b['tile']}, batch {b['batch']}; "
                      f"target >= 640)."]
    ratios = dict(c["compile_speedups"])
    for part in c["parts"].values():
        ratios.update(part.get("ratios", {}))
    if ratios:
        lines += ["", "Ratios (each within one process):", ""]
        lines += [f"- {k}: {format_ratio(k, v)}" for k, v in ratios.items()]
    for name, part in c["parts"].items():
        if part.get("e2e"):
            e = part["e2e"]
            waits = {s: e["stages"][f"wait_{s}"] / e["wall_seconds"] for s in ("flow", "read", "write")}
            each = ", ".join(f"{s} {100 * v:.1f} %" for s, v in waits.items())
            lines += ["", f"End to end (part '{name}'): the network waited {100 * sum(waits.values()):.1f} % of "
                          f"the wall time for flow and IO ({each}).", "", "```"] + e2e_lines(e) + ["```"]
        if part.get("compile_fallbacks"):
            lines += ["", f"torch.compile fell back to eager in: {part['compile_fallbacks']}"]
    if c["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in c["notes"]]
    return "\n".join(lines) + "\n"


def table_row(r: dict, compiled: str) -> str:
    head = f"| {r.get('precision', '')} | {r.get('tile', '')} | {r.get('batch', '')} | {compiled} |"
    if r.get("status") != "ok":
        return head + f" {r.get('status')} | | | | |"
    pct = "-" if r.get("peak_fraction") is None else f"{100 * r['peak_fraction']:.1f}"
    gpu = f"{r['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in r else "-"
    return head + f" {r['seconds']:.4f} | {r['mp_per_s']:.4g} | {r['tflops']:.4g} | {pct} | {gpu} |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    ap.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    ap.add_argument("parts", nargs="*", metavar="NAME=PATH", help="bench --json results, in table order")
    args = ap.parse_args(argv)
    c = combine(load_parts(args.parts), args.note)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(c, indent=2, default=str))
    (out / "results.md").write_text(markdown(c))
    print(markdown(c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
