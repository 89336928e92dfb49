"""Tiles and window plans on real video, through the real pipeline (``mstt-stvsr eval --tile``).

    python tools/real_tiles.py --data ../shared/realvideo/viso012 --out build/eval/real [--weights W]

* Tiles: every 7-frame clip of DATA (``clip_*``; 1024 x 1024 native frames, LR 256 x 256, so
  several tiles a frame) through ``run_stack`` at each (tile, overlap) of ``--tiles`` and at one
  tile that holds the whole frame (the reference), in the CPU default precision; the table
  gives each setting's PSNR minus the whole frame's, mean and worst clip.
* Window plans: ``long_300`` (19 frames, 10 inputs) with the fast and the central plan, one
  whole-frame tile each.

Writes ``<out>/tiles.json`` and ``<out>/tiles.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WHOLE = 320  # one tile of the 80-px unit that holds a 256 x 256 LR frame


def main(argv=None) -> int:
    from mstt_stvsr.core.net.weights import load_model
    from mstt_stvsr.core.training.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="viso012-like folder: clip_* (7 frames) and long_300")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tiles", default="80/16,80/32,160/16,160/32", help="TILE/OVERLAP,... (LR px)")
    ap.add_argument("--no-plans", action="store_true", help="skip the window plans on long_300")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(str(p) for p in data.glob("clip_*") if p.is_dir())
    model = load_model(args.weights)
    res = {"weights": args.weights or "shipped default", "precision": args.precision, "tiles": {}, "plans": {}}

    def run(folders, **kw):
        r = evaluate(folders, model=model, weights=args.weights, progress=False, layout="frames",
                     precision=args.precision, log=lambda m: None, **kw)
        return {row["clip"]: row["mstt"]["all"]["psnr_rgb"] for row in r["per_clip"]}, r

    whole, _ = run(clips, tile=WHOLE, overlap=0)
    res["tiles"]["whole"] = whole
    for spec in args.tiles.split(","):
        tile, overlap = (int(v) for v in spec.split("/"))
        per, _ = run(clips, tile=tile, overlap=overlap)
        res["tiles"][spec] = per
        d = [per[c] - whole[c] for c in whole]
        print(f"tile {tile} overlap {overlap}: {sum(d) / len(d):+.3f} dB against whole frames "
              f"(worst clip {min(d):+.3f})", flush=True)
    if not args.no_plans and (data / "long_300").is_dir():
        for plan in ("fast", "central"):
            _, r = run([str(data / "long_300")], tile=WHOLE, overlap=0, windows=plan)
            res["plans"][plan] = {part: r["mean"]["mstt"][part]["psnr_rgb"] for part in ("all", "inputs", "new")}
            res["plans"][plan]["baseline"] = r["mean"]["baseline"]["all"]["psnr_rgb"]
            print(f"long_300, {plan} plan: {res['plans'][plan]}", flush=True)
    (out / "tiles.json").write_text(json.dumps(res, indent=1))
    lines = [f"Weights: {res['weights']}; precision {args.precision}; PSNR RGB, all 7 frames, against one "
             f"whole-frame tile ({WHOLE} LR px).", "", "| tile / overlap (LR px) | mean vs whole | worst clip |",
             "|---|---|---|"]
    for spec, per in res["tiles"].items():
        if spec == "whole":
            continue
        d = [per[c] - whole[c] for c in whole]
        lines.append(f"| {spec} | {sum(d) / len(d):+.3f} dB | {min(d):+.3f} dB |")
    if res["plans"]:
        lines += ["", "| long_300 plan | all | input times | new frames |", "|---|---|---|---|"]
        for plan, p in res["plans"].items():
            lines.append(f"| {plan} | {p['all']:.3f} | {p['inputs']:.3f} | {p['new']:.3f} |")
    (out / "tiles.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
