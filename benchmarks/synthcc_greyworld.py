"""Copy a SynthCC people set with each camera's colour response levelled: every image is multiplied, channel by
channel, by the mean colour of all the set's images divided by the mean colour of its own camera's images
("grey world" per camera). Masks, images.csv and meta.json are copied unchanged.

    .venv/bin/python benchmarks/synthcc_greyworld.py SRC_SET DST_SET

Used for README "What in a new camera costs the models": a model trained on a levelled set and scored on
levelled sets shows how much of its cloth-changing accuracy rests on each camera's absolute colour. The means
include the crops' backgrounds, as a camera's own frames would.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np


def camera_means(src: Path, rows: list[dict]) -> dict[str, np.ndarray]:
    sums: dict[str, list] = {}
    for r in rows:
        img = cv2.imread(str(src / r["file"]))
        if img is None:
            raise SystemExit(f"{src / r['file']}: cannot read the image listed in images.csv")
        s = sums.setdefault(r["cam"], [np.zeros(3), 0])
        s[0] += img.reshape(-1, 3).mean(0)
        s[1] += 1
    return {cam: total / n for cam, (total, n) in sums.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    if not (src / "images.csv").is_file():
        raise SystemExit(f"{src}: not a SynthCC people set (no images.csv); make one with `python -m synth people`")
    if dst.exists():
        raise SystemExit(f"{dst} exists; remove it or name another folder")
    rows = list(csv.DictReader(open(src / "images.csv")))
    means = camera_means(src, rows)
    overall = np.mean(list(means.values()), axis=0)
    shutil.copytree(src / "masks", dst / "masks")
    for name in ("images.csv", "meta.json"):
        shutil.copy(src / name, dst / name)
    for r in rows:
        img = cv2.imread(str(src / r["file"])).astype(np.float32) * (overall / means[r["cam"]])
        out = dst / r["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.clip(img + 0.5, 0, 255).astype(np.uint8))
    print(f"{dst}: {len(rows)} images; camera mean BGR "
          + ", ".join(f"{cam}: {np.round(m, 1).tolist()}" for cam, m in sorted(means.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
