#!/usr/bin/env python3
"""Collect the real aerial imagery we train and evaluate on, into build/imagery/ (idempotent).

Jilin-189 cannot be reached from here, so synthetic satellite video is cut from real stills that
ship inside installable packages:

* PyPI ``deepforest==2.1.0`` (MIT): NEON airborne RGB orthophotos, 10 cm, in ``deepforest/data``.
  Only the wheel is downloaded (``pip download --no-deps``) and the images unzipped from it;
  deepforest itself and its dependencies are never installed.
* Debian ``opencv-doc`` (OpenCV samples, BSD-3-Clause / Apache-2.0): ``aero1.jpg``, ``aero3.jpg``
  (oblique aerial photos of built-up areas) and ``building.jpg`` (a facade: used only as roof /
  wall texture, never as a scene).
* PyPI ``solaris==0.4.0`` (Apache-2.0, CosmiQ Works, who ran SpaceNet): five WorldView-style
  satellite crops of cities in ``solaris/data`` (Las Vegas 0.3 m, Atlanta 0.5 m, three of
  Rotterdam 0.5 m with their 1 m multispectral), the only real urban satellite imagery at
  Jilin-1's scale we found in any registry package. Only the wheel is downloaded; the 16-bit
  panchromatic crops are written as 8-bit RGB PNGs (``spacenet_png``: Rotterdam pan-sharpened
  with its multispectral, the others grey), stretched to real Jilin-1 video's brightness.

Each file is checked against its SHA-256, and ``SOURCES.md`` records where it came from and its
licence. Run again: nothing is downloaded when the files are already there.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mstt_stvsr.core.checksum import file_sha256

try:
    from mstt_stvsr.core.training.imagery import IMAGERY_DIR as DEFAULT_OUT
except ImportError:
    raise SystemExit("mstt_stvsr is not importable: run `make setup` and use .venv/bin/python") from None

DEEPFOREST = "deepforest==2.1.0"
NEON = {  # file in deepforest/data -> sha256
    "2019_YELL_2_528000_4978000_image_crop2.png": "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
    "2019_YELL_2_541000_4977000_image_crop.png": "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
    "OSBS_029.png": "d9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee",
    "OSBS_029.tif": "8521dbb5e8063d37d61895867dfcca7476491d1345103dc1b3fd96f71b186353",
    "SOAP_031.png": "506af051225465bd575e0e3ca0da1e6b8a269464d2144a0415829da78fcd1527",
    "SOAP_061.png": "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
}
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV = {
    "aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
    "aero3.jpg": "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4",
    "building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
}

SOLARIS = "solaris==0.4.0"
# output PNG -> (panchromatic file in solaris/data, its multispectral (B, G, R, NIR) or None, sha256s)
SPACENET = {
    "vegas.png": ("road_mask_input.tif", None,
                  "7c561b4a96190dfacc324a03667301935e8868bddacf0496dd7d369224f0ea87", None),
    "atlanta.png": ("sample_geotiff.tif", None,
                    "f135d521b13a7e16a97983df976579217afbb07550c878115e0c71c36de193c5", None),
    "rotterdam1.png": ("preproc_tutorial/pan1.tif", "preproc_tutorial/ms1.tif",
                       "14b6857c26649d7fc3fb7d37d3431a40a9440d2d3646018890829e751aa520f8",
                       "5c0b92a1b2b9c0fddf6d568fa2f86909b868780e0b06ada9c4207aed4e12a63c"),
    "rotterdam2.png": ("preproc_tutorial/pan2.tif", "preproc_tutorial/ms2.tif",
                       "06f4f1143a0cf6c7830e545cac2c31a2e6fc385bbcb74b0c147bfcab3095f1e7",
                       "4c55519eb339995426bce80e9f6b5c8a8370200833184b4236ce55cfaae4c1f5"),
    "rotterdam3.png": ("preproc_tutorial/pan3.tif", "preproc_tutorial/ms3.tif",
                       "61a1adee9de7c568c21596ff6238f92d7db6c0c7c3c9091e705cfdea981d0414",
                       "3cf920a37bcd108d0181f948489017f263562e07e7b345c2a99671d8cd0e069b"),
}
# Brightness and colour of real Jilin-1 video (viso012, all 9 folders, first frame, mean of RGB): median
# 0.46-0.52, 5th percentile 0.09-0.11, 95th 0.83-0.90. The linear 11-bit panchromatic crops
# have their median near 0.1-0.25 after a plain stretch, so a gamma puts it at this median.
VIDEO_MEDIAN = 0.48
# Their colourfulness, the mean over pixels of max(R, G, B) - min(R, G, B): 0.066-0.075.
VIDEO_SATURATION = 0.07
STRETCH_PERCENTILES = (1.0, 99.5)
WARP_GSD = 0.3  # m: the Las Vegas crop is in degrees (0.30 x 0.24 m pixels); warped to UTM at its pan GSD

SOURCES_MD = """# Imagery used for synthetic satellite video (written by tools/fetch_imagery.py)

| file | from | what | licence |
|---|---|---|---|
{rows}

* NEON files: PyPI wheel `{deepforest}` (package licence MIT, (c) 2019 Ben Weinstein), folder
  `deepforest/data/`. They are crops of NEON AOP airborne RGB orthophotos (10 cm ground sampling;
  YELL = Yellowstone, UTM 12N; OSBS = Ordway-Swisher, UTM 17N; SOAP = Soaproot Saddle, UTM 11N).
  NEON data are published openly by the US National Ecological Observatory Network (Battelle,
  NSF); cite "NEON (National Ecological Observatory Network). High-resolution orthorectified
  camera imagery mosaic (DP3.30010.001)".
* SpaceNet files: PyPI wheel `{solaris}` (package licence Apache-2.0, CosmiQ Works), folder
  `solaris/data/`: `road_mask_input.tif` (Las Vegas, 0.3 m, warped from EPSG:4326 to UTM),
  `sample_geotiff.tif` (Atlanta, 0.5 m), `preproc_tutorial/pan1-3.tif` with `ms1-3.tif`
  (Rotterdam, 0.5 m pan, 1 m multispectral in the order blue, green, red, NIR). They look like
  SpaceNet crops (Maxar WorldView imagery, which SpaceNet publishes under CC BY-SA 4.0); the
  package does not say. Written as 8-bit RGB (`spacenet_png` in tools/fetch_imagery.py).
* OpenCV files: Debian package `opencv-doc` ({opencv_version}), `{opencv_dir}`; OpenCV sample
  data, licence BSD-3-Clause / Apache-2.0 (see /usr/share/doc/opencv-doc/copyright).

Split (see core/training/imagery.py `CATALOGUE`): training uses YELL_528000, OSBS_029, SOAP_031, aero1
and the five SpaceNet crops;
evaluation and the sample stack use only the held-out YELL_541000, SOAP_061 and aero3.
"""


def have(path: Path, digest: str) -> bool:
    return path.is_file() and file_sha256(path) == digest


def fetch_neon(out: Path, log) -> None:
    dst = out / "neon"
    if all(have(dst / n, d) for n, d in NEON.items()):
        log(f"neon: cached in {dst}")
        return
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"neon: pip download --no-deps {DEEPFOREST}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", DEEPFOREST, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("deepforest-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name, digest in NEON.items():
                target = dst / name
                with z.open(f"deepforest/data/{name}") as src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
                if file_sha256(target) != digest:
                    raise SystemExit(f"{target}: SHA-256 mismatch (wheel changed?)")
            with z.open("deepforest-2.1.0.dist-info/licenses/LICENSE") as src:
                (dst / "LICENSE.deepforest").write_bytes(src.read())


def fetch_opencv(out: Path, log) -> None:
    dst = out / "opencv"
    if all(have(dst / n, d) for n, d in OPENCV.items()):
        log(f"opencv: cached in {dst}")
        return
    if not all((OPENCV_DIR / n).is_file() for n in OPENCV):
        log("opencv: apt-get install opencv-doc")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "opencv-doc"], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    dst.mkdir(parents=True, exist_ok=True)
    for name, digest in OPENCV.items():
        shutil.copyfile(OPENCV_DIR / name, dst / name)
        if file_sha256(dst / name) != digest:
            raise SystemExit(f"{dst / name}: SHA-256 mismatch (opencv-doc changed?)")


def valid_window(valid: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of a window free of no-data (pan2/pan3 start with a band of zeros;
    the warped Las Vegas crop has empty corners): the edge row or column with the largest share
    of no-data is cut until none is left."""
    r0, r1, c0, c1 = 0, valid.shape[0], 0, valid.shape[1]
    while r1 - r0 > 1 and c1 - c0 > 1:
        win = ~valid[r0:r1, c0:c1]
        if not win.any():
            return slice(r0, r1), slice(c0, c1)
        edges = (win[0].mean(), win[-1].mean(), win[:, 0].mean(), win[:, -1].mean())
        k = int(np.argmax(edges))
        r0, r1, c0, c1 = r0 + (k == 0), r1 - (k == 1), c0 + (k == 2), c1 - (k == 3)
    raise SystemExit("a SpaceNet crop has no window free of no-data")


def video_stretch(pan: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Panchromatic DN -> [0, 1]: percentile stretch, then the gamma that puts the median at
    real video's (VIDEO_MEDIAN)."""
    lo, hi = np.percentile(pan[valid], STRETCH_PERCENTILES)
    x = np.clip((pan.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1)
    med = float(np.median(x[valid]))
    return x ** (np.log(VIDEO_MEDIAN) / np.log(min(max(med, 1e-3), 0.999)))


def band_gains(ms_paths) -> np.ndarray:
    """Blue, green, red gains that make the median of the pooled multispectral crops grey (one
    acquisition: one balance for all three; per crop, the port's water would tint the rest)."""
    import rasterio

    pooled = []
    for path in ms_paths:
        with rasterio.open(path) as ds:
            b = ds.read([1, 2, 3]).reshape(3, -1)
        pooled.append(b[:, (b > 0).all(0)])
    med = np.median(np.concatenate(pooled, 1), 1)
    return med.mean() / np.maximum(med, 1e-6)


def pansharpen(grey: np.ndarray, ms_bgr: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """(H, W) stretched pan and (3, h, w) multispectral blue, green, red -> (H, W, 3) RGB: the
    pan times the multispectral's chroma (bands times ``gains``, each over their mean,
    upsampled), toned down to real video's colourfulness (VIDEO_SATURATION) where it is more."""
    import cv2

    bands = [b.astype(np.float32) * float(g) for b, g in zip(ms_bgr, gains)][::-1]
    rgb = np.stack([cv2.resize(b, grey.shape[::-1], interpolation=cv2.INTER_CUBIC) for b in bands], -1)
    rgb = np.maximum(rgb, 1e-6)
    chroma = np.clip(rgb / rgb.mean(-1, keepdims=True), 0.5, 2.0)
    out = grey[..., None] * chroma
    sat = float(np.mean(out.max(-1) - out.min(-1)))
    if sat > VIDEO_SATURATION:
        chroma = 1 + (chroma - 1) * (VIDEO_SATURATION / sat)
    return np.clip(grey[..., None] * chroma, 0, 1)


def read_metric(path: Path):
    """(pan (H, W) float, valid mask): the band as read, or warped to UTM when its CRS is
    geographic (degrees: the Las Vegas crop), so that pixels are square on the ground. 0 DN is
    no-data (SpaceNet's convention: outside the strip)."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(path) as ds:
        band = ds.read(1).astype(np.float32)
        if not ds.crs.is_geographic:
            return band, band > 0
        lon, lat = ds.lnglat()
        dst_crs = f"EPSG:{(32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1}"
        transform, w, h = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds,
                                                     resolution=WARP_GSD)
        out, inside = np.zeros((h, w), np.float32), np.zeros((h, w), np.uint8)
        where = dict(src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform, dst_crs=dst_crs)
        reproject(band, out, resampling=Resampling.cubic, **where)
        # the footprint, warped on its own: dark ground (or a cubic undershoot) is not no-data
        reproject((band > 0).astype(np.uint8), inside, resampling=Resampling.nearest, dst_nodata=0, **where)
        return out, inside > 0


def spacenet_png(pan_path: Path, ms_path: Path | None, target: Path, gains: np.ndarray) -> None:
    """One SpaceNet crop as an 8-bit RGB PNG at its panchromatic resolution (see the module doc)."""
    import rasterio
    from PIL import Image

    pan, valid = read_metric(pan_path)
    rows, cols = valid_window(valid)
    grey = video_stretch(pan, valid)
    if ms_path is None:
        rgb = np.repeat(grey[..., None], 3, -1)
    else:
        with rasterio.open(ms_path) as ds:
            rgb = pansharpen(grey, ds.read([1, 2, 3]), gains)
    Image.fromarray(np.rint(rgb[rows, cols] * 255).astype(np.uint8)).save(target)


def fetch_spacenet(out: Path, log) -> None:
    dst = out / "spacenet"
    if all((dst / n).is_file() for n in SPACENET):
        log(f"spacenet: cached in {dst}")
        return
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"spacenet: pip download --no-deps {SOLARIS}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", SOLARIS, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("solaris-*.whl"))
        files = {}
        with zipfile.ZipFile(wheel) as z:
            for pan, ms, pan_sha, ms_sha in SPACENET.values():
                for member, digest in ((pan, pan_sha), (ms, ms_sha)):
                    if member is None:
                        continue
                    local = Path(tmp) / member.replace("/", "_")
                    with z.open(f"solaris/data/{member}") as src, open(local, "wb") as f:
                        shutil.copyfileobj(src, f)
                    if file_sha256(local) != digest:
                        raise SystemExit(f"{member}: SHA-256 mismatch ({SOLARIS} changed?)")
                    files[member] = local
        gains = band_gains([files[ms] for _, ms, _, _ in SPACENET.values() if ms])
        for name, (pan, ms, _, _) in SPACENET.items():
            spacenet_png(files[pan], files[ms] if ms else None, dst / name, gains)
        (dst / "LICENSE.solaris").write_text("solaris (CosmiQ Works) is licensed Apache-2.0; see SOURCES.md\n")


def opencv_version() -> str:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "opencv-doc"], capture_output=True,
                              text=True, check=True).stdout.strip() or "?"
    except Exception:
        return "?"


def write_sources(out: Path) -> None:
    rows = [f"| neon/{n} | PyPI {DEEPFOREST} | NEON orthophoto crop, 10 cm | MIT (package), NEON open data |"
            for n in NEON]
    rows += [f"| opencv/{n} | Debian opencv-doc | {'aerial photo, oblique' if n.startswith('aero') else 'facade photo (texture only)'}"
             f" | BSD-3-Clause / Apache-2.0 |" for n in OPENCV]
    place = {"vegas": "Las Vegas", "atlanta": "Atlanta"}
    rows += [f"| spacenet/{n} | PyPI {SOLARIS} | satellite crop of {place.get(n[:-4], 'Rotterdam')}, "
             f"{'0.3' if n == 'vegas.png' else '0.5'} m, {'pan-sharpened' if SPACENET[n][1] else 'grey'} | "
             "Apache-2.0 (package); looks like SpaceNet (CC BY-SA 4.0) |" for n in SPACENET]
    (out / "SOURCES.md").write_text(SOURCES_MD.format(
        rows="\n".join(rows), deepforest=DEEPFOREST, solaris=SOLARIS, opencv_version=opencv_version(), opencv_dir=OPENCV_DIR))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"cache folder (default {DEFAULT_OUT})")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"fetch_imagery: {m}", file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    fetch_neon(args.out, log)
    fetch_opencv(args.out, log)
    fetch_spacenet(args.out, log)
    write_sources(args.out)
    log(f"done: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
