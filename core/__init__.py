"""MSTT engine, importable without QGIS, as packages with one job each:

``net`` the network only (torch, no OpenCV/GDAL); ``geo`` georeferenced IO (rasterio);
``run`` the job on a stack (windows, tiles, optical flow, device, threads); ``training``
synthetic data, datasets, training and evaluation; ``bench`` the benchmark; ``cli`` the
``mstt-stvsr`` command. Nothing heavy is imported here, so ``import mstt_stvsr.core`` is cheap.
"""
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent  # the plugin (and repository) root


def plugin_version() -> str:
    """``version=`` of metadata.txt (the one place the version is kept, for QGIS too)."""
    try:
        for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""
