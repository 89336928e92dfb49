"""Fixtures for the QGIS tests: one headless QgsApplication per test session (pytest-qgis style,
written here so it works with Debian's QGIS 3.22), Processing initialised, our provider
registered, a private QGIS profile, small stacks and a tiny model's weights.

Imported by conftest.py; everything QGIS is imported lazily so that test files that do not use
these fixtures never load QGIS.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
QGIS_PROCESS = VENV / "bin" / "qgis_process"
QGIS_PROCESS_BIN = Path("/usr/bin/qgis_process.bin")
PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
ALG = "mstt:spacetimesr"

_APP = {}


def headless_env(profile: Path | None = None, **extra) -> dict:
    """Environment for a headless QGIS subprocess; ``profile`` = QGIS_CUSTOM_CONFIG_PATH."""
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    xdg = Path(tempfile.gettempdir()) / f"mstt-xdg-{os.getuid()}"
    xdg.mkdir(mode=0o700, exist_ok=True)
    env["XDG_RUNTIME_DIR"] = str(xdg)
    if profile is not None:
        env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def user_env(profile: Path, **extra) -> dict:
    """Debian's QGIS as a user starts it: this profile, no venv, no checkout on the plugin path,
    none of this machine's pip configuration (a test gives pip its sources)."""
    env = headless_env(profile)
    for key in list(env):
        if key.startswith("PIP_") or key in ("PYTHONPATH", "QGIS_PLUGINPATH", "VIRTUAL_ENV"):
            env.pop(key)
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update({k: str(v) for k, v in extra.items()})
    return env


def profile_with_plugin_zip(root: Path) -> Path:
    """A fresh QGIS profile folder under ``root`` with the plugin ZIP (tools/package.py) unpacked
    into it, as "Install from ZIP" does, and enabled."""
    import zipfile

    built = subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package.py"), "--dist", str(root / "dist")],
                           capture_output=True, text=True, check=True)
    profile = root / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(built.stdout.split(" (")[0]) as zf:
        zf.extractall(plugins)
    enabled = run_qgis_process(["plugins", "enable", "mstt_stvsr"], env=user_env(profile), binary=QGIS_PROCESS_BIN)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return profile


def qgis_available() -> bool:
    try:
        import qgis.core  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory) -> Path:
    """An empty QGIS profile folder for this session: no user settings, no user plugins."""
    return tmp_path_factory.mktemp("qgis-profile")


@pytest.fixture(scope="session")
def qgis_app(qgis_profile):
    """The session's QgsApplication (with GUI classes, offscreen), Processing and our provider."""
    if not qgis_available():
        pytest.skip("QGIS Python bindings (python3-qgis) are not installed")
    if "app" in _APP:
        return _APP["app"]
    os.environ.update({k: v for k, v in headless_env(qgis_profile).items()
                       if k in ("QT_QPA_PLATFORM", "XDG_RUNTIME_DIR", "QGIS_CUSTOM_CONFIG_PATH")})
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    if PROCESSING_PLUGINS not in sys.path:
        sys.path.append(PROCESSING_PLUGINS)
    from processing.core.Processing import Processing

    Processing.initialize()
    from mstt_stvsr.mstt_qgis.plugin import MsttPlugin

    plugin = MsttPlugin(None)
    plugin.initProcessing()
    _APP.update(app=app, plugin=plugin)
    return app


@pytest.fixture
def project(qgis_app):
    """QgsProject.instance(), emptied after the test (layers, groups, time settings, and where
    new layers go: a test may have pointed that into a group that clearing deletes)."""
    from qgis.core import QgsLayerTreeRegistryBridge, QgsProject

    proj = QgsProject.instance()
    proj.clear()
    yield proj
    proj.layerTreeRegistryBridge().setLayerInsertionPoint(
        QgsLayerTreeRegistryBridge.InsertionPoint(proj.layerTreeRoot(), 0))
    proj.clear()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny MSTT's weights, so that whole runs take seconds on the shared CPU."""
    from mstt_stvsr.core.net.weights import save_weights
    from nets import tiny_mstt

    return save_weights(tiny_mstt(), tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def small_stack(tmp_path_factory) -> list:
    """3 georeferenced RGB frames 56 x 40, 2 s apart (times in TIFFTAG_DATETIME)."""
    from stackgen import write_stack

    return write_stack(tmp_path_factory.mktemp("stack"), n=3, h=40, w=56)


def run_qgis_process(args, *, env=None, timeout=300, binary=QGIS_PROCESS):
    """Run qgis_process; return CompletedProcess with text output."""
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                          env=env or headless_env(), cwd=str(REPO))


def json_result(stdout: str) -> dict:
    """qgis_process --json output (the JSON document may follow log lines on some builds)."""
    start = stdout.index("{")
    return json.loads(stdout[start:])


class RecordingFeedback:
    """Factory for a QgsProcessingFeedback that records what the algorithm reports, and can
    cancel itself when a progress text starting with ``cancel_at`` arrives."""

    @staticmethod
    def create(cancel_at: str | None = None):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.infos, self.warnings, self.errors, self.texts = [], [], [], []

            def pushInfo(self, info):  # noqa: N802
                self.infos.append(info)

            def pushWarning(self, warning):  # noqa: N802
                self.warnings.append(warning)

            def reportError(self, error, fatalError=False):  # noqa: N802, N803
                self.errors.append(error)

            def setProgressText(self, text):  # noqa: N802
                self.texts.append(text)
                if cancel_at and text.startswith(cancel_at):
                    self.cancel()

        return Feedback()


def require_qgis_process() -> None:
    """Skip the calling test module when `make setup` has not made the qgis_process wrapper."""
    if not QGIS_PROCESS.exists():
        pytest.skip("no .venv/bin/qgis_process: run `make setup`", allow_module_level=True)
