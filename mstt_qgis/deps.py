"""The engine's Python packages, and how to install the missing ones into QGIS's own Python.

QGIS runs its own Python interpreter (on Debian: /usr/bin/python3 embedded in QGIS), not a
virtualenv's, and it has no torch. Debian's Python refuses ``pip install --user`` (PEP 668), so
packages go into a folder of the QGIS profile with ``pip install --target``; the plugin puts that
folder on ``sys.path`` only when the algorithm runs, and first: torch needs the newer
typing_extensions/sympy that pip put beside it, not older copies from the system. numpy is never
taken from pip on its own terms: the command pins QGIS's own version (GDAL's bindings are built
against it). Nothing here is imported at QGIS start-up.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

TORCH_VERSION = "2.13.0"  # the version the Makefile pins and the tests run
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEPS_FOLDER = "mstt_stvsr_deps"
# import name -> (pip name, Debian package); numpy/rasterio/OpenCV must match QGIS's GDAL and
# numpy on Debian, so they come from apt there, never from pip.
MODULES = {
    "numpy": ("numpy", "python3-numpy"),
    "rasterio": ("rasterio", "python3-rasterio"),
    "cv2": ("opencv-python-headless", "python3-opencv"),
    "torch": ("torch", None),
    "safetensors": ("safetensors", None),
}


def deps_folder(settings_dir) -> Path:
    """Where the install command puts packages: inside the QGIS profile, so a plugin upgrade
    (which replaces the plugin folder) keeps them."""
    return Path(settings_dir) / "python" / DEPS_FOLDER


def add_deps_folder(folder) -> bool:
    """Put the dependency folder first on sys.path if it exists (no QGIS restart needed)."""
    folder = str(folder)
    if not os.path.isdir(folder) or folder in sys.path:
        return False
    sys.path.insert(0, folder)
    importlib.invalidate_caches()
    return True


def missing_modules(names=tuple(MODULES)) -> dict:
    """{import name: reason} for each module that cannot be imported (really imported: a
    half-installed torch fails only then)."""
    missing = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or OSError from a broken native library
            missing[name] = f"{type(exc).__name__}: {exc}"
    return missing


def qgis_python() -> str:
    """The interpreter QGIS embeds (sys.executable is QGIS itself inside QGIS)."""
    v = sys.version_info
    if os.name == "nt":
        cand = Path(sys.exec_prefix) / "python.exe"
    else:
        cand = Path(sys.exec_prefix) / "bin" / f"python{v.major}.{v.minor}"
    if cand.exists():
        return str(cand)
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    return "python3" if os.name != "nt" else "python"


def _numpy_version():
    try:
        import numpy

        return numpy.__version__
    except Exception:
        return None


def _quote(path) -> str:
    return f'"{path}"'


def install_message(missing: dict, folder, *, system: str | None = None, debian: bool | None = None,
                    python: str | None = None, has_pip: bool | None = None) -> str:
    """One message: what is missing, why (QGIS's own Python), and the exact command(s)."""
    system = system or platform.system()
    debian = Path("/etc/debian_version").exists() if debian is None else debian
    python = python or qgis_python()
    if has_pip is None:
        has_pip = importlib.util.find_spec("pip") is not None
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    names = sorted(missing, key=list(MODULES).index)
    apt = [MODULES[n][1] for n in names if debian and MODULES[n][1]]
    pip_names = [n for n in names if not (debian and MODULES[n][1])]
    if debian and pip_names and not has_pip:
        apt.append("python3-pip")
    steps = []
    if apt:
        steps.append("sudo apt install " + " ".join(apt))
    if pip_names:
        reqs = []
        for n in pip_names:
            if n == "torch":
                cpu_build = system in ("Linux", "Windows")
                reqs.append(f"torch=={TORCH_VERSION}+cpu" if cpu_build else f"torch=={TORCH_VERSION}")
            else:
                reqs.append(MODULES[n][0])
        numpy_version = _numpy_version()
        if numpy_version and {"rasterio", "cv2"} & set(pip_names):
            reqs.append(f"numpy=={numpy_version}")  # theirs would shadow QGIS's own numpy
        index = f" --extra-index-url {TORCH_CPU_INDEX}" if "torch" in pip_names and system in ("Linux", "Windows") else ""
        steps.append(f"{_quote(python)} -m pip install --target {_quote(folder)}{index} " + " ".join(reqs))
    shell = "the OSGeo4W Shell" if system == "Windows" else "a terminal"
    details = "; ".join(f"{n} ({missing[n]})" for n in names if not missing[n].startswith("ModuleNotFoundError"))
    return (
        f"Space-time super-resolution needs Python packages that QGIS's Python ({python}, Python {v}) "
        f"does not have: {', '.join(names)}."
        + (f" Import errors: {details}." if details else "")
        + " QGIS runs its own Python, not a virtualenv's, so install them for it. In " + shell + " run:  "
        + "  &&  ".join(steps)
        + f"  -- then run the algorithm again: the plugin adds {folder} to QGIS's Python by itself "
        "(restart QGIS if it still fails). The CPU build of torch is a download of about 200 MB; for an "
        "NVIDIA GPU use a CUDA build of torch instead (see pytorch.org)."
    )
