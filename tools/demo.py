"""`make demo`: super-resolve the bundled sample stack through qgis_process, then write images a
person can look at.

Runs ``.venv/bin/qgis_process run mstt:spacetimesr`` on ``resources/sample/*.tif`` (the same path
a QGIS user's Toolbox run takes), puts the frames in ``demo_out/frames/``, and writes
``demo_out/preview.png`` (top: an input frame upscaled bicubic x4 next to ours; bottom: the new
in-between frame as the bicubic blend of its neighbours next to ours) and ``demo_out/frames.gif``
(all output frames, animated).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "resources" / "sample"
OUT = REPO / "demo_out"
QGIS_PROCESS = REPO / ".venv" / "bin" / "qgis_process"
DEFAULT_WEIGHTS = REPO / "resources" / "weights" / "mstt_default.safetensors"


def to_uint8(data):
    """(bands, h, w) of any dtype -> (h, w, 3) uint8 for display (2-98 % stretch unless 8-bit)."""
    import numpy as np

    rgb = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb.transpose(1, 2, 0))
    x = rgb.astype(np.float64)
    lo, hi = np.nanpercentile(x, 2), np.nanpercentile(x, 98)
    x = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.ascontiguousarray((np.nan_to_num(x) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def read_rgb(path):
    import rasterio

    with rasterio.open(path) as ds:
        return to_uint8(ds.read())


def labelled(img, text):
    """An image with a caption bar above it."""
    from PIL import Image, ImageDraw

    bar = 22
    out = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
    out.paste(img, (0, bar))
    ImageDraw.Draw(out).text((6, 5), text, fill=(0, 0, 0))
    return out


def grid(rows):
    from PIL import Image

    width = max(sum(im.width for im in row) for row in rows)
    height = sum(max(im.height for im in row) for row in rows)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for row in rows:
        x = 0
        for im in row:
            sheet.paste(im, (x, y))
            x += im.width
        y += max(im.height for im in row)
    return sheet


def write_preview(inputs, outputs, path):
    """Bicubic x4 of an input frame vs ours at the same time; and for the new frame right after
    it, the bicubic blend of its two neighbours (what simple interpolation gives) vs ours."""
    from PIL import Image

    from mstt_stvsr.core.net.spec import SCALE

    k = (len(inputs) - 1) // 2  # a middle input frame, and the new frame after it
    lr = [Image.fromarray(read_rgb(p)) for p in inputs[k:k + 2]]
    up = [im.resize((im.width * SCALE, im.height * SCALE), Image.BICUBIC) for im in lr]
    ours_in, ours_new = (Image.fromarray(read_rgb(outputs[2 * k + i])) for i in (0, 1))
    rows = [
        [labelled(up[0], f"input {Path(inputs[k]).name}, bicubic x4"),
         labelled(ours_in, f"MSTT {Path(outputs[2 * k]).name}")],
        [labelled(Image.blend(up[0], up[1], 0.5), "new frame: bicubic x4, average of the two neighbours"),
         labelled(ours_new, f"MSTT {Path(outputs[2 * k + 1]).name} (new frame)")],
    ]
    grid(rows).save(path)


def write_gif(outputs, path, ms_per_frame=250):
    from PIL import Image

    frames = [Image.fromarray(read_rgb(p)).convert("P", palette=Image.ADAPTIVE, colors=255) for p in outputs]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0, optimize=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights file (default: the shipped weights)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for everything (default: demo_out/)")
    args = parser.parse_args(argv)

    inputs = sorted(str(p) for p in SAMPLE.glob("*.tif"))
    if len(inputs) < 2:
        print(f"demo: no sample stack in {SAMPLE} (expected frame_00.tif, frame_01.tif, ...). "
              "Regenerate it with: .venv/bin/python tools/make_sample.py", file=sys.stderr)
        return 1
    weights = args.weights or DEFAULT_WEIGHTS
    if not weights.is_file():
        print(f"demo: no weights at {weights}. The shipped weights are missing from this checkout; "
              "train them (`.venv/bin/mstt-stvsr train ...`) or pass --weights FILE "
              "(make demo DEMO_ARGS='--weights FILE').", file=sys.stderr)
        return 1
    if not QGIS_PROCESS.exists():
        print(f"demo: {QGIS_PROCESS} is missing; run `make setup` first", file=sys.stderr)
        return 1

    # QGIS writes statistics (.aux.xml) beside the rasters it opens: work on copies, not the repo's
    in_dir = args.out / "input"
    in_dir.mkdir(parents=True, exist_ok=True)
    inputs = [str(shutil.copy2(p, in_dir / Path(p).name)) for p in inputs]
    frames_dir = args.out / "frames"
    cmd = [str(QGIS_PROCESS), "run", "mstt:spacetimesr", "--", *[f"INPUT={p}" for p in inputs],
           f"DEVICE={args.device}", f"OUTPUT={frames_dir}", "OVERWRITE=true"]
    if args.weights:
        cmd.append(f"WEIGHTS={weights}")
    print("== " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        print(f"demo: qgis_process failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    outputs = sorted(str(p) for p in frames_dir.glob("*_t[0-9][0-9][0-9]*.tif"))
    if len(outputs) != 2 * len(inputs) - 1:
        print(f"demo: expected {2 * len(inputs) - 1} frames in {frames_dir}, found {len(outputs)}", file=sys.stderr)
        return 1
    preview, gif = args.out / "preview.png", args.out / "frames.gif"
    write_preview(inputs, outputs, preview)
    write_gif(outputs, gif)
    print(f"\n== demo done in {time.perf_counter() - t0:.0f} s: {len(inputs)} frames in, {len(outputs)} out")
    print(f"   inputs (copies of {SAMPLE.relative_to(REPO)}/):  {in_dir}/")
    print(f"   frames (GeoTIFF, open them in QGIS): {frames_dir}/")
    print(f"   side-by-side preview:                {preview}")
    print(f"   animation of the output frames:      {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
