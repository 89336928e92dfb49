"""The engine's Python packages: which it needs, where the installer puts them, and what to
tell a user whose QGIS lacks them.

QGIS runs its own Python interpreter (on Debian: /usr/bin/python3 embedded in QGIS), not a
virtualenv's, and it has no torch. The packages go into a folder of the QGIS profile
(``mstt:installdeps``, see installer.py); the plugin puts that folder on ``sys.path`` only when
the algorithm runs, and first: torch needs the newer typing_extensions/sympy that were put
beside it, not older copies from the system. Nothing here is imported at QGIS start-up.
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
# (download, installed) in MB of PyTorch and what it pulls in. CPU: torch 2.13.0+cpu for Linux,
# Python 3.11 (wheel 192 MB), installed by mstt:installdeps on Debian 12 with its
# dependencies. CUDA: the CUDA 13 build on Linux (torch wheel plus the nvidia-* and triton
# wheels it requires), summed from the wheels' sizes and their unpacked sizes.
SIZES_MB = {"cpu": (190, 880), "cuda": (3000, 5400)}


def size_text(build: str = "cpu") -> str:
    download, installed = SIZES_MB[build]
    def mb(n):
        return f"{n / 1000:.1f} GB" if n >= 1000 else f"{n} MB"
    return f"a download of about {mb(download)}, about {mb(installed)} once installed"


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
    """One message: what is missing, the installer that adds it from inside QGIS (with its
    sizes), and the same by hand for those who prefer a terminal."""
    system = system or platform.system()
    debian = Path("/etc/debian_version").exists() if debian is None else debian
    if python is None:
        from .qgis_python import find_python

        python = find_python()
    if has_pip is None:
        has_pip = importlib.util.find_spec("pip") is not None
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    names = sorted(missing, key=list(MODULES).index)
    apt, steps = manual_steps(names, folder, system, debian, python, has_pip)
    details = "; ".join(f"{n} ({missing[n]})" for n in names if not missing[n].startswith("ModuleNotFoundError"))
    shell = "the OSGeo4W Shell" if system == "Windows" else "a terminal"
    first = f" Install from your distribution, as root: {apt}." if apt else ""
    installer = not apt or steps  # some packages come from pip, not from the distribution
    return (
        f"Space-time super-resolution needs Python packages that QGIS's Python ({python}, Python {v}) "
        f"does not have: {', '.join(names)}."
        + (f" Import errors: {details}." if details else "")
        + first
        + ("" if not installer else " Install them from QGIS: run \"Install Python dependencies\" (Processing Toolbox > "
        "Space-time super-resolution, or the Plugins menu > MSTT Space-Time Super-Resolution). It puts them "
        f"in {folder}, for QGIS's Python only, and never replaces QGIS's own packages. PyTorch for the CPU is "
        f"{size_text('cpu')}; the CUDA build for an NVIDIA GPU is {size_text('cuda')}.")
        + (f" By hand instead, in {shell}:  {steps}" if steps else "")
    )


def manual_steps(names, folder, system, debian, python, has_pip) -> tuple:
    """(apt command or "", pip command or ""): the packages Debian must provide (they match
    QGIS's GDAL and numpy) and the pip command for the rest, into the dependency folder."""
    apt = [MODULES[n][1] for n in names if debian and MODULES[n][1]]
    pip_names = [n for n in names if not (debian and MODULES[n][1])]
    if debian and pip_names and not has_pip:
        apt.append("python3-pip")
    if not pip_names:
        return ("sudo apt install " + " ".join(apt)) if apt else "", ""
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
    pip = f"{_quote(python)} -m pip install --target {_quote(folder)}{index} " + " ".join(reqs)
    return ("sudo apt install " + " ".join(apt)) if apt else "", pip


def packages_in_use(names=tuple(MODULES)) -> str:
    """One line for the log: each engine package's version and the folder it was imported from
    (so a report shows at once whether QGIS's own numpy, GDAL bindings and OpenCV are in use)."""
    parts = []
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        version = getattr(module, "__version__", "?")
        where = Path(getattr(module, "__file__", "") or "?").parent
        parts.append(f"{name} {version} ({where.parent if where.name == name else where})")
    return "Python packages: " + ", ".join(parts)
