"""Copy a SynthCC people set with each camera's colour response levelled, one of three ways (`--mode`):

* `all`: every image multiplied, channel by channel, by the mean colour of all the set's images over the mean
  colour of its own camera's images ("grey world" per camera; the means include the crops' backgrounds, as a
  camera's own frames would);
* `person`: the same with the means taken over person pixels only (the set's masks): many people's outfits
  average out, backgrounds do not enter;
* `oracle`: the camera's known response (meta.json: gain, white balance, gamma) inverted exactly, the upper
  bound of any levelling.

    .venv/bin/python benchmarks/synthcc_greyworld.py SRC_SET DST_SET [--mode all|person|oracle]

Masks, images.csv and meta.json are copied unchanged. Used for README "What in a new camera costs the models":
a model trained on a levelled set and scored on levelled sets shows how much of its cloth-changing accuracy on
new cameras a per-camera colour levelling would give back.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reid.inference.levelling import gain_lut  # noqa: E402
from synth.camera import inverse_colour_lut  # noqa: E402


def _read(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise SystemExit(f"{path}: cannot read the image listed in images.csv")
    return img


def camera_means(src: Path, rows: list[dict], person_only: bool) -> dict[str, np.ndarray]:
    """Mean BGR of each camera's images (person pixels only with `person_only`)."""
    sums: dict[str, list] = {}
    for r in rows:
        pixels = _read(src / r["file"]).reshape(-1, 3).astype(np.float64)
        if person_only:
            pixels = pixels[_read(src / "masks" / r["file"], cv2.IMREAD_UNCHANGED).reshape(-1) > 0]
        s = sums.setdefault(r["cam"], [np.zeros(3), 0])
        s[0] += pixels.sum(0)
        s[1] += len(pixels)
    return {cam: total / max(n, 1) for cam, (total, n) in sums.items()}


def gain_luts(means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    overall = np.mean(list(means.values()), axis=0)
    return {cam: gain_lut(overall / m) for cam, m in means.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--mode", choices=("all", "person", "oracle"), default="all")
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    if not (src / "images.csv").is_file():
        raise SystemExit(f"{src}: not a SynthCC people set (no images.csv); make one with `python -m synth people`")
    if dst.exists():
        raise SystemExit(f"{dst} exists; remove it or name another folder")
    rows = list(csv.DictReader(open(src / "images.csv")))
    if args.mode == "oracle":
        cams = json.loads((src / "meta.json").read_text())["cameras"]
        luts = {cam: inverse_colour_lut(c["white_balance"], c["gain"], c["gamma"]) for cam, c in cams.items()}
    else:
        luts = gain_luts(camera_means(src, rows, person_only=args.mode == "person"))
    shutil.copytree(src / "masks", dst / "masks")
    for name in ("images.csv", "meta.json"):
        shutil.copy(src / name, dst / name)
    for r in rows:
        out = dst / r["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), cv2.LUT(_read(src / r["file"]), luts[r["cam"]]))
    print(f"{dst}: {len(rows)} images levelled ({args.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
