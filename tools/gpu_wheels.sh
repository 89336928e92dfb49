#!/usr/bin/env bash
# Download the wheels tools/gpu_bench.sh installs on a lent GPU machine, which has no internet
# and no rasterio (its end-to-end run reads and writes GeoTIFFs); rasterio's manylinux wheel
# bundles GDAL, so nothing else is needed there.
#   bash tools/gpu_wheels.sh          # CPython 3.12, the GPU machine's -> build/gpu_wheels/cp312
#   bash tools/gpu_wheels.sh 3.11     # this machine's, to dry-run the install step here
# build/ is git-ignored; the device tool carries build/gpu_wheels (limit 64 MiB for all carried
# paths together, so the total is printed).
set -euo pipefail
VERSION=${1:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${DEST:-$ROOT/build/gpu_wheels/cp${VERSION/./}}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
# binary wheels for the target interpreter whatever runs this pip; rasterio < 1.5 still has
# manylinux2014 wheels for both 3.11 and 3.12
"$PY" -m pip download --quiet --only-binary=:all: --python-version "$VERSION" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$DEST" "rasterio>=1.3,<1.5"
# numpy comes with the machine's torch; a second copy on PYTHONPATH would shadow it
rm -f "$DEST"/numpy-*.whl
ls -1 "$DEST"
du -sh "$DEST"
