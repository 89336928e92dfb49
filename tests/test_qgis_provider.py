"""The provider and algorithm as QGIS sees them, and the plugin without torch."""
from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
from qgis_fixtures import ALG, REPO, headless_env

pytestmark = pytest.mark.qgis

PARAMS = {
    "INPUT": ("multilayer", False), "WEIGHTS": ("file", True), "TILE_SIZE": ("enum", False),
    "OVERLAP": ("number", False), "DEVICE": ("enum", False), "PRECISION": ("enum", False),
    "WINDOWS": ("enum", False), "ENSEMBLE": ("boolean", False),
    "TIMES": ("string", True), "OVERWRITE": ("boolean", False), "COG": ("boolean", False),
    "RESUME": ("boolean", False), "CLUSTER": ("string", True), "OUTPUT": ("folderDestination", False),
}


def test_provider_and_algorithm_are_registered(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("mstt")
    assert provider is not None and provider.name() == "Space-time super-resolution"
    assert not provider.icon().isNull() and provider.svgIconPath().endswith("icon.svg")
    assert provider.versionInfo() == _metadata_version()
    alg = registry.algorithmById(ALG)
    assert alg is not None and alg.displayName() == "Space-time super-resolution (x4, 2x frame rate)"

    got = {p.name(): (p.type(), bool(p.flags() & QgsProcessingParameterDefinition.FlagOptional))
           for p in alg.parameterDefinitions()}
    assert got == PARAMS
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert alg.parameterDefinition("PRECISION").options() == ["auto", "fp32", "fp16", "bf16"]
    assert alg.parameterDefinition("DEVICE").defaultValue() == "auto"
    assert {o.name(): o.type() for o in alg.outputDefinitions()} == {
        "OUTPUT": "outputFolder", "OUTPUT_LAYERS": "outputMultilayer"}
    help_text = alg.shortHelpString()
    for words in ("<b>In:</b>", "<b>Out:</b>", "<b>Cost:</b>", "2N-1", "4x finer", "Temporal Controller"):
        assert words in help_text


def test_tile_and_overlap_have_real_defaults_that_run_as_shown(qgis_app):
    """No "Not set" that runs as something else: tile sizes are the sizes the engine runs (multiples
    of its padding unit, from its smallest to its largest automatic tile) or auto; the overlap is
    a number with the engine's default, below the smallest tile."""
    from mstt_stvsr.core.net.spec import MULTIPLE
    from mstt_stvsr.core.run import device
    from mstt_stvsr.core.run.options import DEFAULT_OVERLAP
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    tile = alg.parameterDefinition("TILE_SIZE")
    assert tile.defaultValue() == "auto" and tile.usesStaticStrings()
    sizes = [int(o) for o in tile.options()[1:]]
    assert tile.options()[0] == "auto" and all(s % MULTIPLE == 0 for s in sizes)
    assert all(device.round_tile(s) == s for s in sizes)  # each runs as the size it says
    assert (sizes[0], sizes[-1]) == (device.MIN_TILE, device.MAX_TILE)
    overlap = alg.parameterDefinition("OVERLAP")
    assert overlap.defaultValue() == DEFAULT_OVERLAP
    assert (overlap.minimum(), overlap.maximum()) == (0, device.MIN_TILE - 1)


@pytest.mark.parametrize("alg_id", [ALG, "mstt:installdeps", "mstt:finetune"])
def test_help_is_one_paragraph_per_line(qgis_app, alg_id):
    """QGIS's help panel and qgis_process make each line of the help one paragraph: every line is
    whole sentences, with no block tags of its own."""
    from qgis.core import QgsApplication

    text = QgsApplication.processingRegistry().algorithmById(alg_id).shortHelpString()
    lines = text.split("\n")
    assert len(lines) >= 5
    for line in lines:
        assert line.strip() == line and line, repr(line)
        assert not any(tag in line for tag in ("<p>", "</p>", "<br", "<div")), line
        assert line.rstrip(")").endswith((".", ":")), f"not a whole paragraph: {line[-60:]!r}"


def test_installer_algorithm_is_registered_with_its_choices(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingAlgorithm

    alg = QgsApplication.processingRegistry().algorithmById("mstt:installdeps")
    assert alg is not None and alg.displayName() == "Install Python dependencies (PyTorch)"
    assert alg.flags() & QgsProcessingAlgorithm.FlagHideFromModeler  # a set-up step, not a data step
    assert alg.parameterDefinition("BUILD").options() == [
        "CPU", "CUDA 12.6 (NVIDIA GPU, driver 560 or newer)", "CUDA 13.0 (NVIDIA GPU, driver 580 or newer)"]
    assert alg.parameterDefinition("INDEX_URL").defaultValue() == "https://pypi.org/simple"
    assert alg.parameterDefinition("TORCH_INDEX_URL").defaultValue() == "https://download.pytorch.org/whl"
    assert {o.name() for o in alg.outputDefinitions()} == {"FOLDER", "VERSIONS"}
    help_text = alg.shortHelpString()
    assert "mstt_stvsr_deps" in help_text and "190 MB" in help_text and "880 MB" in help_text


def _metadata_version():
    for line in (REPO / "metadata.txt").read_text().splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("metadata.txt has no version")


# Runs in Debian's own Python (QGIS's Python: no venv), with torch and safetensors made
# unimportable whatever is installed, like a QGIS whose Python has no torch.
NO_TORCH_SCRIPT = textwrap.dedent("""
    import json, sys, time
    class HideTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "safetensors"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, HideTorch())
    sys.path.insert(0, sys.argv[1])  # a folder holding the plugin as mstt_stvsr/
    from qgis.core import QgsApplication, QgsProcessingFeedback
    app = QgsApplication([], False)
    app.initQgis()
    t0 = time.perf_counter()
    import mstt_stvsr
    plugin = mstt_stvsr.classFactory(None)
    plugin.initProcessing()
    load_s = time.perf_counter() - t0
    heavy = sorted(m for m in ("torch", "rasterio", "cv2", "safetensors") if m in sys.modules)
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    import processing
    Processing.initialize()
    registered = QgsApplication.processingRegistry().algorithmById("mstt:spacetimesr") is not None

    class Feedback(QgsProcessingFeedback):
        errors = []
        def reportError(self, error, fatalError=False):
            self.errors.append(error)
    fb = Feedback()
    raised = None
    try:
        processing.run("mstt:spacetimesr", {"INPUT": sys.argv[2:], "OUTPUT": sys.argv[1] + "/out"}, feedback=fb)
        ran = True
    except Exception as exc:
        ran = False
        raised = str(exc)
    print("RESULT" + json.dumps(dict(load_s=load_s, heavy=heavy, registered=registered, ran=ran,
                                     errors=fb.errors, raised=raised)))
""")


def test_plugin_loads_without_torch_and_the_algorithm_explains_the_install(tmp_path, small_stack):
    (tmp_path / "mstt_stvsr").symlink_to(REPO)
    env = headless_env(tmp_path / "profile")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["/usr/bin/python3", "-c", NO_TORCH_SCRIPT, str(tmp_path), *small_stack],
                          capture_output=True, text=True, timeout=120, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout + proc.stderr
    res = json.loads(line[len("RESULT"):])
    assert res["registered"] and res["heavy"] == [], res
    assert res["load_s"] < 1.0, f"plugin start-up took {res['load_s']:.2f} s"
    assert not res["ran"]
    msg = res["raised"]  # processing.run raises the algorithm's QgsProcessingException message
    assert "Traceback" not in msg and not [e for e in res["errors"] if "torch" in e], res
    folder = tmp_path / "profile" / "profiles" / "default" / "python" / "mstt_stvsr_deps"
    assert "QGIS's Python" in msg and "does not have: torch, safetensors" in msg
    assert 'run "Install Python dependencies"' in msg and str(folder) in msg
    assert "a download of about 190 MB, about 880 MB once installed" in msg  # not just the download
    assert (f'-m pip install --target "{folder}" --extra-index-url https://download.pytorch.org/whl/cpu '
            'torch==2.13.0+cpu safetensors') in msg
    assert not (tmp_path / "out").exists()


def test_install_message_for_other_platforms():
    from mstt_stvsr.mstt_qgis.deps import install_message

    debian = install_message({"rasterio": "ModuleNotFoundError: x", "torch": "ModuleNotFoundError: y"}, "/p/deps",
                             system="Linux", debian=True, python="/usr/bin/python3.11", has_pip=False)
    assert "as root: sudo apt install python3-rasterio python3-pip." in debian
    assert '"/usr/bin/python3.11" -m pip install --target "/p/deps"' in debian
    assert "rasterio" not in debian.split("--target")[1]  # never a pip rasterio next to Debian's GDAL

    mac = install_message({"torch": "ModuleNotFoundError: y"}, "/u/deps", system="Darwin", debian=False,
                          python="/Applications/QGIS.app/Contents/MacOS/bin/python3.9", has_pip=True)
    assert mac.count(" -m pip install ") == 1 and "torch==2.13.0" in mac
    assert "+cpu" not in mac and "--extra-index-url" not in mac  # macOS wheels on PyPI are the CPU build

    win = install_message({"rasterio": "ModuleNotFoundError: r", "torch": "OSError: [WinError 126] fbgemm.dll"},
                          r"C:\Users\u\deps", system="Windows", debian=False,
                          python=r"C:\OSGeo4W\apps\Python39\python.exe", has_pip=True)
    assert "OSGeo4W Shell" in win and "torch==2.13.0+cpu" in win and "WinError 126" in win
    # a pip rasterio must not bring a numpy that shadows QGIS's own
    assert f"rasterio torch==2.13.0+cpu numpy=={np.__version__}" in win
