"""The dependency installer behind ``mstt:installdeps``: the engine's packages (PyTorch, safetensors,
optionally Dask) for QGIS's own Python, into a folder of the QGIS profile (deps.deps_folder).

1. Check what QGIS's Python can import already, with the folder first on its path, in a
   subprocess (torch is never imported into QGIS here): if everything is there, say so.
2. Find a pip for QGIS's Python (pip_runner.find_pip: its own, or one run from a pip wheel).
3. Resolve with ``pip install --dry-run --report``, seeing what QGIS's Python and the folder
   already have, under constraints that pin every compiled package QGIS's Python has
   (install_plan.compiled_constraints): pip keeps QGIS's numpy, GDAL, PyQt, rasterio, OpenCV.
4. Install exactly the resolved files (hash-checked when the index gives hashes) with
   ``--no-deps --target`` into a staging folder; screen it (dep_folder.screen: nothing that
   hides a module QGIS already uses); only then replace the old versions in the folder.
5. Check again in a subprocess: the engine imports, with QGIS's own numpy.
A cancel kills pip and removes the staging folder: the dependency folder is left as it was.
"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import deps
from .dep_folder import move_in, remove_project, screen
from .install_plan import BUILDS, Request, compiled_constraints, requirements, source_args, uses_torch_index
from .pip_runner import Pip, PipError, PipProgress, find_pip, pip_env, run_pip
from .qgis_python import find_python, hidden_window

MIN_PYTHON = (3, 10)  # the engine's (pyproject requires-python), and torch 2.13's
DEBIAN_MODULES = ("numpy", "rasterio", "cv2")  # from apt on Debian: built against QGIS's GDAL


class InstallError(Exception):
    """The install cannot go on; the message says why and what to do."""


class Canceled(InstallError):
    pass


@dataclass
class Hooks:
    progress: Callable = lambda fraction, text=None: None  # text: a new stage, or None
    log: Callable = lambda line: None  # the installer's own lines
    console: Callable = lambda line: None  # pip's output, line by line
    is_canceled: Callable = lambda: False


@dataclass
class Outcome:
    changed: bool
    versions: dict  # import name -> {"version", "file"} in QGIS's Python, the folder first
    installed: list = field(default_factory=list)  # "name version" moved into the folder
    restart: bool = False  # torch was already loaded in this QGIS: the new one needs a restart

    def summary(self, folder) -> str:
        parts = ", ".join(f"{name} {v.get('version', '?')}" for name, v in self.versions.items())
        head = (f"installed into {folder}: {', '.join(self.installed)}" if self.changed
                else f"already installed{self._where(folder)}, nothing to do")
        return f"{head}. Versions in use: {parts}." + (" Restart QGIS to use them." if self.restart else "")


    def _where(self, folder) -> str:
        """Where the engine's own packages were found: the folder, or (torch from the system,
        a conda environment) elsewhere, then named, not the folder, which may not even exist."""
        inside, outside = [], {}
        for name in ENGINE_PACKAGES:
            file = (self.versions.get(name) or {}).get("file")
            if not file:
                continue
            if Path(file).is_relative_to(Path(folder)):
                inside.append(name)
            else:
                outside.setdefault(str(Path(file).parent.parent), []).append(name)
        if not outside:
            return f" in {folder}"
        places = "; ".join(f"{', '.join(names)} in {place}" for place, names in outside.items())
        return f" ({places}" + (f"; {', '.join(inside)} in {folder})" if inside else ")")


ENGINE_PACKAGES = ("torch", "safetensors", "dask", "distributed")  # what the installer puts in the folder


def engine_modules(request: Request) -> list:
    return ["torch", "safetensors", *DEBIAN_MODULES] + (["dask", "distributed"] if request.dask else [])


VERIFY = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for name in sys.argv[2:]:
    try:
        m = importlib.import_module(name)
        out[name] = {"version": str(getattr(m, "__version__", "?")), "file": getattr(m, "__file__", None)}
    except BaseException as exc:
        out[name] = {"error": type(exc).__name__ + ": " + str(exc)[:300]}
torch = sys.modules.get("torch")
if torch is not None and "torch" in out:
    out["torch"].update(cuda=torch.version.cuda, cuda_available=bool(torch.cuda.is_available()))
print("MSTT-VERIFY" + json.dumps(out))
"""


def verify(python: str, folder: Path, modules, env: dict) -> dict:
    """Import the engine's modules in QGIS's Python with the folder first, as the plugin does."""
    proc = subprocess.run([python, "-c", VERIFY, str(folder), *modules], capture_output=True, text=True,
                          timeout=600, env=pip_env(env), **hidden_window())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MSTT-VERIFY")), None)
    if line is None:
        raise InstallError(f"could not run QGIS's Python ({python}): {(proc.stderr or proc.stdout)[-500:]}")
    return json.loads(line[len("MSTT-VERIFY"):])


def problems(found: dict, request: Request, folder: Path, system: str) -> list:
    """What keeps ``found`` (verify's answer) from being the install asked for."""
    out = [f"{name}: {v['error']}" for name, v in found.items() if "error" in v]
    torch = found.get("torch", {})
    if "version" in torch:
        want = f"{deps.TORCH_VERSION}+{request.build}" if uses_torch_index(request, system) else deps.TORCH_VERSION
        if torch["version"] != want and not (want == deps.TORCH_VERSION and torch["version"].startswith(want)):
            out.append(f"torch {torch['version']} is not the {want} asked for")
    numpy_file = found.get("numpy", {}).get("file") or ""
    if numpy_file and Path(numpy_file).resolve().is_relative_to(folder.resolve()):
        out.append(f"numpy comes from {folder}, not from QGIS's Python")
    return out


def check_python(system: str) -> None:
    if sys.version_info[:2] < MIN_PYTHON:
        raise InstallError(
            f"QGIS's Python is {sys.version_info[0]}.{sys.version_info[1]}; the engine and PyTorch "
            f"{deps.TORCH_VERSION} need Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer: use a newer QGIS"
            + (" (QGIS 3.34 or newer on Windows)" if system == "Windows" else ""))


def check_distribution_packages(found: dict, debian: bool) -> None:
    """On Debian, numpy, rasterio and OpenCV must be Debian's (built against QGIS's GDAL and
    numpy): a pip copy would load a second GDAL into QGIS. The installer cannot run apt."""
    missing = [m for m in DEBIAN_MODULES if "error" in found.get(m, {})]
    if debian and missing:
        apt = " ".join(deps.MODULES[m][1] for m in missing)
        raise InstallError(f"QGIS's Python lacks {', '.join(missing)}: install them from Debian first "
                           f"(as root: apt install {apt}), then run this again")


def check_gpu(request: Request, system: str, log) -> None:
    """A CUDA build only where an NVIDIA driver new enough for it answers (nvidia-smi)."""
    label, min_driver = BUILDS[request.build]
    if min_driver is None:
        return
    if system == "Darwin":
        raise InstallError("PyTorch has no CUDA build for macOS; choose the CPU build")
    nvidia_smi = shutil.which("nvidia-smi")
    try:
        out = subprocess.run([nvidia_smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, **hidden_window()) if nvidia_smi else None
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is None or out.returncode != 0 or not out.stdout.strip():
        raise InstallError(f"no NVIDIA GPU found (nvidia-smi {'is not on the PATH' if not nvidia_smi else 'failed'}); "
                           "choose the CPU build")
    name, _, driver = out.stdout.strip().splitlines()[0].rpartition(", ")
    if int(driver.split(".")[0]) < min_driver:
        raise InstallError(f"{label} needs NVIDIA driver {min_driver} or newer; {name} has {driver}: "
                           "update the driver or choose an older CUDA build")
    log(f"GPU: {name}, driver {driver}")


@dataclass(frozen=True)
class Item:
    """One resolved file: a project, its version, where it comes from, its sha256 if known."""
    name: str
    version: str
    url: str
    sha256: str = ""


def progress_args(pip: Pip) -> list:
    return ["--progress-bar", "raw" if pip.raw_progress else "off"]


def pip_failed(lines: list, what: str) -> InstallError:
    """pip's own explanation (its ERROR lines and what follows them), not a traceback."""
    start = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR")), max(len(lines) - 15, 0))
    return InstallError(f"pip could not {what}:\n" + "\n".join(lines[start:start + 30]))


def run_logged(pip: Pip, args: list, env: dict, hooks: Hooks, on_line, what: str) -> list:
    lines: list = []

    def line(text):
        lines.append(text)
        on_line(text)

    rc = run_pip(pip, args, env, line, hooks.is_canceled)
    if rc is None:
        raise Canceled("canceled: nothing was installed")
    if rc != 0:
        raise pip_failed(lines, what)
    return lines


def resolve(pip: Pip, reqs: list, request: Request, folder: Path, work: Path, env: dict, hooks: Hooks,
            system: str) -> list:
    """The files pip would install for ``reqs``, given what QGIS's Python and the folder have."""
    qgis_paths = [p for p in sys.path if p and Path(p).resolve() != folder.resolve()]
    constraints = work / "constraints.txt"
    constraints.write_text("\n".join(compiled_constraints(qgis_paths)) + "\n", encoding="utf-8")
    report = work / "report.json"
    args = ["install", "--dry-run", "--report", str(report), "--only-binary", ":all:", "-c", str(constraints),
            *source_args(request, system), *progress_args(pip), *reqs]
    hooks.log(f"resolving {' '.join(reqs)}; QGIS's compiled packages stay as they are: "
              + ", ".join(constraints.read_text(encoding="utf-8").split()))
    run_logged(pip, args, pip_env(env, folder), hooks, PipProgress(hooks, 0.05, 0.35, len(reqs)),
               "find packages that fit QGIS's Python")
    items = []
    for entry in json.loads(report.read_text(encoding="utf-8")).get("install", []):
        meta, info = entry["metadata"], entry.get("download_info", {})
        hashes = info.get("archive_info", {}).get("hashes", {})
        items.append(Item(meta["name"], meta["version"], info.get("url", ""), hashes.get("sha256", "")))
    return items


def install_to(staging: Path, pip: Pip, items: list, work: Path, env: dict, hooks: Hooks) -> None:
    """Exactly the resolved files, without resolving again, into ``staging``."""
    hashed = all(i.sha256 for i in items)
    reqs = work / "resolved.txt"
    reqs.write_text("".join(f"{i.name} @ {i.url}" + (f" --hash=sha256:{i.sha256}" if hashed else "") + "\n"
                            for i in items), encoding="utf-8")
    args = ["install", "--no-deps", "--target", str(staging), "--only-binary", ":all:", "--no-warn-script-location",
            "--root-user-action", "ignore",  # QGIS run as root is the user's choice, not pip's to warn about
            *(["--require-hashes"] if hashed else []), "-r", str(reqs), *progress_args(pip)]
    run_logged(pip, args, pip_env(env), hooks, PipProgress(hooks, 0.35, 0.85, len(items)), "install the packages")


def replace_in_folder(staging: Path, folder: Path, items: list, hooks: Hooks) -> None:
    """The screened install replaces the old versions of the same projects in the folder."""
    screen(staging, [folder, staging], hooks.log)
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        if remove_project(folder, item.name):
            hooks.log(f"removed the older {item.name} from {folder}")
    for entry in sorted(staging.iterdir()):
        move_in(entry, folder / entry.name)


def install(request: Request, folder, *, python: str | None = None, hooks: Hooks | None = None,
            env: dict | None = None, system: str | None = None, debian: bool | None = None) -> Outcome:
    """Install what the engine needs for ``request`` into ``folder``; see the module docstring."""
    hooks, folder = hooks or Hooks(), Path(folder)
    system = system or platform.system()
    debian = Path("/etc/debian_version").exists() if debian is None else debian
    check_python(system)
    python = python or find_python(system)
    if not (request.index_url or request.find_links):
        raise InstallError("give a package index, a folder of wheels, or both")
    hooks.progress(0.0, f"checking what QGIS's Python ({python}) has")
    modules = engine_modules(request)
    before = verify(python, folder, modules, env)
    if not request.reinstall and not problems(before, request, folder, system):
        return Outcome(False, before)
    check_distribution_packages(before, debian)
    check_gpu(request, system, hooks.log)
    reqs = requirements(request, system, [m for m in ("rasterio", "cv2") if "error" in before.get(m, {})])
    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed QGIS may have left
    try:
        with tempfile.TemporaryDirectory(prefix="mstt-install-") as tmp:
            pip = find_pip(python, pip_env(env), folder.with_name(folder.name + ".pip"), request.find_links,
                           request.index_url, hooks.log)
            hooks.log(f"using {pip.describe()}")
            items = resolve(pip, reqs, request, folder, Path(tmp), env, hooks, system)
            if items:
                install_to(staging, pip, items, Path(tmp), env, hooks)
                if hooks.is_canceled():
                    raise Canceled("canceled: nothing was installed")
                hooks.progress(0.87, f"moving into {folder}")
                replace_in_folder(staging, folder, items, hooks)
    except PipError as exc:
        raise InstallError(str(exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    hooks.progress(0.9, "checking the installed packages in QGIS's Python")
    after = verify(python, folder, modules, env)
    left = problems(after, request, folder, system)
    if left:
        raise InstallError("installed, but QGIS's Python still cannot use them: " + "; ".join(left))
    deps.add_deps_folder(folder)
    loaded = sys.modules.get("torch")
    restart = bool(items) and loaded is not None and any(i.name.lower() == "torch" for i in items)
    hooks.progress(1.0, "done")
    return Outcome(True, after, [f"{i.name} {i.version}" for i in items], restart)
