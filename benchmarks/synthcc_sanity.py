"""SynthCC sanity benchmark: is the data set hard in the right way?

A clothing-colour matcher should do well on same-clothes queries and badly on
cloth-changing ones; a matcher given the true body parameters should do well on both.
Scored with reid.evaluation (general / same_clothes / cloth_changing protocols).

    python benchmarks/synthcc_sanity.py --preset bench --seed 0
    python benchmarks/synthcc_sanity.py --root /path/to/existing/synthcc
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from synth.people import generate_people  # noqa: E402
from synth.presets import PEOPLE_PRESETS, with_overrides  # noqa: E402
from synth.sanity import format_table, run_sanity  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="score an existing data set instead of generating one")
    ap.add_argument("--preset", default="bench", choices=sorted(PEOPLE_PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="knobs", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", type=Path, help="generate into this folder (kept) instead of a temporary one")
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="also score a ReID model file through reid.inference (e.g. a same-clothes peer); repeatable")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"# SynthCC sanity | {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC | "
          f"{platform.machine()}, {cv2.getNumberOfCPUs()} CPUs, python {platform.python_version()}")
    print(f"# command: python benchmarks/synthcc_sanity.py {' '.join(sys.argv[1:])}")
    with tempfile.TemporaryDirectory(prefix="synthcc_") as tmp:
        root = args.root
        if root is None:
            root = args.keep or Path(tmp) / "data"
            knobs = dict(k.split("=", 1) for k in args.knobs)
            cfg = with_overrides(PEOPLE_PRESETS[args.preset], knobs)
            generate_people(cfg, args.seed, root, preset=args.preset, force=args.keep is not None,
                            log=lambda m: print("# " + m))
        t0 = time.perf_counter()
        embedders = []
        if args.model:
            from reid.inference.factory import create_embedder

            embedders = [(f"ReID model {m.name}", create_embedder(m, backend="onnxruntime", threads=2))
                         for m in args.model]
        rows = run_sanity(root, embedders=tuple(embedders))
        print(f"# scored in {time.perf_counter() - t0:.1f} s\n")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
