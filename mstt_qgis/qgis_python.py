"""QGIS's own Python interpreter as a program, for pip.

Inside QGIS, ``sys.executable`` is QGIS itself (qgis-bin.exe, QGIS.app/Contents/MacOS/QGIS,
/usr/bin/qgis), so the interpreter is looked for where each platform's QGIS keeps it, and each
candidate must report the same Python version as the one running QGIS before it is used.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def candidates(system: str, exec_prefix, prefix_path=None, executable=None, version=sys.version_info) -> list:
    """Where QGIS's Python lives, most likely first. ``exec_prefix``: ``sys.exec_prefix``;
    ``prefix_path``: ``QgsApplication.prefixPath()``; ``executable``: ``sys.executable``."""
    exec_prefix = Path(exec_prefix)
    mm = f"{version[0]}.{version[1]}"
    found = []
    if system == "Windows":  # OSGeo4W and the standalone installer: <root>\apps\Python3xx\python.exe
        found += [exec_prefix / "python.exe", exec_prefix / "python3.exe"]
        if prefix_path:  # <root>\apps\qgis: its Python is a sibling
            found += sorted(Path(prefix_path).parent.glob(f"Python{version[0]}{version[1]}/python.exe"))
    else:
        found += [exec_prefix / "bin" / f"python{mm}", exec_prefix / "bin" / "python3"]
        if prefix_path:  # macOS: QGIS.app/Contents/MacOS/bin/python3
            found += [Path(prefix_path) / "bin" / f"python{mm}", Path(prefix_path) / "bin" / "python3"]
    if executable and Path(executable).name.lower().startswith("python"):
        found.append(Path(executable))  # plain Python (scripts, tests): itself
    unique = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def find_python(system: str | None = None, prefix_path: str | None = None) -> str:
    """The first candidate that runs and is the same Python version; else the most likely path
    (so that messages still show where QGIS's Python should be)."""
    import platform

    system = system or platform.system()
    if prefix_path is None:
        try:
            from qgis.core import QgsApplication

            prefix_path = QgsApplication.prefixPath()
        except ImportError:
            prefix_path = None
    paths = candidates(system, sys.exec_prefix, prefix_path, sys.executable)
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for path in paths:
        if path.is_file() and same_version(path, want):
            return str(path)
    return str(paths[0])


def same_version(path, want: str) -> bool:
    try:
        out = subprocess.run([str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, **hidden_window())
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == want


def hidden_window() -> dict:
    """subprocess arguments that keep a console window from flashing up on Windows."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}
