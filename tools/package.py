"""Build dist/mstt_stvsr-<version>.zip for QGIS's "Install from ZIP" (Plugins > Manage and Install).

The ZIP holds one top folder, ``mstt_stvsr/`` (the plugin's module name), with only what the
plugin runs: the entry point, metadata, the engine (core/), the QGIS side (mstt_qgis/), the
icon, the shipped weights, the sample stack and the training configs (a fine-tune's settings).
No venv, build, tests, caches or dist. The archive is reproducible: sorted entries, fixed timestamps. Standard library only, so it runs
before `make setup`.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOP = "mstt_stvsr"
FILES = ["__init__.py", "metadata.txt", "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md"]
# configs: the training config a fine-tune starts from (core/training/finetune.py)
TREES = {"core": ("*.py",), "mstt_qgis": ("*.py",), "resources": ("*",), "configs": ("*.toml",)}
SKIP_PARTS = {"__pycache__", ".git", ".pytest_cache", ".venv", "build", "dist", "tests", "demo_out"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".part", ".tmp", ".aux.xml", ".orig", ".rej", "~")
REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
EPOCH = (2020, 1, 1, 0, 0, 0)


def read_metadata(path: Path) -> dict:
    meta = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            meta[key.strip()] = value.strip()
    missing = [k for k in REQUIRED if not meta.get(k)]
    if missing:
        raise SystemExit(f"{path}: missing {', '.join(missing)} (QGIS's plugin manager needs them)")
    return meta


def plugin_files(root: Path = REPO) -> list:
    """Relative paths of the files the plugin needs, sorted."""
    out = [Path(f) for f in FILES if (root / f).is_file()]
    for tree, patterns in TREES.items():
        for pattern in patterns:
            for p in (root / tree).rglob(pattern):
                rel = p.relative_to(root)
                if not p.is_file() or SKIP_PARTS.intersection(rel.parts) or p.name.startswith("."):
                    continue
                if p.name.endswith(SKIP_SUFFIXES):
                    continue
                out.append(rel)
    return sorted(set(out))


def build(dist: Path, root: Path = REPO) -> Path:
    meta = read_metadata(root / "metadata.txt")
    icon = meta.get("icon")
    if icon and not (root / icon).is_file():
        raise SystemExit(f"metadata.txt: icon {icon} does not exist")
    files = plugin_files(root)
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"{TOP}-{meta['version']}.zip"
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in files:
            info = zipfile.ZipInfo(f"{TOP}/{rel.as_posix()}", EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, (root / rel).read_bytes())
    tmp.replace(target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    target = build(args.dist)
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        size = sum(i.file_size for i in zf.infolist())
    weights = [n for n in names if n.endswith((".safetensors", ".pth"))]
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB, {len(names)} files, {size / 1e6:.1f} MB unpacked)")
    if not weights:
        print("warning: no weights inside (resources/weights/ is empty); users must pass WEIGHTS", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
