"""Would whole identities link through a clothing change where single tracklets do not? An offline probe on
SynthCC scene runs.

    .venv/bin/python benchmarks/identity_merge_synthcc.py --runs DIR/bench-s3-changes-yes/run-default ...
        --model cc.safetensors [--per-track 8] [--thresholds 0.5,0.6,0.7]

Each RUN is a folder `benchmarks/mtmc_synthcc.py` wrote (`<work>/<scene set>/run-<label>`, beside its `scene`):
the pipeline's tracks (`mot/`) and the final identity of each track (the run's store). With the default
same-clothes model those identities are mostly one person in one outfit (1.85 a person where everyone changes
clothes). The probe embeds every track's boxes (up to `--per-track`, 64 px or taller, spread over the track)
with `--model`, a clothes-changing model, levelled per camera to the model's colour reference from all the
crops the probe takes of that camera (what a warm store would hold), averages them per identity, and reports:

* the cosine between identities of one person (in two outfits) and of different people (10th, 50th, 90th
  percentiles): how far apart the model puts them once many crops are averaged;
* for each identity that has another identity of the same person, whether that one is its nearest identity;
* what merging would give: identities joined greedily, closest pair first, while their cosine reaches each
  threshold and neither has a track at the same time as the other's (on one camera, or for more than a second
  on two: one person is in one place), scored as `mtmc_synthcc.py` scores a run (global IDF1, TrackEval).

A probe, not the pipeline: the merge rule sees every identity's final evidence at once, and the levelling takes
each camera's means from the whole scene, so its figures are an upper bound on what identity-level merging in
the matcher could add with this model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.mtmc_synthcc import build_sequence, read_identities, trackeval_scores  # noqa: E402
from synth.truth import track_people  # noqa: E402

SCENE_FPS = 10  # SynthCC scenes: every camera films the same time line at 10 frames/s


def track_crops(scene: Path, mot_dir: Path, per_track: int, min_height: int = 64):
    """Per camera: crops and their track ids; and each track's frame span."""
    crops: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for cam in yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]:
        cid = cam["id"]
        mot = mot_dir / f"{cid}.txt"
        rows = np.loadtxt(mot, delimiter=",", ndmin=2) if mot.stat().st_size else np.zeros((0, 10))
        wanted: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for tid in np.unique(rows[:, 1]).astype(int):
            r = rows[rows[:, 1] == tid]
            spans[(cid, tid)] = (int(r[:, 0].min()), int(r[:, 0].max()))
            r = r[r[:, 5] >= min_height]
            if len(r):
                for x in r[np.linspace(0, len(r) - 1, min(per_track, len(r))).round().astype(int)]:
                    wanted[int(x[0])].append((tid, x[2:6]))
        images, owners = [], []
        cap = cv2.VideoCapture(str((scene / cam["source"]).resolve()))
        frame = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frame += 1  # MOT frames count from 1
            h, w = img.shape[:2]
            for tid, (x, y, bw, bh) in wanted.get(frame, []):
                x1, y1, x2, y2 = max(0, int(x)), max(0, int(y)), min(w, int(x + bw)), min(h, int(y + bh))
                if x2 - x1 >= 8 and y2 - y1 >= 16:
                    images.append(img[y1:y2, x1:x2].copy())
                    owners.append(tid)
        cap.release()
        crops[cid] = (images, owners)
    return crops, spans


def track_features(crops, embedder) -> dict[tuple[str, int], tuple[np.ndarray, int]]:
    """(camera, track) -> (mean L2-normalised feature, crops), each camera levelled to the model's reference."""
    from reid.inference.levelling import apply_lut, centre_mean, gain_lut, gains_for, reference_of

    reference = reference_of(embedder.spec)
    out = {}
    for cid, (images, owners) in crops.items():
        if not images:
            continue
        if reference is not None:
            lut = gain_lut(gains_for(reference, np.mean([centre_mean(c) for c in images], axis=0)))
            images = [apply_lut(c, lut) for c in images]
        vectors = embedder.embed(images).identity
        owners_arr = np.asarray(owners)
        for tid in np.unique(owners_arr):
            m = vectors[owners_arr == tid].mean(axis=0)
            out[(cid, int(tid))] = (m / np.linalg.norm(m), int((owners_arr == tid).sum()))
    return out


def at_once(a: list, b: list, spans: dict) -> bool:
    """Whether two groups of tracks were on screen together (one camera at all, two cameras over a second)."""
    for ka, kb in itertools.product(a, b):
        (a0, a1), (b0, b1) = spans[ka], spans[kb]
        if min(a1, b1) - max(a0, b0) > (0 if ka[0] == kb[0] else SCENE_FPS):
            return True
    return False


def probe(run: Path, embedder, per_track: int, thresholds: list[float]) -> dict:
    scene = run.parent / "scene"
    final, _, _ = read_identities(run / "out" / "store")
    people = track_people(scene, run / "mot")
    crops, spans = track_crops(scene, run / "mot", per_track)
    feats = track_features(crops, embedder)
    members: dict[int, list] = defaultdict(list)
    for key, ident in final.items():
        if key in feats:
            members[ident].append(key)

    def proto(keys: list) -> np.ndarray:
        m = sum(feats[k][0] * feats[k][1] for k in keys)
        return m / np.linalg.norm(m)

    def person(keys: list) -> int | None:
        c = Counter(people[k][0] for k in keys if k in people)
        return c.most_common(1)[0][0] if c else None

    ids = sorted(members)
    protos = np.stack([proto(members[i]) for i in ids])
    who = [person(members[i]) for i in ids]
    sims = protos @ protos.T
    same, other = [], []
    for a, b in itertools.combinations(range(len(ids)), 2):
        (same if who[a] is not None and who[a] == who[b] else other).append(sims[a, b])
    nearest_right = nearest_total = 0
    for a in range(len(ids)):
        partners = [b for b in range(len(ids)) if b != a and who[a] is not None and who[b] == who[a]]
        if partners:
            nearest_total += 1
            s = sims[a].copy()
            s[a] = -np.inf
            nearest_right += int(np.argmax(s)) in partners
    seq_len, _ = build_sequence(scene, run / "mot", final, run / "eval-probe")
    row = {"run": str(run), "identities": len(ids), "people": len({w for w in who if w is not None}),
           "same": np.percentile(same, [10, 50, 90]) if same else None,
           "other": np.percentile(other, [10, 50, 90]) if other else None,
           "nearest": (nearest_right, nearest_total),
           "IDF1": trackeval_scores(run / "eval-probe", seq_len)["IDF1"], "merged": {}}
    for t in thresholds:
        groups = {i: list(members[i]) for i in ids}
        while True:
            keys = sorted(groups)
            p = {g: proto(groups[g]) for g in keys}
            pairs = sorted(((float(p[a] @ p[b]), a, b) for a, b in itertools.combinations(keys, 2)), reverse=True)
            join = next(((a, b) for s, a, b in pairs if s >= t and not at_once(groups[a], groups[b], spans)), None)
            if join is None:
                break
            groups[join[0]] += groups.pop(join[1])
        moved = {k: g for g, keys in groups.items() for k in keys}
        merged = {k: moved.get(k, v) for k, v in final.items()}
        out = run / f"eval-probe-{t:g}"
        seq_len, _ = build_sequence(scene, run / "mot", merged, out)
        row["merged"][t] = (len(groups), trackeval_scores(out, seq_len)["IDF1"])
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of benchmarks/mtmc_synthcc.py")
    ap.add_argument("--model", required=True, help="the clothes-changing model file (any file the pipeline reads)")
    ap.add_argument("--per-track", type=int, default=8, help="crops embedded per track")
    ap.add_argument("--thresholds", default="0.5,0.55,0.6,0.65,0.7", help="merge thresholds to score")
    args = ap.parse_args()
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder

    for run in args.runs:
        if not (run / "mot").is_dir() or not (run.parent / "scene" / "cameras.yaml").is_file():
            raise SystemExit(f"{run}: not a run folder of benchmarks/mtmc_synthcc.py (needs mot/ and ../scene)")
    embedder = create_embedder(resolve_model(args.model))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = [probe(run, embedder, args.per_track, thresholds) for run in args.runs]
    print(f"`python benchmarks/identity_merge_synthcc.py --runs ... --model {args.model} --per-track {args.per_track}` "
          f"({platform.machine()}, {os.cpu_count()} CPUs, {date.today().isoformat()})")
    print("| run | identities (people) | cosine, one person in two identities: p10 / p50 / p90 | different people | "
          "nearest identity is the same person | IDF1 as run | " + " | ".join(f"merged at {t:g}" for t in thresholds)
          + " |")
    print("|---" * (6 + len(thresholds)) + "|")
    for r in rows:
        fmt = (lambda q: " / ".join(f"{v:.2f}" for v in q) if q is not None else "-")
        print(f"| {Path(r['run']).parent.name}/{Path(r['run']).name} | {r['identities']} ({r['people']}) | "
              f"{fmt(r['same'])} | {fmt(r['other'])} | {r['nearest'][0]} of {r['nearest'][1]} | {r['IDF1']:.1f} | "
              + " | ".join(f"{r['merged'][t][1]:.1f} ({r['merged'][t][0]})" for t in thresholds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
