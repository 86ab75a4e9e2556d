"""CC-ReID methods on SynthCC `bench`: last-epoch rank-1 and mAP per method, plus diagnostics.

    python benchmarks/reid_synthcc.py --root data/synthcc_bench [--seeds 1 2] [--rows baseline cal fire2 fire2_nofar]

Generates the data set when --root does not exist (`python -m synth people --preset bench --seed 0`), trains
each row's recipe (configs/reid/synthcc_cpu_*.yaml, with the row's overrides) once per seed with
`python -m reid train --resume` (finished runs in --out are reused, interrupted ones continue), and prints:

* the Markdown table of last-epoch general / same-clothes / cloth-changing rank-1 and mAP (mean ± std over
  seeds when several);
* per run, the mean cosine on the test set between images of one person in the same outfit, of one person
  in different outfits, and of different people (flip-summed, L2-normalised retrieval features);
* with --best, also the best-epoch rows the papers' code reports (selected on the test split, so not an
  honest figure);
* per FIRe² run and clustering epoch, the purity and inverse purity of the pseudo-labels against the
  SynthCC outfit labels, and clusters per identity. Clothes labels are read here, for evaluation only;
  training never sees them.
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
sys.path.insert(0, str(REPO))
ROWS = {  # label -> (recipe, extra --set overrides)
    "baseline": ("synthcc_cpu_baseline", []),
    "cal": ("synthcc_cpu_cal", []),
    "fire2": ("synthcc_cpu_fire2", []),
    "fire2_nofar": ("synthcc_cpu_fire2", ["loss.fire2.far_weight=0"]),
    "fire2_noffm": ("synthcc_cpu_fire2", ["loss.fire2.ffm_weight=0"]),
}
TITLES = {"baseline": "ID + triplet baseline", "cal": "CAL (clothes labels)", "fire2": "FIRe² (FFM + FAR)",
          "fire2_nofar": "FIRe² without FAR (FFM only)", "fire2_noffm": "FIRe² without L_FFM (FAR only)"}
COLUMNS = (("general", "test/general"), ("same-clothes", "test/same_clothes"),
           ("cloth-changing", "test/cloth_changing"))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def test_cosines(run_dir: Path, root: Path) -> dict[str, float]:
    import torch

    from reid.checkpoint import load_checkpoint
    from reid.datasets import load_dataset
    from reid.train import extract_features

    model, spec = load_checkpoint(run_dir / "model_last.safetensors")
    ds = load_dataset("synthcc", str(root))
    recs = list(ds.eval_splits[0].query) + list(ds.eval_splits[0].gallery)
    f = extract_features(model, recs, spec, torch.device("cpu"), 256, flip=True)
    pid = np.array([r.pid for r in recs])
    clo = np.array([r.clothes for r in recs])
    s = f @ f.T
    same_p = pid[:, None] == pid[None]
    same_c = clo[:, None] == clo[None]
    off = ~np.eye(len(f), dtype=bool)
    return {"same_outfit": float(s[same_p & same_c & off].mean()), "cross_outfit": float(s[same_p & ~same_c].mean()),
            "other_person": float(s[~same_p].mean())}


def cluster_quality(run_dir: Path, root: Path) -> list[tuple[int, float, float, float]]:
    from reid.datasets import load_dataset
    from reid.fire2 import cluster_purity

    ds = load_dataset("synthcc", str(root))
    clothes = np.array([r.clothes for r in ds.train])
    pids = np.array([r.pid for r in ds.train])
    rows = []
    for path in sorted((run_dir / "fire2").glob("labels_epoch*.npy")):
        labels = np.load(path)
        pur, inv = cluster_purity(labels, clothes)
        per_id = len(np.unique(labels)) / len(np.unique(pids))
        rows.append((int(path.stem[-3:]), pur, inv, per_id))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/synthcc_bench")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default="runs/reid/bench")
    ap.add_argument("--rows", nargs="+", default=list(ROWS)[:4], choices=list(ROWS),
                    help="rows to train and print (default: the first four; add fire2_noffm for the FAR-only ablation)")
    ap.add_argument("--epochs", type=int, help="override the recipes' epoch count (quick checks only)")
    ap.add_argument("--best", action="store_true", help="also print the test-selected best-epoch rows")
    args = ap.parse_args()
    root = Path(args.root)
    if not root.exists():
        run([sys.executable, "-m", "synth", "people", "--preset", "bench", "--seed", str(args.data_seed),
             "--out", str(root)])
    summaries: dict[str, list[dict]] = {m: [] for m in args.rows}
    for seed in args.seeds:
        for label in args.rows:
            recipe, sets = ROWS[label]
            out = Path(args.out) / f"{label}_seed{seed}"
            cmd = [sys.executable, "-m", "reid", "train", f"configs/reid/{recipe}.yaml", "--root", str(root),
                   "--output-dir", str(out), "--seed", str(seed), "--no-progress", "--resume"]
            for s in sets:
                cmd += ["--set", s]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            run(cmd)
    for label in args.rows:
        for seed in args.seeds:
            summaries[label].append(json.loads((REPO / args.out / f"{label}_seed{seed}" / "summary.json").read_text()))

    s0 = summaries[args.rows[0]][0]
    print(f"\nSynthCC bench (data seed {args.data_seed}), last epoch ({s0['last_epoch']}), train seeds {args.seeds}; "
          f"{platform.node()}, {datetime.now(timezone.utc):%Y-%m-%d}")
    print("| method | " + " | ".join(f"{c} R-1 | {c} mAP" for c, _ in COLUMNS) + " | train s |")
    print("|" + "---|" * (2 + 2 * len(COLUMNS)))
    for which, suffix in (("last", ""), ("best", " (best epoch, test-selected)"))[:2 if args.best else 1]:
        for label in args.rows:
            runs = summaries[label]
            cells = []
            for _, key in COLUMNS:
                cells.append(cell([r[which][key]["rank1"] for r in runs]))
                cells.append(cell([r[which][key]["mAP"] for r in runs]))
            print(f"| {TITLES[label]}{suffix} | " + " | ".join(cells)
                  + f" | {cell([r['train_seconds'] for r in runs])} |")

    print("\nTest-set mean cosine (last epoch): same person same outfit / same person other outfit / other people")
    for label in args.rows:
        for seed in args.seeds:
            c = test_cosines(REPO / args.out / f"{label}_seed{seed}", root)
            print(f"  {label:<12} seed {seed}: {c['same_outfit']:.3f} / {c['cross_outfit']:.3f} / "
                  f"{c['other_person']:.3f}")

    fire_rows = [r for r in args.rows if r.startswith("fire2")]
    if fire_rows:
        print("\nFIRe² pseudo-labels vs SynthCC outfits (train split; evaluation only): "
              "epoch: purity / inverse purity / clusters per id (3 outfits per id)")
        for label in fire_rows:
            for seed in args.seeds:
                q = cluster_quality(REPO / args.out / f"{label}_seed{seed}", root)
                print(f"  {label} seed {seed}: " + ", ".join(f"{e}: {p:.3f}/{i:.3f}/{n:.2f}" for e, p, i, n in q))
    return 0


if __name__ == "__main__":
    sys.exit(main())
