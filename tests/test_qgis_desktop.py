"""The real QGIS desktop on Xvfb: the plugin from its ZIP in a fresh profile, the algorithm's
dialog opened from the Plugins menu, the sample stack run with the shipped weights, then the
Layers panel and the Temporal Controller as a user sees them, and a second run of the same stack
with a layer of the first group selected. The session itself is tests/qgis_desktop_script.py.

Screenshots (the dialog, the loaded result) go to the test's folder; with MSTT_SCREENSHOTS=DIR
they are copied to DIR too (docs/ holds the ones the README shows).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from qgis_fixtures import REPO, VENV, profile_with_plugin_zip, user_env

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

SAMPLE = sorted(str(p) for p in (REPO / "resources" / "sample").glob("frame_*.tif"))
EN_DASH = "\u2013"

if not (shutil.which("xvfb-run") and Path("/usr/bin/qgis").exists()):
    pytest.skip("needs xvfb-run and the QGIS desktop (make setup installs both)", allow_module_level=True)


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("desktop")
    profile = profile_with_plugin_zip(root)
    site = subprocess.run([str(VENV / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch for QGIS's Python as the installer would leave it (test_qgis_installer.py does that for real)
    (profile / "profiles" / "default" / "python" / "mstt_stvsr_deps").symlink_to(site)
    config = dict(inputs=SAMPLE, out1=str(root / "run1"), out2=str(root / "run2"), tiny_weights=str(tiny_weights),
                  shot_dialog=str(root / "qgis_dialog.png"), shot_result=str(root / "qgis_result.png"),
                  result=str(root / "found.json"), run_timeout_s=400)
    (root / "config.json").write_text(json.dumps(config))
    env = user_env(profile, MSTT_DESKTOP_CONFIG=root / "config.json")
    env.pop("QT_QPA_PLATFORM")  # a real X display (Xvfb), not offscreen
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x860x24", "/usr/bin/qgis", "--nologo",
                           "--noversioncheck", "--code", str(REPO / "tests" / "qgis_desktop_script.py")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert Path(config["result"]).exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    found = json.loads(Path(config["result"]).read_text())
    assert "error" not in found, found["error"]
    target = os.environ.get("MSTT_SCREENSHOTS")
    if target:
        for shot in ("shot_dialog", "shot_result"):
            shutil.copy(config[shot], Path(target) / Path(config[shot]).name)
    return found, config


def test_dialog_from_the_menu_runs_the_sample_into_a_collapsed_top_level_group(session):
    found, config = session
    assert found["dialog_title"].startswith("Space-time super-resolution")
    assert found["params1"]["TILE_SIZE"] == "auto" and found["params1"]["OVERLAP"] == "16"
    label = f"frame_x4 2019-07-15 18:05:30.000{EN_DASH}18:05:30.400"  # 10 fps in, 0.05 s out
    (group,) = found["tree1"]
    assert group["name"] == label and group["nested_groups"] == []
    assert group["layers"] == [f"frame_x4_t{k:03d} 18:05:30.{50 * k:03d}" for k in range(9)]
    assert not group["view_expanded"] and group["legends_expanded"] == 0  # as the Layers panel shows it
    for shot in ("shot_dialog", "shot_result"):
        assert Path(config[shot]).stat().st_size > 20_000


def test_temporal_controller_steps_one_frame_and_shows_milliseconds(session):
    found, _ = session
    time1 = found["time1"]
    assert (time1["project_step"], time1["project_unit"]) == (50.0, 0)  # QgsUnitTypes.TemporalMilliseconds
    assert time1["frame_duration_s"] == pytest.approx(0.05) and time1["total_frames"] == 9
    assert time1["extent"] == ["2019-07-15T18:05:30.000", "2019-07-15T18:05:30.450"]
    assert time1["panel_unit"].lower().startswith("millisecond") and time1["panel_step"].startswith("50")
    label = found["time1_animated"]["panel_label"]  # animating, at frame 3 of 9
    assert label.startswith("Current frame: 2019-07-15 18:05:30.150 ") and label.endswith(" 2019-07-15 18:05:30.200")


def test_second_run_with_a_layer_of_the_first_group_selected(session):
    found, _ = session
    label = f"frame_x4 2019-07-15 18:05:30.000{EN_DASH}18:05:30.400"
    names = [g["name"] for g in found["tree2"]]
    assert names == [f"{label} (2)", label]  # top level, newest first; nothing inside the first group
    second, first = found["tree2"]
    assert first["nested_groups"] == [] and len(first["layers"]) == 9
    assert second["layers"] == [f"frame_x4_t{k:03d} 18:05:30.{50 * k:03d} (2)" for k in range(9)]
    assert not second["view_expanded"] and second["legends_expanded"] == 0
