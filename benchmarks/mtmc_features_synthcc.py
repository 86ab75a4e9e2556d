"""Can the features tell people and outfits apart across cameras? Ground-truth crops of SynthCC scenes.

    .venv/bin/python benchmarks/mtmc_features_synthcc.py SCENE_DIR [SCENE_DIR ...] [--reid-model NAME]

For every sighting (one person, one camera, one outfit) up to 8 ground-truth boxes (visibility > 0.8,
height >= 50 px) are cropped from the video; their mean identity embedding (the ReID model) and mean
outfit descriptor (reid/inference/outfit.py) are compared between sightings in different cameras of the
same scene. The distributions say which thresholds can work: `matcher.threshold` must separate "same
person" from "different people" on the identity embedding, `matcher.outfit_threshold` "same outfit" from
"new outfit" on the descriptor. Scenes come from `python -m synth scenes` (e.g. the ones
benchmarks/mtmc_synthcc.py leaves under runs/mtmc_synthcc/*/scene).

A model trained on colour-levelled crops (its spec's `extra.colour_levelling`) gets each camera's crops levelled
to its reference by the mean box-centre colour of the crops taken from that camera (the pipeline estimates the
same mean as it runs). `--calibrate` also runs `reid calibrate`'s rules (reid/calibrate.py) on these sightings,
so a model's rates on still crops (`python -m reid calibrate --root <synth people set>`) and on video crops
of scenes can be set side by side; sightings of different scenes count as different people.

    .venv/bin/python benchmarks/mtmc_features_synthcc.py S1/scene S2/scene --reid-model model.safetensors --calibrate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def camera_crops(scene: Path, cam: str, sightings: list[dict], reference=None) -> list[tuple[dict, list]]:
    """Up to 8 ground-truth crops (visibility > 0.8, >= 50 px tall) of each of the camera's sightings that has 2."""
    from reid.inference.levelling import apply_lut, centre_mean, gain_lut, gains_for

    by_sighting = []
    gt = np.loadtxt(scene / "gt" / f"{cam}.txt", delimiter=",", ndmin=2)
    cap = cv2.VideoCapture(str(next(scene.glob(f"{cam}.*"))))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    for s in (s for s in sightings if s["camera"] == cam):
        rows = gt[(gt[:, 1] == s["global_id"]) & (gt[:, 8] > 0.8) & (gt[:, 5] >= 50)
                  & (gt[:, 0] >= s["first_frame"]) & (gt[:, 0] <= s["last_frame"])]
        crops = []
        for r in rows[::3][:8]:
            x, y, w, h = r[2:6].astype(int)
            c = frames[int(r[0]) - 1][max(y, 0):y + h, max(x, 0):x + w]
            if c.size:
                crops.append(c)
        if len(crops) < 2:
            continue
        by_sighting.append((s, crops))
    if reference is not None and by_sighting:  # every crop of a camera levelled by its mean box-centre colour
        lut = gain_lut(gains_for(reference, np.mean([centre_mean(c) for _, cs in by_sighting for c in cs], axis=0)))
        by_sighting = [(s, [apply_lut(c, lut) for c in cs]) for s, cs in by_sighting]
    return by_sighting


def sighting_features(scene: Path, embedder, reference=None, centre: str = "none") -> list[tuple]:
    """(person, outfit uid, camera, unit identity feature, unit outfit descriptor) of each sighting.

    `centre`: "camera" subtracts the mean identity feature of every crop a camera saw before a sighting's crops
    are averaged, "scene" the mean over all the scene's crops, "none" nothing (what the pipeline does)."""
    from reid.inference.outfit import outfit_descriptors

    sightings = json.loads((scene / "sightings.json").read_text())["sightings"]
    rows = []  # (sighting, camera, unit crop features, unit outfit descriptor)
    for cam in sorted({s["camera"] for s in sightings}):
        for s, crops in camera_crops(scene, cam, sightings, reference):
            lk = outfit_descriptors(crops).mean(0)
            rows.append((s, cam, embedder.embed(crops).identity, lk / np.linalg.norm(lk)))
    if centre != "none" and rows:  # each crop minus its camera's (the scene's) mean crop, renormalised
        from reid.inference.centring import centre_by_camera

        cams = [r[1] if centre == "camera" else "scene" for r in rows for _ in range(len(r[2]))]
        centred = centre_by_camera(np.concatenate([r[2] for r in rows]), cams)
        ends = np.cumsum([len(r[2]) for r in rows])
        rows = [(s, cam, centred[end - len(f):end], lk) for (s, cam, f, lk), end in zip(rows, ends)]
    out = []
    for s, cam, feats, lk in rows:
        e = feats.mean(0)
        out.append((s["global_id"], s["outfit_uid"], cam, e / np.linalg.norm(e), lk))
    return out


def cross_outfit_rank1(every: list[tuple]) -> tuple[int, int]:
    """Of the sightings whose person was also seen in another outfit on another camera of the same scene, how
    many have that person nearest among every other-camera sighting in another outfit (strangers included)."""
    scene = np.array([e[0] for e in every])
    person = np.array([e[1] for e in every])
    outfit = np.array([f"{e[0]}:{e[2]}" for e in every])
    camera = np.array([f"{e[0]}:{e[3]}" for e in every])
    feats = np.stack([e[4] for e in every])
    sim = feats @ feats.T
    hits = total = 0
    for i in range(len(every)):
        cand = (scene == scene[i]) & (camera != camera[i]) & (outfit != outfit[i])
        if not (cand & (person == person[i])).any():
            continue
        total += 1
        j = np.flatnonzero(cand)[np.argmax(sim[i, cand])]
        hits += int(person[j] == person[i])
    return hits, total


def separation_auc(pos: list[float], neg: list[float]) -> float:
    """P(a same-person pair in another outfit scores above a pair of different people): the ROC area."""
    if not pos or not neg:
        return float("nan")
    both = np.concatenate([np.asarray(pos), np.asarray(neg)])
    ranks = both.argsort().argsort() + 1.0
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenes", nargs="+", type=Path)
    ap.add_argument("--reid-model", default="person-reidentification-retail-0267.ort.onnx")
    ap.add_argument("--calibrate", action="store_true",
                    help="also print what `reid calibrate` measures and suggests, on these sightings")
    ap.add_argument("--centre", choices=("none", "camera", "scene"), default="none",
                    help="subtract each camera's (or the scene's) mean crop feature before comparing sightings")
    ap.add_argument("--flip-sum", action="store_true", help="embed each crop with its mirror image, summed")
    args = ap.parse_args()
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder
    from reid.inference.levelling import reference_of

    embedder = create_embedder(resolve_model(args.reid_model), "auto", threads=1, flip_sum=args.flip_sum)
    reference = reference_of(embedder.spec)
    groups: dict[str, dict[str, list[float]]] = {k: {"identity": [], "outfit": []} for k in
                                                 ("same person, same outfit", "same person, new outfit",
                                                  "different people")}
    every = []
    for n, scene in enumerate(args.scenes):
        feats = sighting_features(scene, embedder, reference, args.centre)
        every += [(n, *f) for f in feats]
        for i, a in enumerate(feats):
            for b in feats[i + 1:]:
                if a[2] == b[2]:
                    continue  # across cameras only
                key = ("same person, same outfit" if a[0] == b[0] and a[1] == b[1] else
                       "same person, new outfit" if a[0] == b[0] else "different people")
                groups[key]["identity"].append(float(a[3] @ b[3]))
                groups[key]["outfit"].append(float(a[4] @ b[4]))
    print(f"SynthCC ground-truth crops, {len(args.scenes)} scene(s): {', '.join(str(s) for s in args.scenes)}; "
          f"ReID {Path(args.reid_model).name}" + (f"; cameras levelled to {[round(v, 1) for v in reference]}"
                                                  if reference is not None else ""))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; date {date.today().isoformat()}; "
          f"centre: {args.centre}; flip-sum: {args.flip_sum}\n")
    print("| pairs of sightings in two cameras | n | feature | p10 | median | p90 | max |")
    print("|---|---|---|---|---|---|---|")
    for key, g in groups.items():
        for feat in ("identity", "outfit"):
            v = np.array(g[feat])
            if len(v):
                print(f"| {key} | {len(v)} | {feat} cosine | {np.percentile(v, 10):.2f} | {np.median(v):.2f} | "
                      f"{np.percentile(v, 90):.2f} | {v.max():.2f} |")
    hits, total = cross_outfit_rank1(every)
    print(f"\nnearest other-camera sighting in another outfit is the same person: {hits} of {total} "
          f"({100 * hits / max(total, 1):.1f} %); ROC area, same person in a new outfit against different people: "
          f"{separation_auc(groups['same person, new outfit']['identity'], groups['different people']['identity']):.3f}")
    if args.calibrate:
        from reid.calibrate import Sightings, calibrate_sightings, format_calibration

        # people and cameras numbered per scene: another scene's people are other people
        person = np.array([n * 100_000 + p for n, p, *_ in every])
        outfit = np.unique([f"{n}:{o}" for n, _, o, *_ in every], return_inverse=True)[1]
        camera = np.unique([f"{n}:{c}" for n, _, _, c, *_ in every], return_inverse=True)[1]
        sightings = Sightings(person, outfit, camera, np.stack([f[4] for f in every]), np.stack([f[5] for f in every]))
        print()
        print(format_calibration(calibrate_sightings(sightings, Path(args.reid_model).name,
                                                     f"ground-truth crops of {len(args.scenes)} scene(s)",
                                                     "hand-made outfit descriptor")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
