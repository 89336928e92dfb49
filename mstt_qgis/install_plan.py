"""What the dependency installer asks pip for: the engine's packages for the chosen PyTorch build,
the indexes they come from, and the constraints that keep QGIS's compiled packages as they are.

A compiled package that QGIS's Python already has (numpy, the GDAL bindings, PyQt, rasterio,
OpenCV, ...) is pinned to its installed version: pip then keeps QGIS's copy or fails, and never
puts a second build of it in the dependency folder, where it would come first on ``sys.path``.
Pure-Python packages are not pinned: when torch needs a newer sympy or typing-extensions than
QGIS's Python has, the newer one goes into the folder, which only the engine's imports see first.
"""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import re
from dataclasses import dataclass

from .deps import TORCH_VERSION

DASK_VERSION = "2024.12.1"  # dask and distributed as the Makefile installs them and the cluster tests run
PYPI = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl"
# build -> (label, lowest NVIDIA driver major version); variants of PyTorch's own index
BUILDS = {"cpu": ("CPU", None), "cu126": ("CUDA 12.6", 560), "cu130": ("CUDA 13.0", 580)}
# compiled packages QGIS links against: pinned whenever installed, whatever their metadata says
ALWAYS_PINNED = ("numpy", "gdal", "rasterio", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
                 "pyqt5", "pyqt5-sip", "pyqt6", "pyqt6-sip", "sip", "qscintilla", "shapely", "pyproj")
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$", re.I)
EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES) + (".so", ".pyd", ".dylib", ".dll")


@dataclass(frozen=True)
class Request:
    """What the user asked for: the build, Dask, and where packages come from (empty = none)."""
    build: str = "cpu"
    dask: bool = False
    index_url: str = PYPI
    torch_index_url: str = TORCH_INDEX
    find_links: str = ""
    reinstall: bool = False


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uses_torch_index(request: Request, system: str) -> bool:
    """macOS wheels on PyPI are the only build there is; elsewhere PyPI's torch is not the build
    asked for (CUDA on Linux, CPU on Windows), so it comes from PyTorch's index when one is given."""
    return bool(request.torch_index_url) and system != "Darwin"


def torch_requirement(request: Request, system: str) -> str:
    if uses_torch_index(request, system):
        return f"torch=={TORCH_VERSION}+{request.build}"
    return f"torch=={TORCH_VERSION}"


def requirements(request: Request, system: str, missing=()) -> list:
    """pip requirements: torch and safetensors, rasterio / OpenCV where QGIS's Python lacks them
    (never on Debian: see installer.check_distribution_packages), Dask if asked for."""
    reqs = [torch_requirement(request, system), "safetensors"]
    reqs += [{"rasterio": "rasterio", "cv2": "opencv-python-headless"}[m] for m in ("rasterio", "cv2") if m in missing]
    if request.dask:
        reqs += [f"dask=={DASK_VERSION}", f"distributed=={DASK_VERSION}"]
    return reqs


def source_args(request: Request, system: str) -> list:
    """pip's index and find-links arguments; no index and no folder is refused by the caller."""
    args = ["--index-url", request.index_url] if request.index_url else ["--no-index"]
    if uses_torch_index(request, system):
        args += ["--extra-index-url", f"{request.torch_index_url.rstrip('/')}/{request.build}"]
    if request.find_links:
        args += ["--find-links", request.find_links]
    return args


def top_level_names(dist) -> list:
    text = dist.read_text("top_level.txt")
    if text:
        return [n.strip() for n in text.split() if n.strip()]
    names = {str(f).split("/")[0].split(".")[0] for f in (dist.files or []) if not str(f).startswith("..")}
    return sorted(n for n in names if n.isidentifier())


def spec_is_compiled(spec) -> bool:
    """True when a module spec is an extension module or a package holding one."""
    if spec.origin and spec.origin.endswith(EXTENSIONS):
        return True
    for location in spec.submodule_search_locations or []:
        for _, _, files in os.walk(location):
            if any(f.endswith(EXTENSIONS) for f in files):
                return True
    return False


def is_compiled(dist, path=None) -> bool:
    """True when the distribution holds extension modules: from its file list, or (Debian's
    egg-info has none) by looking into its top-level packages."""
    if dist.files:
        return any(str(f).endswith(EXTENSIONS) for f in dist.files)
    specs = (importlib.machinery.PathFinder.find_spec(name, path) for name in top_level_names(dist))
    return any(spec is not None and spec_is_compiled(spec) for spec in specs)


def compiled_constraints(path=None) -> list:
    """``name==version`` for each compiled distribution QGIS's Python has (``path``: where to
    look, default sys.path), plus the packages in ALWAYS_PINNED that are installed."""
    pins = {}
    for dist in importlib.metadata.distributions(**({"path": path} if path is not None else {})):
        name, version = dist.metadata["Name"], dist.version
        if not name or not version or not PEP440.match(version):
            continue  # pip would refuse the whole constraints file for one odd version
        key = normalize(name)
        if key not in pins and (key in ALWAYS_PINNED or is_compiled(dist, path)):
            pins[key] = f"{key}=={version}"
    return sorted(pins.values())
