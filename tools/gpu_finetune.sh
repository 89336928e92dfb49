#!/usr/bin/env bash
# Fine-tune the network on a user's video on a lent GPU machine in one call, and bring the
# weights back.
#
# On the device tool (repository root, no internet, Python with torch/CUDA, OpenCV, safetensors;
# the video folders must be ignored paths of the checkout, e.g. build/videos/..., carried along
# with build/imagery, 20 MB, made here by `make imagery`; carry takes 64 MiB in all):
#   run(command="bash tools/gpu_finetune.sh 8 build/videos/mine", carry=["build/imagery", "build/videos"],
#       timeout_s=580)
# Dry run on this CPU (a tiny network, a few clips, seconds):
#   DRY_RUN=1 WEIGHTS=tiny.safetensors bash tools/gpu_finetune.sh 0.5 VIDEO
#
# Synthesises the synthetic share's clips there first (in parallel, one process per core; not
# counted in MINUTES, about a minute for 128 clips on 16 cores), then runs `mstt-stvsr finetune`
# for MINUTES (its time box: both validations included) with bf16 on the GPU, batch 16, and
# writes the weights, their record (`mstt-stvsr info --weights`), the plan and the log to $OUT
# (the device tool brings back what is under $OUT). Video under a 'realvideo' folder needs
# ALLOW_VALIDATION_DATA=1, and the weights are then a throwaway copy: never commit them.
set -euo pipefail
MINUTES=${1:?usage: gpu_finetune.sh MINUTES VIDEO [VIDEO ...]}
shift
[ $# -ge 1 ] || { echo "usage: gpu_finetune.sh MINUTES VIDEO [VIDEO ...]" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tools/gpu_common.sh"

if [ -n "${DRY_RUN:-}" ]; then
  CLIPS=${CLIPS:-2} PARTS=${PARTS:-2} SIZE=${SIZE:-96} CONFIG=configs/tiny.toml DEVICE=cpu BATCH=${BATCH:-2}
  EXTRA=(--crop 20 --steps 2 --threads 2)
else
  CLIPS=${CLIPS:-128} PARTS=${PARTS:-$(nproc)} SIZE=${SIZE:-384} CONFIG=configs/default.toml DEVICE=cuda BATCH=${BATCH:-16}
  EXTRA=()
fi
SHARE=${SYNTH_SHARE:-0.25}
# a step takes a fraction of a second there: checkpoint (model + Adam state) every 500, not 20
sed 's/^ckpt_every *=.*/ckpt_every = 500/' "$ROOT/$CONFIG" > "$WORK/config.toml"

DATA="$WORK/data"
if [ "$SHARE" != "0" ]; then
  [ -d "$ROOT/build/imagery" ] || echo "note: no build/imagery; synthetic clips use procedural ground only" >&2
  echo "== synthesising $CLIPS clips in $PARTS parts for the synthetic share $SHARE ($(date +%T))"
  synth_parts "$CLIPS" "$PARTS" "$SIZE" 2000 0.6,1.2 "$DATA"
fi

echo "== fine-tuning $MINUTES min on $DEVICE: $* ($(date +%T))"
"$PY" -m mstt_stvsr.core finetune "$@" -o "$OUT/finetuned.safetensors" --config "$WORK/config.toml" \
  --device "$DEVICE" --batch "$BATCH" --minutes "$MINUTES" --synth-share "$SHARE" --synth-data "$DATA" \
  --work "$WORK/run" ${WEIGHTS:+--weights "$WEIGHTS"} ${ALLOW_VALIDATION_DATA:+--allow-validation-data} \
  ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee "$OUT/finetune_log.txt"
"$PY" -m mstt_stvsr.core info --weights "$OUT/finetuned.safetensors" > "$OUT/finetuned_info.txt"
cp "$WORK/run/finetune.json" "$OUT/finetune_plan.json"
cp "$WORK/run/log.csv" "$OUT/train_log.csv" 2>/dev/null || true
echo "== done ($(date +%T)): $OUT/finetuned.safetensors"
