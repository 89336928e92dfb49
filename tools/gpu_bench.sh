#!/usr/bin/env bash
# The GPU benchmark of issues 13 and 26 on a lent GPU machine in one call of ~5 minutes, results back.
#
# Here, once (36 MB of wheels: rasterio with its bundled GDAL, for the end-to-end GeoTIFF IO;
# the GPU machine has no internet and no rasterio):
#   bash tools/gpu_wheels.sh 3.12
# On the device tool (repository root, Python 3.12 with torch/CUDA, OpenCV, safetensors):
#   run(command="bash tools/gpu_bench.sh", carry=["build/gpu_wheels/cp312"], timeout_s=330)
# Dry run on this CPU (tiny sizes, compile skipped, well under a minute):
#   DRY_RUN=1 bash tools/gpu_bench.sh
#
# Runs `python -m mstt_stvsr.core bench` in three parts, each its own process under its own
# time limit inside BUDGET_S (default 270 s), so that a slow part cannot lose the others'
# results: (1) network throughput of the full model, tiles 80/160/320, batches 1/4, fp32
# (reference), fp16 and bf16, plus the default path against NCHW and eager fp32; (2) end to
# end on a synthetic 2048 x 2048 LR 4-frame stack (busy time per stage, the share of wall time
# the network waits for flow, reads and writes, and the same stack through `mstt-stvsr run` in
# a fresh process, which must agree within 15 %); (3) torch.compile on, at the tiles and
# precisions that fit the time left (COMPILE_TILES, default 160; COMPILE_PRECISIONS, bf16).
# Writes to $OUT each part's JSON, text report and log, then results.json and results.md (the
# table with the device name, for README); skipped or timed-out parts are named in the notes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/build/gpu_bench_out}
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT  # the installed wheels and the package link; results are in $OUT
fi
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
NOTES=()
PARTS=()

# the repository root is the package mstt_stvsr: import it under that name without installing
ln -sfn "$ROOT" "$WORK/mstt_stvsr"
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"

# wheels for this interpreter only (pip would refuse others; carrying one version keeps the
# carried size at half); installed without dependency resolution, since the machine's own
# numpy must stay the one torch was built against
TAG=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEELS=${WHEELS:-$ROOT/build/gpu_wheels/$TAG}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
  # without pip (or with one that refuses): a wheel is a zip laid out for site-packages, and
  # these unpack as they are; a failure here only costs the end-to-end part (noted below)
  "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$WORK/site" \
    "$WHEELS"/*.whl \
  || "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
    "$WORK/site" "$WHEELS"/*.whl \
  || echo "note: installing the wheels failed" >&2
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
else
  echo "note: no wheels in $WHEELS (make them with tools/gpu_wheels.sh)" >&2
fi
if "$PY" -c 'import rasterio, affine; print("== rasterio", rasterio.__version__, "from", rasterio.__file__)'; then
  E2E=1
else
  E2E=
  NOTES+=("end to end: skipped, rasterio not importable (no usable wheels in $WHEELS; see tools/gpu_wheels.sh)")
fi

if [ -n "${DRY_RUN:-}" ]; then
  DEVICE=cpu BUDGET_S=${BUDGET_S:-120}
  SIZES=(--tiles 80 --batches 1 --precisions fp32 --reps 1 --warmup 0 --threads 2)
  NETWORK=(--compare-tile 0)
  E2E_ARGS=(--scene 80 --e2e-tile 80 --e2e-precision fp32)
  COMPILE=
  NOTES+=("dry run on the CPU: tiny sizes, one repetition; torch.compile skipped (a minute of compiling on a CPU)")
else
  DEVICE=cuda BUDGET_S=${BUDGET_S:-270}
  SIZES=()
  NETWORK=(--tiles 80,160,320 --batches 1,4 --precisions fp32,fp16,bf16 --compare-tile 160)
  # the pipeline's own tile choice (from free memory); its untiled reference is measured too
  E2E_ARGS=(--tiles 160 --batches 1 --precisions bf16 --reps 1 --scene 2048)
  COMPILE=(--tiles "${COMPILE_TILES:-160}" --batches 1 --precisions "${COMPILE_PRECISIONS:-bf16}")
fi
# BENCH_WEIGHTS: another weights file (the CPU dry-run test passes a tiny network's)
WEIGHTS_ARG=()
[ -z "${BENCH_WEIGHTS:-}" ] || WEIGHTS_ARG=(--weights "$BENCH_WEIGHTS")
DEADLINE=$(( SECONDS + BUDGET_S ))
MIN_PART_S=${MIN_PART_S:-40}  # less does not load, autotune and measure, let alone compile

# part NAME LIMIT_S ARGS...: one bench process, at most LIMIT_S and never past the deadline;
# JSON, report and log go to $OUT, how it ended to the notes
part() {
  local name=$1 limit=$2 left=$(( DEADLINE - SECONDS )) t0=$SECONDS rc=0
  shift 2
  (( limit <= left )) || limit=$left
  if (( limit < MIN_PART_S )); then
    NOTES+=("$name: skipped, ${left} s left of the ${BUDGET_S} s budget")
    return
  fi
  echo "== $name: limit ${limit} s ($(date +%T))"
  rm -f "$OUT/$name.json"  # a timed-out part must not report an earlier run's figures
  timeout -k 10 "$limit" "$PY" -m mstt_stvsr.core bench --device "$DEVICE" --json "$OUT/$name.json" \
    ${WEIGHTS_ARG[@]+"${WEIGHTS_ARG[@]}"} "$@" \
    > "$OUT/$name.txt" 2> >(tee "$OUT/$name.log" >&2) || rc=$?
  PARTS+=("$name=$OUT/$name.json")
  case $rc in
    0) NOTES+=("$name: $(( SECONDS - t0 )) s wall") ;;
    124|137) NOTES+=("$name: timed out after ${limit} s (partial figures in $name.log)") ;;
    *) NOTES+=("$name: failed, exit $rc (see $name.log)") ;;
  esac
}

part network "${NETWORK_S:-80}" "${SIZES[@]}" "${NETWORK[@]}" --scene 0 --window-frames 0
if [ -n "$E2E" ]; then
  part e2e "${E2E_S:-145}" "${SIZES[@]}" "${E2E_ARGS[@]}" --compare-tile 0 --window-frames 0
fi
if [ -n "$COMPILE" ]; then
  # whatever is left: compiling the stages takes about a minute per shape and precision
  NOTES+=("torch.compile: only tile(s) ${COMPILE_TILES:-160}, ${COMPILE_PRECISIONS:-bf16}, batch 1; other rows eager")
  part compile "$BUDGET_S" "${COMPILE[@]}" --compile --scene 0 --compare-tile 0 --window-frames 0
fi

note_args=()
for n in "${NOTES[@]}"; do note_args+=(--note "$n"); done
"$PY" -m mstt_stvsr.core.bench.combine --out "$OUT" "${note_args[@]}" "${PARTS[@]}"
echo "== done ($(date +%T)): $OUT/results.md, $OUT/results.json"
