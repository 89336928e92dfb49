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
* OpenCV files: Debian package `opencv-doc` ({opencv_version}), `{opencv_dir}`; OpenCV sample
  data, licence BSD-3-Clause / Apache-2.0 (see /usr/share/doc/opencv-doc/copyright).

Split (see core/training/imagery.py `CATALOGUE`): training uses YELL_528000, OSBS_029, SOAP_031, aero1;
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
    (out / "SOURCES.md").write_text(SOURCES_MD.format(
        rows="\n".join(rows), deepforest=DEEPFOREST, opencv_version=opencv_version(), opencv_dir=OPENCV_DIR))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"cache folder (default {DEFAULT_OUT})")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"fetch_imagery: {m}", file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    fetch_neon(args.out, log)
    fetch_opencv(args.out, log)
    write_sources(args.out)
    log(f"done: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
