# Sourced by the lent-GPU scripts (gpu_train.sh, gpu_finetune.sh) after they set ROOT: the
# output and work folders, the interpreter, this checkout importable as mstt_stvsr; and
# synth_parts, which synthesises clips there in parallel parts (one process a core), merged into
# one Vimeo-septuplet set.
OUT=${OUT:-$ROOT/build/gpu_out}
WORK=${WORK:-$(mktemp -d)}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
# the repository root is the package mstt_stvsr: import it under that name without installing
ln -sfn "$ROOT" "$WORK/mstt_stvsr"
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"

#   synth_parts CLIPS PARTS SIZE SEED0 PSF DATA
synth_parts() {
  local clips=$1 parts=$2 size=$3 seed0=$4 psf=$5 data=$6 per p rel clip
  per=$(( (clips + parts - 1) / parts ))
  for p in $(seq 0 $((parts - 1))); do
    "$PY" -m mstt_stvsr.core synth --quiet --out "$data.part$p" --clips "$per" --size "$size" --split train \
      --seed $((seed0 + p)) --psf "$psf" &
  done
  wait
  mkdir -p "$data/sequences"
  : > "$data/sep_trainlist.txt"
  for p in $(seq 0 $((parts - 1))); do
    for rel in $(cat "$data.part$p/sep_trainlist.txt"); do
      clip=${rel%%/*}
      mv "$data.part$p/sequences/$clip" "$data/sequences/p${p}_$clip"
      echo "p${p}_$rel" >> "$data/sep_trainlist.txt"
    done
  done
}
