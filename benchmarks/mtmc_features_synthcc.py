"""Can the features tell people and outfits apart across cameras? Ground-truth crops of SynthCC scenes.

    .venv/bin/python benchmarks/mtmc_features_synthcc.py SCENE_DIR [SCENE_DIR ...] [--reid-model NAME]

For every sighting (one person, one camera, one outfit) up to 8 ground-truth boxes (visibility > 0.8,
height >= 50 px) are cropped from the video; their mean identity embedding (the ReID model) and mean
outfit descriptor (reid/inference/outfit.py) are compared between sightings in different cameras of the
same scene. The distributions say which thresholds can work: `matcher.threshold` must separate "same
person" from "different people" on the identity embedding, `matcher.outfit_threshold` "same outfit" from
"new outfit" on the descriptor. Scenes come from `python -m synth scenes` (e.g. the ones
benchmarks/mtmc_synthcc.py leaves under runs/mtmc_synthcc/*/scene).
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


def sighting_features(scene: Path, embedder) -> list[tuple]:
    from reid.inference.outfit import outfit_descriptors

    sightings = json.loads((scene / "sightings.json").read_text())["sightings"]
    out = []
    for cam in sorted({s["camera"] for s in sightings}):
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
            e = embedder.embed(crops).identity.mean(0)
            lk = outfit_descriptors(crops).mean(0)
            out.append((s["global_id"], s["outfit_uid"], cam, e / np.linalg.norm(e), lk / np.linalg.norm(lk)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenes", nargs="+", type=Path)
    ap.add_argument("--reid-model", default="person-reidentification-retail-0267.ort.onnx")
    args = ap.parse_args()
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder

    embedder = create_embedder(resolve_model(args.reid_model), "auto", threads=1)
    groups: dict[str, dict[str, list[float]]] = {k: {"identity": [], "outfit": []} for k in
                                                 ("same person, same outfit", "same person, new outfit",
                                                  "different people")}
    for scene in args.scenes:
        feats = sighting_features(scene, embedder)
        for i, a in enumerate(feats):
            for b in feats[i + 1:]:
                if a[2] == b[2]:
                    continue  # across cameras only
                key = ("same person, same outfit" if a[0] == b[0] and a[1] == b[1] else
                       "same person, new outfit" if a[0] == b[0] else "different people")
                groups[key]["identity"].append(float(a[3] @ b[3]))
                groups[key]["outfit"].append(float(a[4] @ b[4]))
    print(f"SynthCC ground-truth crops, {len(args.scenes)} scene(s): {', '.join(str(s) for s in args.scenes)}; "
          f"ReID {Path(args.reid_model).name}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; date {date.today().isoformat()}\n")
    print("| pairs of sightings in two cameras | n | feature | p10 | median | p90 | max |")
    print("|---|---|---|---|---|---|---|")
    for key, g in groups.items():
        for feat in ("identity", "outfit"):
            v = np.array(g[feat])
            if len(v):
                print(f"| {key} | {len(v)} | {feat} cosine | {np.percentile(v, 10):.2f} | {np.median(v):.2f} | "
                      f"{np.percentile(v, 90):.2f} | {v.max():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
