"""How well a camera's colour cast can be read from the people it sees, on a SynthCC scene.

For each camera of a scene, over the ground-truth boxes (every `--step`-th frame, boxes at least `--min-height`
px tall), the mean colour of the box centres (`reid.inference.levelling.centre_mean`, what the pipeline's
levelling uses) is taken twice: as the camera recorded it, and with the camera's known colour response undone
(white balance, gain and gamma from `sightings.json`, inverted pixel by pixel: the "neutral" view). Per channel:

* camera effect = recorded mean / neutral mean: what levelling should take away;
* grey-world error = neutral mean / the mean of all cameras' neutral means: what levelling takes away wrongly,
  because this camera's people (and the background inside its boxes) are not the average.

Levelling from the people a camera sees can only help where the second is small against the spread of the first.

`--estimator centre` takes the box centres (`centre_region`); `--estimator person` the pixels of each box that
differ from the camera's learnt background (`reid.inference.levelling.BackgroundModel`, fed every frame with the
ground-truth boxes, as the pipeline feeds it with its detections).

    .venv/bin/python benchmarks/levelling_scene_gains.py SCENE_DIR [--step 5] [--min-height 64] [--estimator person]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reid.inference.levelling import BackgroundModel, centre_region  # noqa: E402
from synth.camera import inverse_colour_lut  # noqa: E402


def camera_means(scene: Path, cam: dict, step: int, min_height: int,
                 estimator: str = "centre") -> tuple[np.ndarray, np.ndarray, int]:
    """A camera's mean box colour as recorded and in the neutral view, and the number of boxes it is taken over."""
    boxes: dict[int, list[np.ndarray]] = {}
    for row in np.loadtxt(scene / cam["gt"], delimiter=",", ndmin=2):
        boxes.setdefault(int(row[0]), []).append(row)
    lut = inverse_colour_lut(cam["white_balance"], cam["gain"], cam["gamma"])
    cap = cv2.VideoCapture(str(scene / cam["video"]))
    if not cap.isOpened():
        raise SystemExit(f"{scene / cam['video']}: cannot open the camera's video")
    background = BackgroundModel() if estimator == "person" else None
    recorded, neutral, frame = [], [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frame += 1
        rows = boxes.get(frame, [])
        xyxy = np.array([[max(r[2], 0), max(r[3], 0), r[2] + r[4], r[3] + r[5]] for r in rows]).reshape(-1, 4)
        if background is not None:
            background.update(img, xyxy)
        if frame % step:
            continue
        for row, box in zip(rows, xyxy):
            if row[5] < min_height:
                continue
            x1, y1, x2, y2 = (int(v) for v in box)
            crop = img[y1:y2, x1:x2]
            if crop.size == 0:
                continue
            if background is None:
                centre = centre_region(crop)
                recorded.append(centre.reshape(-1, 3).mean(0))
                neutral.append(cv2.LUT(np.ascontiguousarray(centre), lut).reshape(-1, 3).mean(0))
                continue
            mask = background.person_pixels(img, box)  # as the pipeline counts a crop
            if mask is None:
                continue
            recorded.append(crop[mask].mean(0))
            neutral.append(cv2.LUT(np.ascontiguousarray(crop), lut)[mask].mean(0))
    cap.release()
    if not recorded:
        raise SystemExit(f"{cam['id']}: no ground-truth box of {min_height} px or more")
    return np.mean(recorded, 0), np.mean(neutral, 0), len(recorded)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", type=Path, help="a `python -m synth scenes` output folder (sightings.json)")
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--min-height", type=int, default=64)
    ap.add_argument("--estimator", choices=("centre", "person"), default="centre")
    args = ap.parse_args()
    meta_path = args.scene / "sightings.json"
    if not meta_path.is_file():
        raise SystemExit(f"{args.scene}: no sightings.json; make the scene with `python -m synth scenes`")
    cams = json.loads(meta_path.read_text())["cameras"]
    means = {c["id"]: camera_means(args.scene, c, args.step, args.min_height, args.estimator) for c in cams}
    neutral_all = np.mean([n for _, n, _ in means.values()], axis=0)
    print(f"{args.scene}: {args.estimator} estimator, boxes every {args.step} frames, boxes >= {args.min_height} px; B, G, R")
    print("| camera | boxes | camera effect (recorded / neutral) | grey-world error (neutral / all cameras') |")
    print("|---|---|---|---|")
    effects, errors = [], []
    for cam_id, (rec, neu, n) in means.items():
        effect, error = rec / neu, neu / neutral_all
        effects.append(effect)
        errors.append(error)
        print(f"| {cam_id} | {n} | {' '.join(f'{v:.3f}' for v in effect)} | {' '.join(f'{v:.3f}' for v in error)} |")
    effects, errors = np.array(effects), np.array(errors)
    print(f"\nspread over cameras (std, per channel): camera effect {np.round(effects.std(0) / effects.mean(0), 3)}, "
          f"grey-world error {np.round(errors.std(0), 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
