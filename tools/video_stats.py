"""Real video beside the synthesis: the statistics of core/training/videostats.py, as a table.

    python tools/video_stats.py --real ../shared/realvideo/viso012 --synth build/data/train_city \
        [--synth-clips 40] [--out build/eval/video_stats.md]

Real clips are read whole (native frames); synthetic clips are read from a training set on disk
(the first N clips, their HR frames as written), so the table shows what training saw.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = [  # key, label, format
    ("drift_px", "global motion per frame (px)", "{:.3f}"),
    ("jitter_px", "jitter of that motion (px)", "{:.3f}"),
    ("moving_share", "share of pixels moving on their own (> 30 DN)", "{:.4f}"),
    ("moving_speed_median_px", "speed of those pixels, median (px / frame)", "{:.2f}"),
    ("noise_dn", "temporal noise in flat areas (DN)", "{:.2f}"),
    ("blockiness", "8 x 8 block artefacts (border / inside steps)", "{:.2f}"),
    ("flicker_rel", "brightness flicker (relative, frame to frame)", "{:.4f}"),
    ("trend_rel_per_frame", "brightness trend (relative per frame)", "{:+.4f}"),
    ("sharpness_log10", "sharpness: log10 power 0.25-0.5 / 0.05-0.15 cycles/px", "{:.2f}"),
    ("detail_log10", "fine detail: that ratio of the clip's mean frame (noise averaged out)", "{:.2f}"),
]


def main(argv=None) -> int:
    from mstt_stvsr.core.training.datasets import FrameFoldersDataset, open_dataset
    from mstt_stvsr.core.training.videostats import summarise, video_stats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="folder of real clip folders (native frames)")
    ap.add_argument("--synth", required=True, help="a synthetic training set (mstt-stvsr synth)")
    ap.add_argument("--synth-clips", type=int, default=40)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    real = FrameFoldersDataset([args.real])
    real_rows = [video_stats(real.clip(i).hr) for i in range(len(real))]
    syn = open_dataset(args.synth)
    n = min(args.synth_clips, len(syn))
    syn_rows = [video_stats(syn.clip(i).hr) for i in range(n)]
    r, s = summarise(real_rows), summarise(syn_rows)
    lines = [f"| statistic | real ({len(real_rows)} clips of {Path(args.real).name}): mean (min-max) | "
             f"synthesis ({n} clips of {Path(args.synth).name}): mean (min-max) |", "|---|---|---|"]
    for key, label, fmt in ROWS:
        cell = [f"{fmt.format(x[key]['mean'])} ({fmt.format(x[key]['min'])}-{fmt.format(x[key]['max'])})" for x in (r, s)]
        lines.append(f"| {label} | {cell[0]} | {cell[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"real": real_rows, "synth": syn_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
