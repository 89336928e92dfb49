"""Score every default weights file in git history on real video (``mstt-stvsr eval``).

    python tools/score_weights_history.py --data ../shared/realvideo/viso012 --crop 512 \
        --out build/eval/history [--commits 95ebebb 5e14823] [--multiframe]

Each commit that changed ``resources/weights/mstt_default.safetensors`` is extracted to
``<out>/<commit>.safetensors`` (``git show``) and scored with the same evaluation as ``mstt-stvsr
eval``; ``<out>/history.md`` / ``history.json`` hold one row a commit (mean gain over bicubic +
linear blend, input-time and new-frame PSNR, the multi-frame gain when asked), so the weights can
be chosen by real video. Rows are written as they finish (a long scan can be stopped and resumed:
commits already in ``history.json`` are skipped).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "resources/weights/mstt_default.safetensors"


def weight_commits() -> list[tuple[str, str, str]]:
    out = subprocess.run(["git", "log", "--format=%h\t%ad\t%s", "--date=short", "--", WEIGHTS],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [tuple(line.split("\t", 2)) for line in out.splitlines() if line]


def main(argv=None) -> int:
    from mstt_stvsr.core.training.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--crop", type=int)
    ap.add_argument("--out", default="build/eval/history")
    ap.add_argument("--commits", nargs="*", help="only these (default: every commit that changed the weights)")
    ap.add_argument("--multiframe", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "history.json"
    rows = json.loads(table.read_text()) if table.exists() else {}
    for commit, date, subject in weight_commits():
        if args.commits and not any(commit.startswith(c) or c.startswith(commit) for c in args.commits):
            continue
        key = f"{commit}{'+mf' if args.multiframe else ''}"
        if key in rows:
            continue
        path = out / f"{commit}.safetensors"
        if not path.exists():
            blob = subprocess.run(["git", "show", f"{commit}:{WEIGHTS}"], cwd=ROOT, check=True,
                                  capture_output=True).stdout
            path.write_bytes(blob)
        res = evaluate(args.data, str(path), device="cpu", progress=False, multiframe=args.multiframe,
                       crop=args.crop, layout="frames")
        m = res["mean"]
        row = {"commit": commit, "date": date, "subject": subject[:90], "clips": res["clips"],
               "gain": m["mstt"]["all"]["psnr_rgb"] - m["baseline"]["all"]["psnr_rgb"],
               "mstt": m["mstt"]["all"]["psnr_rgb"], "baseline": m["baseline"]["all"]["psnr_rgb"],
               "inputs_gain": m["mstt"]["inputs"]["psnr_rgb"] - m["baseline"]["inputs"]["psnr_rgb"],
               "new_gain": m["mstt"]["new"]["psnr_rgb"] - m["baseline"]["new"]["psnr_rgb"],
               "per_clip": {r["clip"]: r["mstt"]["all"]["psnr_rgb"] - r["baseline"]["all"]["psnr_rgb"]
                            for r in res["per_clip"]}, "seconds": res["seconds"]}
        if "multiframe" in res:
            row["multiframe"] = res["multiframe"]["gain"]
        rows[key] = row
        table.write_text(json.dumps(rows, indent=1))
        print(f"{commit} {date}: gain {row['gain']:+.3f} dB (inputs {row['inputs_gain']:+.3f}, new "
              f"{row['new_gain']:+.3f})" + (f", multi-frame {row['multiframe']}" if "multiframe" in row else ""),
              flush=True)
    lines = ["| commit | date | gain all | input times | new frames | multi-frame (copies / warped) |",
             "|---|---|---|---|---|---|"]
    for row in rows.values():
        mf = row.get("multiframe")
        lines.append(f"| {row['commit']} | {row['date']} | {row['gain']:+.2f} | {row['inputs_gain']:+.2f} | "
                     f"{row['new_gain']:+.2f} | " + (f"{mf['copies']:+.3f} / {mf['warped']:+.3f}" if mf else "") + " |")
    (out / "history.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
