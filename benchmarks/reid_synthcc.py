"""CC-ReID methods on SynthCC `bench` (v2): last-epoch rank-1 and mAP per method over several runs, with diagnostics.

    python benchmarks/reid_synthcc.py [--data-seeds 1 2 3] [--rows baseline cal fire2] [--out runs/reid/bench_v2]
                                      [--jobs 2 --threads 1]

Run i uses data seed `--data-seeds[i]` (`python -m synth people --preset bench --seed S`, generated under
`--data-dir` when missing) and training seed S + 1, so the spread covers both the people drawn and the
training randomness. Each row's recipe (configs/reid/synthcc_cpu_*.yaml, with the row's overrides) is trained
with `python -m reid train --resume` (finished runs in --out are reused, interrupted ones continue), `--jobs` at
a time with `--threads` torch threads each (the figures in reid/README.md: 2 jobs of 1 thread on 2 cores; the
thread count changes the floating-point order, so runs with other thread counts give other, equally valid
numbers). Data seed 0 is the one the SynthCC recipes were tuned on: report other seeds. Prints:

* the Markdown table of last-epoch general / same-clothes / cloth-changing rank-1 and mAP, mean ± std over runs;
* the gap of each row to the baseline on cloth-changing and same-clothes rank-1 / mAP: mean of the per-run
  differences, the pooled std of the two rows (sqrt((s_a² + s_b²) / 2)) and the per-run differences;
* per run, the mean test cosine between images of one person in one outfit, one person in other outfits, and
  of different people (flip-summed, L2-normalised retrieval features);
* per FIRe² run and clustering epoch, the purity and inverse purity of the pseudo-labels against the SynthCC
  outfits, and clusters per identity (clothes labels read here for evaluation only; training never sees them).

Rows `cssc` and `cssc_nosmr` train configs/reid/synthcc_cpu_cssc.yaml, the second without the SMR modules
(`--set model.smr=false`: the two-branch trunk with the final identity and triplet terms only).

Rows `sci` and `sci_nosim` train configs/reid/synthcc_cpu_sci.yaml: SCI's whole path on a tiny CLIP built from
random weights (no CLIP file is used or fetched), the second without SIM (`--set model.sim=false`). They measure the
mechanics on SynthCC, not what SCI gains from pretrained CLIP (methods.md §7.4).
Rows `cre_bsga` (configs/reid/synthcc_cpu_cre_bsga.yaml: CRE + BSGA + batch cross-clothes triplet with the
outfit-aware sampler), `cre_only`, `cre_random_only`, `bsga_only`, `xtriplet_only` (each part alone on the
baseline, through the same recipe with the other parts switched off), `outfit_sampler_only` (the baseline with
the outfit-aware sampler: what the sampler alone does) and `cre_bsga_no_cre` / `_no_bsga` / `_no_xtri` (the full
method without one part). For runs with BSGA, the diagnostics add the share of the attention that falls on the
test images' body cells.

Row `baseline_grey` trains the baseline on the same people with every garment painted grey
(`--set clothes_grey=true`, in train and test): the documented ceiling for this network (synth/README.md).
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
ROWS = {  # label -> (recipe, extra --set overrides of the recipe, data knobs)
    "baseline": ("synthcc_cpu_baseline", [], []),
    "cal": ("synthcc_cpu_cal", [], []),
    "cal_eps01": ("synthcc_cpu_cal", ["loss.adv_epsilon=0.1"], []),
    "fire2": ("synthcc_cpu_fire2", [], []),
    "fire2_nofar": ("synthcc_cpu_fire2", ["loss.fire2.far_weight=0"], []),
    "fire2_noffm": ("synthcc_cpu_fire2", ["loss.fire2.ffm_weight=0"], []),
    "fire2_authors_k1": ("synthcc_cpu_fire2", ["loss.fire2.k1_fraction=1.0"], []),
    "fire2_eps01": ("synthcc_cpu_fire2", ["loss.fire2.epsilon=0.1"], []),
    "cssc": ("synthcc_cpu_cssc", [], []),
    # the same two-branch trunk without its SMR modules (no refinement, no SMR heads): the final losses only
    "cssc_nosmr": ("synthcc_cpu_cssc", ["model.smr=false"], []),
    # SCI with a tiny CLIP trained from scratch: no pretrained CLIP here, so not the paper's setting
    "sci": ("synthcc_cpu_sci", [], []),
    "sci_nosim": ("synthcc_cpu_sci", ["model.sim=false"], []),
    "baseline_grey": ("synthcc_cpu_baseline", [], ["clothes_grey=true"]),
    # Mu et al. (our reading, methods.md §5): CRE + BSGA + batch cross-clothes triplet, and each part added alone
    # to the baseline (the full recipe with the other parts switched off: same code path, same random stream)
    "cre_bsga": ("synthcc_cpu_cre_bsga", [], []),
    "cre_only": ("synthcc_cpu_cre_bsga", ["model.bsga=false", "loss.cre_bsga.xtri_weight=0", "data.sampler=pk"], []),
    "cre_random_only": ("synthcc_cpu_cre_bsga", ["model.bsga=false", "loss.cre_bsga.xtri_weight=0", "data.sampler=pk",
                                                 "loss.cre_bsga.cre_fill=random"], []),
    "bsga_only": ("synthcc_cpu_cre_bsga", ["loss.cre_bsga.cre_p=0", "loss.cre_bsga.xtri_weight=0", "data.sampler=pk"],
                  []),
    "xtriplet_only": ("synthcc_cpu_cre_bsga", ["loss.cre_bsga.cre_p=0", "model.bsga=false"], []),
    "outfit_sampler_only": ("synthcc_cpu_baseline", ["data.sampler=outfits"], []),
    # the full method without one part
    "cre_bsga_no_cre": ("synthcc_cpu_cre_bsga", ["loss.cre_bsga.cre_p=0"], []),
    "cre_bsga_no_bsga": ("synthcc_cpu_cre_bsga", ["model.bsga=false"], []),
    "cre_bsga_no_xtri": ("synthcc_cpu_cre_bsga", ["loss.cre_bsga.xtri_weight=0", "data.sampler=pk"], []),
}
TITLES = {"baseline": "ID + triplet baseline", "cal": "CAL (clothes labels; SynthCC recipe)",
          "cal_eps01": "CAL with the paper's ε = 0.1",
          "fire2": "FIRe² (FFM + FAR, no clothes labels; SynthCC variant)",
          "fire2_eps01": "FIRe² variant with the authors' ε = 0.1",
          "fire2_nofar": "FIRe² without FAR (FFM only)", "fire2_noffm": "FIRe² without L_FFM (FAR only)",
          "fire2_authors_k1": "FIRe² with the authors' k1 rule",
          "cssc": "CSSC (two branches + SMR, no clothes labels; SynthCC variant)",
          "cssc_nosmr": "CSSC trunk without SMR (two branches, final losses only)",
          "sci": "SCI, tiny CLIP from scratch (NO pretrained CLIP; SSE + SIM + CAL; SynthCC variant)",
          "sci_nosim": "SCI without SIM (tiny CLIP from scratch, SSE + CAL)",
          "baseline_grey": "baseline, clothes painted grey (ceiling)",
          "cre_bsga": "CRE + BSGA + cross-clothes triplet (masks, clothes labels; our reading of Mu et al.)",
          "cre_only": "CRE only (clothes erased to the mean, p 0.5)",
          "cre_random_only": "CRE only, random fill",
          "bsga_only": "BSGA only (body-shape-supervised attention)",
          "xtriplet_only": "cross-clothes triplet + outfit sampler only",
          "outfit_sampler_only": "baseline with the outfit-aware sampler",
          "cre_bsga_no_cre": "CRE + BSGA + triplet without CRE", "cre_bsga_no_bsga": "... without BSGA",
          "cre_bsga_no_xtri": "... without the cross-clothes triplet (P x K sampler)"}
COLUMNS = (("general", "test/general"), ("same-clothes", "test/same_clothes"),
           ("cloth-changing", "test/cloth_changing"))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def run_all(commands: list[tuple[Path, list[str]]], jobs: int) -> None:
    """Run the training commands, `jobs` at a time; each one's output goes to <out>.log; stop on a failure."""
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            out, cmd = pending.pop(0)
            (REPO / out).parent.mkdir(parents=True, exist_ok=True)
            log = (REPO / out).with_suffix(".log").open("a")
            print("$", " ".join(cmd), f"> {out}.log", flush=True)
            running.append((out, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log))
        out, proc, log = running[0]
        if proc.wait() != 0:
            raise SystemExit(f"training {out} failed (exit {proc.returncode}); see {out}.log")
        log.close()
        running.pop(0)


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def data_root(data_dir: Path, seed: int, knobs: list[str]) -> Path:
    suffix = "".join(f"_{k.replace('=', '-')}" for k in knobs)
    return data_dir / f"synthcc_bench_s{seed}{suffix}"


def ensure_data(root: Path, seed: int, knobs: list[str]) -> None:
    if (root / "meta.json").is_file():
        meta = json.loads((root / "meta.json").read_text())
        if meta.get("version") != 2 or meta.get("seed") != seed:
            raise SystemExit(f"{root} holds SynthCC version {meta.get('version')} seed {meta.get('seed')}, "
                             f"not version 2 seed {seed}: remove it or choose another --data-dir")
        return
    cmd = [sys.executable, "-m", "synth", "people", "--preset", "bench", "--seed", str(seed), "--out", str(root)]
    for k in knobs:
        cmd += ["--set", k]
    run(cmd)


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


def attention_inside(run_dir: Path, root: Path) -> float | None:
    """Share of BSGA's attention mass on body cells (mask share >= 0.5) over the test images; None without BSGA."""
    import torch

    from reid.checkpoint import load_checkpoint
    from reid.datasets import load_dataset
    from reid.datasets.masks import read_mask
    from reid.inference.base import preprocess_crops
    from reid.methods.cre_bsga import bsga_loss
    from reid.models.bsga import BSGATrunk
    from reid.transforms import read_bgr

    model, spec = load_checkpoint(run_dir / "model_last.safetensors")
    if not isinstance(model.backbone, BSGATrunk):
        return None
    ds = load_dataset("synthcc", str(root))
    recs = [r for r in list(ds.eval_splits[0].query) + list(ds.eval_splits[0].gallery) if r.mask_path]
    shares = []
    with torch.no_grad():
        for s in range(0, len(recs), 256):
            batch = recs[s:s + 256]
            x = torch.from_numpy(preprocess_crops([read_bgr(r.path) for r in batch], spec))
            masks = torch.from_numpy(np.stack([read_mask(r.mask_path) for r in batch]))
            _, logits = model.backbone.forward_attention(x)
            shares.append(float(bsga_loss(logits, masks, (1, 2, 3, 4, 5, 6))[1]) * len(batch))
    return sum(shares) / max(len(recs), 1)


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


def gap(rows: list[dict], base: list[dict], key: str, metric: str) -> tuple[float, float, list[float]]:
    """Mean of the per-run differences to the baseline (runs paired by data seed) and the pooled std."""
    a = np.array([r["last"][key][metric] for r in rows])
    b = np.array([r["last"][key][metric] for r in base])
    diffs = a - b
    pooled = float(np.sqrt((a.std(ddof=1) ** 2 + b.std(ddof=1) ** 2) / 2)) if len(a) > 1 else float("nan")
    return float(diffs.mean()), pooled, diffs.round(1).tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--jobs", type=int, default=1, help="trainings run at the same time")
    ap.add_argument("--threads", type=int, help="torch threads per training (default: the recipe's)")
    ap.add_argument("--out", default="runs/reid/bench_v2")
    ap.add_argument("--rows", nargs="+", default=["baseline", "cal", "fire2"], choices=list(ROWS))
    ap.add_argument("--epochs", type=int, help="override the recipes' epoch count (quick checks only)")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip the cosine and cluster diagnostics")
    args = ap.parse_args()
    summaries: dict[str, list[dict]] = {m: [] for m in args.rows}
    roots: dict[tuple[str, int], Path] = {}
    commands = []
    for seed in args.data_seeds:
        for label in args.rows:
            recipe, sets, knobs = ROWS[label]
            root = data_root(args.data_dir, seed, knobs)
            ensure_data(root, seed, knobs)
            roots[(label, seed)] = root
            out = Path(args.out) / f"{label}_data{seed}"
            cmd = [sys.executable, "-m", "reid", "train", f"configs/reid/{recipe}.yaml", "--root", str(root),
                   "--output-dir", str(out), "--seed", str(seed + 1), "--no-progress", "--resume"]
            for s in sets:
                cmd += ["--set", s]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            commands.append((out, cmd))
    run_all(commands, args.jobs)
    for seed in args.data_seeds:
        for label in args.rows:
            out = Path(args.out) / f"{label}_data{seed}"
            summaries[label].append(json.loads((REPO / out / "summary.json").read_text()))

    s0 = summaries[args.rows[0]][0]
    print(f"\nSynthCC bench v2, last epoch ({s0['last_epoch']}), runs = data seeds {args.data_seeds} with training "
          f"seed = data seed + 1; {platform.node()}, {datetime.now(timezone.utc):%Y-%m-%d}")
    print("| method | " + " | ".join(f"{c} R-1 | {c} mAP" for c, _ in COLUMNS) + " | train min |")
    print("|" + "---|" * (2 + 2 * len(COLUMNS)))
    for label in args.rows:
        runs = summaries[label]
        cells = []
        for _, key in COLUMNS:
            cells.append(cell([r["last"][key]["rank1"] for r in runs]))
            cells.append(cell([r["last"][key]["mAP"] for r in runs]))
        print(f"| {TITLES[label]} | " + " | ".join(cells) + f" | {cell([r['train_seconds'] / 60 for r in runs])} |")

    if "baseline" in args.rows:
        print("\nGap to the baseline: mean of per-run differences (pooled std) [per run]")
        for label in args.rows:
            if label == "baseline":
                continue
            parts = []
            for name, key in (("CC", "test/cloth_changing"), ("SC", "test/same_clothes")):
                for metric, short in (("rank1", "R-1"), ("mAP", "mAP")):
                    m, sd, diffs = gap(summaries[label], summaries["baseline"], key, metric)
                    parts.append(f"{name} {short} {m:+.1f} ({sd:.1f}) {diffs}")
            print(f"  {label:<16} " + "; ".join(parts))

    if args.no_diagnostics:
        return 0
    print("\nTest-set mean cosine (last epoch): same person same outfit / same person other outfit / other people")
    for label in args.rows:
        for seed in args.data_seeds:
            c = test_cosines(REPO / args.out / f"{label}_data{seed}", roots[(label, seed)])
            print(f"  {label:<16} data {seed}: {c['same_outfit']:.3f} / {c['cross_outfit']:.3f} / "
                  f"{c['other_person']:.3f}")

    mu_rows = [r for r in args.rows if ROWS[r][0] == "synthcc_cpu_cre_bsga"]
    if mu_rows:
        print("\nBSGA attention on the test images: share of the attention mass on body cells (uniform attention gives "
              "the body cells' share of the map); last-epoch training logs: share of anchors whose closest "
              "cross-clothes positive beats their closest negative (xtri_hit)")
        for label in mu_rows:
            for seed in args.data_seeds:
                run_dir = REPO / args.out / f"{label}_data{seed}"
                inside = attention_inside(run_dir, roots[(label, seed)])
                last = json.loads((run_dir / "history.jsonl").read_text().splitlines()[-1])["train"]
                print(f"  {label:<16} data {seed}: attention on body "
                      f"{'-' if inside is None else f'{inside:.3f}'}, xtri_hit {last.get('xtri_hit', 0):.3f}")

    fire_rows = [r for r in args.rows if r.startswith("fire2")]
    if fire_rows:
        print("\nFIRe² pseudo-labels vs SynthCC outfits (train split; evaluation only): "
              "epoch: purity / inverse purity / clusters per id (12 outfits per id)")
        for label in fire_rows:
            for seed in args.data_seeds:
                q = cluster_quality(REPO / args.out / f"{label}_data{seed}", roots[(label, seed)])
                print(f"  {label} data {seed}: " + ", ".join(f"{e}: {p:.3f}/{i:.3f}/{n:.2f}" for e, p, i, n in q))
    return 0


if __name__ == "__main__":
    sys.exit(main())
