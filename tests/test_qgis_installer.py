"""The dependency installer (mstt:installdeps), for real: the plugin ZIP in a fresh QGIS profile,
Debian's own qgis_process and Python (no venv), pip hidden as on a stock Debian QGIS, packages
from a local wheel folder (the same torch and safetensors the venv runs, and their
dependencies, fetched once into build/test-wheelhouse from what pip can reach: this machine's
wheel cache or index). Then mstt:spacetimesr runs with them, on QGIS's own numpy.

Also: the constraints keep QGIS's compiled packages (a negative control shows pip would
otherwise put a second copy in the folder), nothing QGIS has imported is shadowed (with a
negative control), a cancel leaves the folder as it was, and the plan per platform and build.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from qgis_fixtures import QGIS_PROCESS_BIN, REPO, VENV, profile_with_plugin_zip, run_qgis_process, user_env

pytestmark = pytest.mark.qgis

DEBIAN_PYTHON = "/usr/bin/python3"
WHEELHOUSE = REPO / "build" / "test-wheelhouse"


def _venv_version(module: str) -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", f"import {module}; print({module}.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """torch and safetensors as the venv has them, their dependencies and pip, as wheels; kept in
    build/ so later runs need no index. pip reaches them as `make setup` did (its configuration)."""
    torch_version = _venv_version("torch")
    from mstt_stvsr.mstt_qgis.install_plan import DASK_VERSION

    wanted = [f"torch=={torch_version}", f"safetensors=={_venv_version('safetensors')}", "pip", "markupsafe>=3",
              f"dask=={DASK_VERSION}", f"distributed=={DASK_VERSION}"]
    have = {p.name.split("-")[0].lower() for p in WHEELHOUSE.glob("*.whl")}
    if not {"torch", "safetensors", "pip", "markupsafe", "sympy", "dask", "distributed"} <= have:
        got = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "download", "-q", "--only-binary", ":all:",
                              "-d", str(WHEELHOUSE), *wanted], capture_output=True, text=True, timeout=1800)
        if got.returncode != 0:
            pytest.skip(f"cannot fetch the test wheels ({' '.join(wanted)}): {got.stderr[-500:]}")
    return WHEELHOUSE


def _hide_pip(root: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes `import pip` fail as on a QGIS without python3-pip."""
    stub = root / "no-pip" / "pip"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'pip\'", name="pip")\n')
    return stub.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheelhouse):
    """(profile, deps folder, the install's qgis_process output)."""
    root = tmp_path_factory.mktemp("installer")
    profile = profile_with_plugin_zip(root)
    env = user_env(profile, PYTHONPATH=_hide_pip(root))
    no_pip = subprocess.run([DEBIAN_PYTHON, "-c", "import pip"], env=env, capture_output=True, text=True)
    assert no_pip.returncode != 0  # as on stock Debian
    ran = run_qgis_process(["run", "mstt:installdeps", "--", "INDEX_URL=", "TORCH_INDEX_URL=",
                            f"FIND_LINKS={wheelhouse}"], env=env, binary=QGIS_PROCESS_BIN, timeout=1200)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return profile, profile / "profiles" / "default" / "python" / "mstt_stvsr_deps", ran.stdout + ran.stderr


def _debian_numpy() -> str:
    out = subprocess.run([DEBIAN_PYTHON, "-c", "import numpy; print(numpy.__version__, numpy.__file__)"],
                         capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    return out.stdout.strip()


def test_fresh_profile_install_then_superresolve_with_qgis_numpy(installed, tmp_path, small_stack, tiny_weights):
    profile, folder, log = installed
    assert "running pip from" in log and "pip-" in log  # bootstrapped: QGIS's Python has no pip
    assert "Successfully installed" in log and "torch-" in log  # pip's own log reaches the feedback
    assert "not copied: _distutils_hack (QGIS has already loaded" in log
    names = {p.name for p in folder.iterdir()}
    torch_version = _venv_version("torch")
    assert f"torch-{torch_version}.dist-info" in names and any(n.startswith("sympy-") for n in names)
    for theirs in ("numpy", "osgeo", "rasterio", "cv2", "PyQt5", "markupsafe", "yaml", "_distutils_hack"):
        assert theirs not in names and not any(n.lower().startswith(theirs.lower() + "-") for n in names), theirs
    size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    assert 600 < size_mb < 1200, size_mb  # the help and the install message say "about 880 MB"

    out = tmp_path / "out"
    ran = run_qgis_process(["run", "mstt:spacetimesr", "--", *[f"INPUT={p}" for p in small_stack],
                            f"WEIGHTS={tiny_weights}", "TILE_SIZE=80", "DEVICE=cpu", f"OUTPUT={out}"],
                           env=user_env(profile), binary=QGIS_PROCESS_BIN)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert len(list(out.glob("*.tif"))) == 5
    in_use = next(ln for ln in ran.stdout.splitlines() if ln.startswith("Python packages:"))
    version, path = _debian_numpy().split()
    assert f"numpy {version} ({Path(path).parent.parent})" in in_use  # QGIS's own numpy, not a copy
    assert f"torch {torch_version} ({folder})" in in_use


def test_second_install_answers_already_installed(installed, wheelhouse):
    profile, folder, _ = installed
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    ran = run_qgis_process(["run", "mstt:installdeps", "--", "INDEX_URL=", "TORCH_INDEX_URL=",
                            f"FIND_LINKS={wheelhouse}"], env=user_env(profile), binary=QGIS_PROCESS_BIN)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    said = ran.stdout
    assert f"already installed in {folder}, nothing to do. Versions in use: torch {_venv_version('torch')}" in said
    assert f"numpy {_debian_numpy().split()[0]}" in said and "pip" not in said.split("Versions in use")[0].lower()
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before


SHADOW_CHECK = textwrap.dedent("""
    import importlib.machinery, json, sys
    from qgis.core import QgsApplication
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    Processing.initialize()
    sys.path.insert(0, sys.argv[2])  # the profile's plugins folder, as QGIS puts it
    import mstt_stvsr
    plugin = mstt_stvsr.classFactory(None)
    plugin.initProcessing()
    from mstt_stvsr.mstt_qgis import dep_folder, deps
    imported = [n for n in sys.modules if "." not in n]

    def origins():
        specs = {n: importlib.machinery.PathFinder.find_spec(n, sys.path) for n in imported}
        return {n: spec.origin if spec else None for n, spec in specs.items()}

    before = origins()
    deps.add_deps_folder(sys.argv[1])  # what the algorithm does before it imports torch
    after = origins()
    moved = [[n, before[n], after[n]] for n in imported if after[n] != before[n]]
    from pathlib import Path
    print("RESULT" + json.dumps(dict(moved=moved, shadowed=dep_folder.shadowed(Path(sys.argv[1])),
                                     count=len(imported), yaml="yaml" in imported)))
""")


def _shadow_check(folder: Path, profile: Path) -> dict:
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    proc = subprocess.run([DEBIAN_PYTHON, "-c", SHADOW_CHECK, str(folder), str(plugins)], capture_output=True,
                          text=True, timeout=300, env=user_env(profile))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[len("RESULT"):])


def test_no_module_qgis_has_imported_is_shadowed(installed, tmp_path):
    """With the folder first on sys.path (as when the algorithm runs), every module QGIS had
    imported still resolves to the file it was loaded from."""
    profile, folder, _ = installed
    res = _shadow_check(folder, profile)
    assert res["count"] > 100 and res["moved"] == [] and res["shadowed"] == [], res
    # negative control: a folder holding yaml (QGIS imports PyYAML at start-up) is caught twice
    fake = tmp_path / "fake-deps"
    (fake / "yaml").mkdir(parents=True)
    (fake / "yaml" / "__init__.py").write_text("")
    bad = _shadow_check(fake, profile)
    assert bad["yaml"] and bad["shadowed"] == ["yaml"] and [m[0] for m in bad["moved"]] == ["yaml"], bad


def test_dask_option_adds_dask_beside_torch(installed, wheelhouse):
    """The cluster option's packages into the same folder, later: torch stays as it was."""
    profile, folder, _ = installed
    torch_info = next(folder.glob("torch-*.dist-info"))
    stamp = torch_info.stat().st_mtime_ns
    ran = run_qgis_process(["run", "mstt:installdeps", "--", "DASK=true", "INDEX_URL=", "TORCH_INDEX_URL=",
                            f"FIND_LINKS={wheelhouse}"], env=user_env(profile), binary=QGIS_PROCESS_BIN, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    said = ran.stdout
    assert "dask 2024.12.1" in said.split("installed into")[1] and "distributed 2024.12.1" in said
    assert "torch" not in said.split("installed into")[1].split(". Versions")[0]  # not reinstalled
    assert torch_info.stat().st_mtime_ns == stamp
    for theirs in ("yaml", "numpy", "markupsafe"):  # QGIS's compiled copies serve dask too
        assert not (folder / theirs).exists(), theirs


def _in_process_install(request_kwargs, folder, hooks, wheelhouse, tmp_path):
    """installer.install in this process, for Debian's Python, pip hidden, the wheel folder only."""
    from mstt_stvsr.mstt_qgis.install_plan import Request
    from mstt_stvsr.mstt_qgis.installer import install

    env = user_env(tmp_path / "profile", PYTHONPATH=_hide_pip(tmp_path))
    request = Request(index_url="", torch_index_url="", find_links=str(wheelhouse), **request_kwargs)
    return install(request, folder, python="/usr/bin/python3.11", hooks=hooks, env=env, debian=True)


def test_cancel_during_the_install_leaves_the_folder_as_it_was(tmp_path, wheelhouse):
    """Canceled while pip unpacks into the staging folder (after resolving, torch already taken)."""
    from mstt_stvsr.mstt_qgis.installer import Canceled, Hooks

    folder = tmp_path / "deps"
    lines = []

    def installing(name):
        resolved = next((i for i, ln in enumerate(lines) if ln.startswith("Would install")), None)
        return resolved is not None and any(ln.startswith("Processing") and name in ln for ln in lines[resolved:])

    hooks = Hooks(console=lines.append, is_canceled=lambda: installing("safetensors"))
    with pytest.raises(Canceled, match="nothing was installed"):
        _in_process_install({}, folder, hooks, wheelhouse, tmp_path)
    assert installing("torch")  # it was under way
    assert not folder.exists() and not folder.with_name("deps.staging").exists()


def test_constraints_keep_qgis_compiled_packages(tmp_path, wheelhouse):
    """QGIS's Python has a compiled MarkupSafe (Debian's 2.1.2); asking for a newer one must fail
    rather than put a second build in the folder. Negative control: without the constraints,
    pip would install it there."""
    from mstt_stvsr.mstt_qgis.install_plan import Request, compiled_constraints
    from mstt_stvsr.mstt_qgis.installer import Hooks, InstallError, resolve
    from mstt_stvsr.mstt_qgis.pip_runner import find_pip, pip_env

    debian = "/usr/lib/python3/dist-packages"
    pinned = compiled_constraints([debian])
    assert {"numpy", "gdal", "pyqt5", "rasterio", "markupsafe"} <= {c.split("==")[0] for c in pinned}
    env = user_env(tmp_path / "profile", PYTHONPATH=_hide_pip(tmp_path))
    pip = find_pip("/usr/bin/python3.11", pip_env(env), tmp_path / "pip", str(wheelhouse), "", lambda s: None)
    request = Request(index_url="", torch_index_url="", find_links=str(wheelhouse))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InstallError, match="(?i)markupsafe"):
        resolve(pip, ["markupsafe>=3"], request, tmp_path / "deps", work, env, Hooks(), "Linux")
    report = work / "unconstrained.json"
    free = subprocess.run([*pip.argv, "install", "--dry-run", "--report", str(report), "--no-index", "--find-links",
                           str(wheelhouse), "markupsafe>=3"], env=pip_env(env), capture_output=True, text=True)
    assert free.returncode == 0, free.stdout + free.stderr
    assert [e["metadata"]["name"].lower() for e in json.loads(report.read_text())["install"]] == ["markupsafe"]


def test_plan_per_platform_and_build():
    from mstt_stvsr.mstt_qgis.install_plan import Request, requirements, source_args

    cpu = Request()
    assert requirements(cpu, "Linux") == ["torch==2.13.0+cpu", "safetensors"]
    assert source_args(cpu, "Windows") == ["--index-url", "https://pypi.org/simple",
                                           "--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert requirements(cpu, "Darwin") == ["torch==2.13.0", "safetensors"]  # PyPI's macOS wheels
    assert "--extra-index-url" not in source_args(cpu, "Darwin")
    cuda = Request(build="cu130", dask=True)
    assert requirements(cuda, "Windows", missing=["rasterio", "cv2"]) == [
        "torch==2.13.0+cu130", "safetensors", "rasterio", "opencv-python-headless", "dask==2024.12.1",
        "distributed==2024.12.1"]
    assert source_args(cuda, "Linux")[-1] == "https://download.pytorch.org/whl/cu130"
    offline = Request(index_url="", torch_index_url="", find_links="/media/wheels")
    assert source_args(offline, "Linux") == ["--no-index", "--find-links", "/media/wheels"]
    assert requirements(offline, "Linux")[0] == "torch==2.13.0"  # whatever build the folder holds


def test_checks_before_pip_runs(monkeypatch):
    from mstt_stvsr.mstt_qgis import installer
    from mstt_stvsr.mstt_qgis.install_plan import Request

    with pytest.raises(installer.InstallError, match=r"as root: apt install python3-rasterio python3-opencv"):
        installer.check_distribution_packages({"numpy": {"version": "1.24.2"}, "rasterio": {"error": "x"},
                                                "cv2": {"error": "y"}}, debian=True)
    installer.check_distribution_packages({"rasterio": {"error": "x"}}, debian=False)  # pip provides it there
    monkeypatch.setattr(installer.shutil, "which", lambda name: None)
    with pytest.raises(installer.InstallError, match="no NVIDIA GPU found"):
        installer.check_gpu(Request(build="cu126"), "Linux", print)
    with pytest.raises(installer.InstallError, match="no CUDA build for macOS"):
        installer.check_gpu(Request(build="cu130"), "Darwin", print)
    installer.check_gpu(Request(), "Linux", print)  # the CPU build needs no GPU


def test_qgis_python_is_looked_for_where_each_platform_keeps_it():
    from mstt_stvsr.mstt_qgis.qgis_python import candidates, find_python

    win = candidates("Windows", r"C:\OSGeo4W\apps\Python312", executable=r"C:\OSGeo4W\bin\qgis-bin.exe",
                     version=(3, 12))
    assert str(win[0]).replace("/", "\\").endswith(r"C:\OSGeo4W\apps\Python312\python.exe")
    mac = candidates("Darwin", "/Applications/QGIS.app/Contents/Frameworks",
                     prefix_path="/Applications/QGIS.app/Contents/MacOS",
                     executable="/Applications/QGIS.app/Contents/MacOS/QGIS", version=(3, 12))
    assert Path("/Applications/QGIS.app/Contents/MacOS/bin/python3") in mac
    assert not any(p.name == "QGIS" for p in mac)  # QGIS itself is not a Python
    linux = candidates("Linux", "/usr", executable="/usr/bin/qgis", version=(3, 11))
    assert linux[0] == Path("/usr/bin/python3.11")
    found = find_python("Linux")  # this test runs in a Python: itself, same version
    assert subprocess.run([found, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                          text=True).stdout.strip() == str(sys.version_info[:2])


def test_already_installed_elsewhere_names_where_not_a_missing_folder(tmp_path):
    """torch importable from QGIS's Python itself (here: the venv), the dependency folder not
    even made: 'nothing to do' names where the packages are, not the folder."""
    from mstt_stvsr.mstt_qgis.install_plan import Request
    from mstt_stvsr.mstt_qgis.installer import install

    folder = tmp_path / "deps"
    outcome = install(Request(), folder, python=sys.executable)
    said = outcome.summary(folder)
    assert not outcome.changed and not folder.exists()
    assert f"in {folder}" not in said
    assert said.startswith("already installed (torch, safetensors in ") and ", nothing to do." in said, said
