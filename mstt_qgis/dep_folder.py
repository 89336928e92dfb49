"""The dependency folder's contents: what is installed there, taking a project out by its RECORD,
moving a finished install in, and the rule that nothing in it may hide a module QGIS uses.

pip installs into a staging folder beside the dependency folder (same file system, so moves are
renames); only a complete, screened install is moved in, so a failed or canceled install leaves
the folder as it was.
"""
from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
from pathlib import Path

from .install_plan import EXTENSIONS, normalize, spec_is_compiled

NOT_MODULES = (".dist-info", ".data", ".egg-info", ".pth")


def remove_project(folder: Path, name: str) -> bool:
    """Delete an installed project's files (as listed in its RECORD) and its dist-info."""
    key = normalize(name)
    removed = False
    for info in folder.glob("*.dist-info"):
        if normalize(info.name[: -len(".dist-info")].rsplit("-", 1)[0]) != key:
            continue
        record = info / "RECORD"
        dirs = set()
        for line in record.read_text(encoding="utf-8").splitlines() if record.is_file() else []:
            rel = line.rsplit(",", 2)[0]
            path = (folder / rel).resolve()
            if folder.resolve() in path.parents and path.is_file():
                path.unlink()
                dirs.update(p for p in path.parents if folder.resolve() in p.parents)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            shutil.rmtree(d / "__pycache__", ignore_errors=True)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        shutil.rmtree(info, ignore_errors=True)
        removed = True
    return removed


def move_in(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging folders (several projects share ``bin/``, namespace
    packages), replacing files."""
    if src.is_dir() and dst.is_dir() and not dst.is_symlink():
        for child in src.iterdir():
            move_in(child, dst / child.name)
        src.rmdir()
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)


def module_name(entry: Path) -> str | None:
    """The top-level import name an entry of a site folder provides, if any."""
    if entry.name.endswith(NOT_MODULES) or entry.name == "__pycache__":
        return None
    name = entry.name.split(".")[0] if entry.is_file() else entry.name
    if entry.is_file() and not entry.name.endswith((".py",) + EXTENSIONS):
        return None
    return name if name.isidentifier() else None


def _where(module) -> list:
    file = getattr(module, "__file__", None)
    return [file] if file else [str(p) for p in getattr(module, "__path__", [])]


def screen(staging: Path, folders_of_ours, log) -> list:
    """Apply the no-shadowing rule to a finished install before it is moved in:

    - a module QGIS has already imported from elsewhere is not copied: this QGIS would never
      use the copy, and a later one would find it first (setuptools' ``_distutils_hack``,
      which Python's site loads at start-up, is the usual case);
    - a module that would hide a compiled one QGIS's Python can import from elsewhere stops
      the install (a second numpy or cv2 beside QGIS's);
    - pure-Python modules newer than QGIS's own stay: that is what the folder is for.
    Returns the names not copied."""
    ours = [Path(p).resolve() for p in folders_of_ours]
    elsewhere = [p for p in sys.path if p and Path(p).resolve() not in ours]
    dropped = []
    for entry in sorted(staging.iterdir()):
        name = module_name(entry)
        if name is None:
            continue
        module = sys.modules.get(name)
        places = _where(module) if module is not None else []
        if places and not any(Path(p).resolve().is_relative_to(o) for p in places for o in ours):
            log(f"not copied: {entry.name} (QGIS has already loaded {name} from {places[0]})")
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            dropped.append(name)
            continue
        spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
        if spec is not None and spec_is_compiled(spec):
            raise RuntimeError(f"{entry.name} would hide the compiled {name} that QGIS's Python has "
                               f"({spec.origin or spec.submodule_search_locations[0]}); nothing was installed")
    return dropped


def shadowed(folder: Path, modules=None) -> list:
    """Names of already-imported top-level modules that the folder, put first on ``sys.path``,
    would resolve elsewhere than where they were loaded from: must be empty."""
    modules = sys.modules if modules is None else modules
    out = []
    for entry in folder.iterdir() if folder.is_dir() else []:
        name = module_name(entry)
        module = modules.get(name) if name else None
        if module is None:
            continue
        if not any(Path(p).resolve().is_relative_to(folder.resolve()) for p in _where(module)):
            out.append(name)
    return sorted(out)
