"""Real video beside the synthesis: the statistics of core/training/videostats.py, as a table.

    python tools/video_stats.py --real ../shared/realvideo/viso012 --synth build/data/train_city \
        [build/data/train_detail ...] [--synth-clips 40] [--out build/eval/video_stats.md]

Real clips are read whole (native frames); synthetic clips are read from training sets on disk
(the first N clips of each, their HR frames as written; a column each), so the table shows what
training saw.
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
    ap.add_argument("--synth", required=True, nargs="+", help="synthetic training sets (mstt-stvsr synth)")
    ap.add_argument("--synth-clips", type=int, default=40)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    real = FrameFoldersDataset([args.real])
    real_rows = [video_stats(real.clip(i).hr) for i in range(len(real))]
    columns = [(f"real ({len(real_rows)} clips of {Path(args.real).name})", real_rows)]
    for root in args.synth:
        syn = open_dataset(root)
        n = min(args.synth_clips, len(syn))
        columns.append((f"synthesis ({n} clips of {Path(root).name})", [video_stats(syn.clip(i).hr) for i in range(n)]))
    sums = [summarise(rows) for _, rows in columns]
    lines = ["| statistic | " + " | ".join(f"{name}: mean (min-max)" for name, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = [f"{fmt.format(x[key]['mean'])} ({fmt.format(x[key]['min'])}-{fmt.format(x[key]['max'])})" for x in sums]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"real": real_rows, **{
            Path(root).name: rows for root, (_, rows) in zip(args.synth, columns[1:])}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
