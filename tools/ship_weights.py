#!/usr/bin/env python3
"""Replace the shipped weights by a training run's candidate and continue the training log.

Run it only after the real-video validation (``make eval-real-candidate``, or the same clips
with ``mstt-stvsr eval --crop``) showed the candidate better than the shipped weights, with a
multi-frame gain that is not negative; the synthetic held-out sets are reported beside it, never
decisive (README: "How good it is on real satellite video"). It

- writes the candidate's tensors to ``resources/weights/mstt_default.safetensors`` (atomically)
  with the candidate's metadata, ``trained_steps`` made cumulative (shipped + the run's) and
  ``last_run`` set to ``--note``;
- appends the run's ``log.csv`` to ``docs/train_log.csv`` with its steps and seconds continued
  from the log's last row, so the log stays one cumulative curve.

Usage:
  .venv/bin/python tools/ship_weights.py --candidate build/train/candidate.safetensors \
      --log build/train/neighbours/log.csv --note "1,900 steps, 135 min, 2-vCPU AMD EPYC, bf16 ..."
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "resources" / "weights" / "mstt_default.safetensors"
TRAIN_LOG = ROOT / "docs" / "train_log.csv"


def continued_rows(run_log: Path, step0: int, seconds0: float) -> list[dict]:
    """The run's rows with steps and seconds offset by the cumulative log's last row."""
    with open(run_log, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    last = {r["step"]: r for r in rows}  # a resumed run may log a step twice: keep the last one
    for step in sorted(last, key=int):
        r = dict(last[step])
        r["step"] = str(int(r["step"]) + step0)
        r["seconds"] = f"{float(r['seconds']) + seconds0:.1f}"
        out.append(r)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="the run's log.csv")
    p.add_argument("--note", required=True, help="one line on the run (steps, wall time, machine, settings)")
    p.add_argument("--dest", type=Path, default=SHIPPED)
    p.add_argument("--train-log", type=Path, default=TRAIN_LOG)
    args = p.parse_args(argv)

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(args.dest), "pt") as f:
        shipped_steps = int(f.metadata()["trained_steps"])
    with safe_open(str(args.candidate), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    run_steps = int(meta["trained_steps"])
    meta["trained_steps"] = str(shipped_steps + run_steps)
    meta["last_run"] = args.note

    with open(args.train_log, newline="") as f:
        old = list(csv.DictReader(f))
    fields = list(old[0].keys())
    new = continued_rows(args.log, int(old[-1]["step"]), float(old[-1]["seconds"]))

    tmp = args.dest.with_suffix(".part")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.dest)
    with open(args.train_log, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        for r in new:
            w.writerow({k: r.get(k, "") for k in fields})
    print(f"{args.dest}: trained_steps {shipped_steps} + {run_steps} = {meta['trained_steps']}; "
          f"{args.train_log}: +{len(new)} rows, last step {new[-1]['step'] if new else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
