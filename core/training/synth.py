"""``mstt-stvsr synth``: synthetic satellite-video clips written as a training or test set
(Vimeo septuplet layout, ``clips``), or the georeferenced sample stack (``sample``).

Clips come from the real stills of tools/fetch_imagery.py (``imagery.IMAGERY_DIR``), the
training split or the held-out one; without them the ground is procedural. The same arguments
give the same files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..net.spec import N_OUT, SCALE
from .clips import DETAIL_TARGET, FIT_PSF_RANGE, PSF_RANGE, make_clip, psf_limits
from .imagery import IMAGERY_DIR


def write_septuplets(out, clips: int, size, split: str = "train", seed: int = 0, imagery=None,
                     frames: int = N_OUT, progress=True, psf_range=None, urban: float | None = None,
                     detail=None) -> Path:
    """Vimeo-septuplet layout: sequences/<clip>/0001/im1..im7.png + sep_{train,test}list.txt,
    and clips.json with each clip's parameters (``make_clip``'s info). ``frames`` > 7 (odd) makes
    long clips (im1 .. im<frames>); ``urban``: the share of procedural-city clips (default: as
    ``make_clip`` draws it); ``detail``: fit each clip's optics blur to it (``make_clip``). Each clip's folder gets its ``info.json`` after its frames, so a
    stopped run started again with the same arguments keeps the clips it finished (they are the
    ones it would make: each clip is deterministic from its seed)."""
    if frames < N_OUT or frames % 2 == 0:
        raise InputError(f"--frames {frames}: a clip has an odd number of HR frames, at least {N_OUT}")
    out = Path(out)
    listname = "sep_trainlist.txt" if split == "train" else "sep_testlist.txt"
    entries, infos = [], []
    it = range(clips)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"synth {split}", unit="clip")
    for i in it:
        clip_seed = seed * 100003 + i  # disjoint streams per (seed, i)
        kind = None if urban is None else "urban" if (i + 0.5) / clips <= urban else "real"
        rel = f"{i + 1:05d}/0001"
        d = out / "sequences" / rel
        made_with = dict(seed=clip_seed, size=list(np.broadcast_to(size, 2).tolist()), split=split, kind=kind,
                         psf_range=psf_range, **({} if detail is None else dict(detail=list(detail))))
        info = finished_clip(d, frames, made_with)
        if info is None:
            frames_u8, info = make_clip(clip_seed, size, frames, split, imagery, kind=kind, psf_range=psf_range,
                                        detail=detail)
            d.mkdir(parents=True, exist_ok=True)
            for t, f in enumerate(frames_u8):
                Image.fromarray(f).save(d / f"im{t + 1}.png", compress_level=1)
            info = dict(info, made_with=made_with)
            (d / "info.json").write_text(json.dumps(info))
        entries.append(rel)
        infos.append(dict(clip=rel, **{k: v for k, v in info.items() if k != "made_with"}))
    (out / listname).write_text("\n".join(entries) + "\n")
    (out / "clips.json").write_text(json.dumps(dict(split=split, seed=seed, size=list(np.broadcast_to(size, 2).tolist()),
                                                    imagery=str(imagery) if imagery else None,
                                                    psf_range=list(psf_limits(psf_range, detail)),
                                                    detail_range=None if detail is None else list(detail), frames=frames,
                                                    urban=urban, clips=infos), indent=1))
    return out


def finished_clip(d: Path, frames: int, made_with: dict) -> dict | None:
    """The info of a clip an earlier run finished in ``d`` with the same arguments, else None."""
    try:
        info = json.loads((d / "info.json").read_text())
    except (OSError, ValueError):
        return None
    made = json.loads(json.dumps(made_with))  # tuples as the JSON file holds them
    if info.get("made_with") != made or not all((d / f"im{t + 1}.png").is_file() for t in range(frames)):
        return None
    return info


# -- CLI ----------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (Vimeo septuplet layout; with --sample: the stack)")
    parser.add_argument("--clips", type=int, default=300, help="number of clips (default 300)")
    parser.add_argument("--size", type=int, default=384, help="HR clip size in pixels, multiple of 4 (default 384)")
    parser.add_argument("--frames", type=int, default=N_OUT,
                        help=f"HR frames per clip, odd (default {N_OUT}; more make long clips of (frames+1)/2 inputs)")
    parser.add_argument("--urban", type=float, default=None, metavar="SHARE",
                        help="share of procedural-city clips, 0-1 (default: drawn per clip, about 0.6)")
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="which imagery to use: train, or the held-out test stills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imagery", default=None,
                        help=f"folder of tools/fetch_imagery.py (default {IMAGERY_DIR}); "
                             "procedural ground if missing")
    parser.add_argument("--psf", default=None, metavar="MIN,MAX",
                        help=f"range of the optics' Gaussian blur sigma in HR px (default {PSF_RANGE[0]},{PSF_RANGE[1]}; "
                             f"with --detail {FIT_PSF_RANGE[0]},{FIT_PSF_RANGE[1]})")
    parser.add_argument("--detail", nargs="?", const="real", default=None, metavar="MIN,MAX",
                        help="fit each clip's blur, within the --psf range, to a fine-detail level drawn from "
                             "MIN,MAX (videostats.detail); alone: real video's range, "
                             f"{DETAIL_TARGET[0]},{DETAIL_TARGET[1]} (default: the blur drawn from the --psf range)")
    parser.add_argument("--sample", action="store_true", help="write the georeferenced sample stack instead")
    parser.add_argument("--quiet", action="store_true")


def parse_psf(text: str | None):
    """``--psf MIN,MAX`` -> (min, max), or None for the default range."""
    if not text:
        return None
    try:
        psf = tuple(float(v) for v in text.split(","))
    except ValueError:
        psf = ()
    if len(psf) != 2 or not 0 <= psf[0] <= psf[1]:
        raise InputError(f"--psf {text!r}: expected MIN,MAX with 0 <= MIN <= MAX (HR pixels)")
    return psf


def parse_detail(text: str | None):
    """``--detail`` -> None (not given), DETAIL_TARGET ("real") or (min, max)."""
    if text is None:
        return None
    if text == "real":
        return DETAIL_TARGET
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--detail {text!r}: expected MIN,MAX (log10 band ratios, such as "
                         f"{DETAIL_TARGET[0]},{DETAIL_TARGET[1]})") from None
    if not lo <= hi:
        raise InputError(f"--detail {text!r}: MIN is above MAX")
    return lo, hi


def main(args) -> int:
    imagery = Path(args.imagery) if args.imagery else IMAGERY_DIR
    if args.imagery and not imagery.is_dir():
        raise InputError(f"imagery folder {imagery} does not exist (run tools/fetch_imagery.py)")
    if not imagery.is_dir():
        imagery = None
    if args.sample:
        from .sample import make_sample_stack  # GeoTIFFs: rasterio, which clip datasets never need

        paths = make_sample_stack(args.out, imagery)
        if not args.quiet:
            print("\n".join(str(p) for p in paths))
        return 0
    if args.size % SCALE:
        raise InputError(f"--size {args.size} is not a multiple of {SCALE}")
    write_septuplets(args.out, args.clips, args.size, args.split, args.seed, imagery, args.frames,
                     progress=not args.quiet, psf_range=parse_psf(args.psf), urban=args.urban,
                     detail=parse_detail(args.detail))
    return 0
