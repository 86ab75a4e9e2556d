"""ID + triplet baseline vs CAL on SynthCC `bench`: general / same-clothes / cloth-changing, last epoch.

    python benchmarks/reid_synthcc_cal.py --root data/synthcc_bench [--seeds 1 2 3] [--out runs/reid/bench]

Generates the data set first when --root does not exist (`python -m synth people --preset bench --seed 0`),
trains configs/reid/synthcc_cpu_{baseline,cal}.yaml once per seed with `python -m reid train --resume` (a
finished run in --out is reused, an interrupted one continues), and prints a
Markdown table of last-epoch rank-1 / mAP (mean ± std over seeds when several), plus the best-epoch row that
the papers' code would report (selected on the test split, so not an honest figure).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("baseline", "cal")
COLUMNS = (("general", "test/general"), ("same-clothes", "test/same_clothes"),
           ("cloth-changing", "test/cloth_changing"))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/synthcc_bench")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default="runs/reid/bench")
    ap.add_argument("--epochs", type=int, help="override the recipes' epoch count (quick checks only)")
    args = ap.parse_args()
    root = Path(args.root)
    if not root.exists():
        run([sys.executable, "-m", "synth", "people", "--preset", "bench", "--seed", str(args.data_seed),
             "--out", str(root)])
    summaries: dict[str, list[dict]] = {m: [] for m in METHODS}
    for method in METHODS:
        for seed in args.seeds:
            out = Path(args.out) / f"{method}_seed{seed}"
            cmd = [sys.executable, "-m", "reid", "train", f"configs/reid/synthcc_cpu_{method}.yaml", "--root",
                   str(root), "--output-dir", str(out), "--seed", str(seed), "--no-progress", "--resume"]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            run(cmd)
            summaries[method].append(json.loads((REPO / out / "summary.json").read_text()))

    s0 = summaries[METHODS[0]][0]
    print(f"\nSynthCC bench (data seed {args.data_seed}), last epoch ({s0['last_epoch']}), "
          f"train seeds {args.seeds}; {platform.node()}, {datetime.now(timezone.utc):%Y-%m-%d}")
    head = "| method | " + " | ".join(f"{c} R-1 | {c} mAP" for c, _ in COLUMNS) + " | train s |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(COLUMNS)))
    for which, label in (("last", ""), ("best", " (best epoch, test-selected)")):
        for method in METHODS:
            runs = summaries[method]
            cells = []
            for _, key in COLUMNS:
                cells.append(cell([r[which][key]["rank1"] for r in runs]))
                cells.append(cell([r[which][key]["mAP"] for r in runs]))
            secs = cell([r["train_seconds"] for r in runs])
            print(f"| {method}{label} | " + " | ".join(cells) + f" | {secs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
