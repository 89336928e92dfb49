#!/usr/bin/env bash
# Train the default weights on a lent GPU machine in one call, and bring them back.
#
# On the device tool (repository root, no internet, Python with torch/CUDA, OpenCV, safetensors;
# carry build/imagery, 24 MB, made here by `make imagery`):
#   run(command="bash tools/gpu_train.sh 6.5", carry=["build/imagery"], timeout_s=560)
# Dry run on this CPU (a few clips, a tiny network, seconds):
#   DRY_RUN=1 bash tools/gpu_train.sh 0.3
#
# Synthesises the training clips there (in parallel, one process per core, each a disjoint seed
# stream as `make data` makes them), trains with bf16 from the shipped weights for MINUTES with
# a cosine schedule over that time, and writes the weights, the log and the config to $OUT
# (the device tool brings back what is under $OUT). Evaluate them here on real video first
# (`make eval-real-candidate`, README) and ship them only if that improves.
set -euo pipefail
MINUTES=${1:?usage: gpu_train.sh MINUTES}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tools/gpu_common.sh"

if [ -n "${DRY_RUN:-}" ]; then
  CLIPS=${CLIPS:-4} PARTS=${PARTS:-2} SIZE=${SIZE:-96} CONFIG=configs/tiny.toml DEVICE=cpu BATCH=${BATCH:-2}
  LOADERS=${LOADERS:-2}  # the GPU's background sampling, exercised on the CPU
else
  CLIPS=${CLIPS:-800} PARTS=${PARTS:-$(nproc)} SIZE=${SIZE:-384} CONFIG=configs/default.toml DEVICE=cuda BATCH=${BATCH:-16}
fi
# a step takes a fraction of a second there: checkpoint (model + Adam state) every 500, not 20
sed 's/^ckpt_every *=.*/ckpt_every = 500/' "$ROOT/$CONFIG" > "$WORK/config.toml"
[ -d "$ROOT/build/imagery" ] || echo "note: no build/imagery; clips use procedural ground only" >&2

echo "== synthesising $CLIPS clips in $PARTS parts ($(date +%T))"
DATA="$WORK/data"
synth_parts "$CLIPS" "$PARTS" "$SIZE" 1000 0.6,1.2 "$DATA"
echo "== $(wc -l < "$DATA/sep_trainlist.txt") clips; training $MINUTES min on $DEVICE ($(date +%T))"

"$PY" -m mstt_stvsr.core train --config "$WORK/config.toml" --data "$DATA" --out "$WORK/train" --device "$DEVICE" \
  --batch "$BATCH" --loader-threads "${LOADERS:-auto}" --lr 2e-4 --schedule time --max-minutes "$MINUTES" --quiet \
  ${DRY_RUN:+--steps 2} $([ -z "${DRY_RUN:-}" ] && echo --init "$ROOT/resources/weights/mstt_default.safetensors") \
  --export "$OUT/weights.safetensors"
cp "$WORK/train/log.csv" "$OUT/train_log.csv"
cp "$WORK/train/config.json" "$OUT/train_config.json"
echo "== done ($(date +%T)): $OUT/weights.safetensors"
