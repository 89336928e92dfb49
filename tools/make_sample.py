#!/usr/bin/env python3
"""Regenerate resources/sample/ (the georeferenced demo/test stack) from the held-out NEON still.

Needs the imagery of tools/fetch_imagery.py. Deterministic: the same files come out each time
(seed and all parameters are in core/training/sample.py ``SAMPLE``). ``--gt DIR`` also writes the 2N-1
HR truth frames (0.2 m) that a perfect space-time super-resolution would produce.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:
    from mstt_stvsr.core.training.imagery import IMAGERY_DIR
    from mstt_stvsr.core.training.sample import make_sample_stack
except ImportError:
    raise SystemExit("mstt_stvsr is not importable: run `make setup` and use .venv/bin/python") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "resources" / "sample")
    ap.add_argument("--imagery", type=Path, default=IMAGERY_DIR)
    ap.add_argument("--gt", type=Path, default=None, help="also write the HR truth frames here")
    args = ap.parse_args(argv)
    for p in make_sample_stack(args.out, args.imagery, args.gt):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
