"""Tiny on-disk data-set trees in each real layout, for the reid tests (generated images)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path


def make_ltcc(root: Path) -> Path:
    base = root / "LTCC_ReID"
    # train: pid 10 (clothes 1, 2), pid 3 (clothes 1); query / test: pid 7 and 12
    for name in ["010_1_c1_000001.png", "010_1_c2_000002.png", "010_2_c3_000003.png", "003_1_c1_000004.png"]:
        write_image(base / "train" / name)
    for name in ["007_1_c1_000010.png", "012_2_c4_000011.png"]:
        write_image(base / "query" / name)
    for name in ["007_1_c2_000012.png", "007_2_c3_000013.png", "012_1_c4_000014.png", "012_2_c5_000015.png"]:
        write_image(base / "test" / name)
    return root


def make_prcc(root: Path) -> Path:
    rgb = root / "prcc" / "rgb"
    for pid in ("001", "005"):
        for cam in "ABC":
            write_image(rgb / "train" / pid / f"{cam}_cropped_rgb{pid}_1.jpg")
    write_image(rgb / "val" / "002" / "A_cropped_rgb002.jpg")
    for pid in ("101", "104"):
        for cam in "ABC":
            for i in range(2):
                write_image(rgb / "test" / cam / pid / f"cropped_rgb{i:03d}.jpg")
    return root


def make_vcclothes(root: Path) -> Path:
    base = root / "VC-Clothes"
    for name in ["0001-01-01-01.jpg", "0001-02-01-02.jpg", "0001-04-02-03.jpg", "0002-03-01-01.jpg"]:
        write_image(base / "train" / name)
    for name in ["0300-01-01-01.jpg", "0300-03-01-02.jpg", "0301-04-02-01.jpg"]:
        write_image(base / "query" / name)
    for name in ["0300-02-01-05.jpg", "0300-04-02-06.jpg", "0301-03-01-07.jpg", "0301-02-01-08.jpg"]:
        write_image(base / "gallery" / name)
    return root


def make_celebreid(root: Path) -> Path:
    base = root / "Celeb-reID"
    for name in ["1_1_0.jpg", "1_2_0.jpg", "2_1_0.jpg", "2_7_1.jpg"]:
        write_image(base / "train" / name)
    for name in ["500_1_0.jpg", "501_1_0.jpg"]:
        write_image(base / "query" / name)
    for name in ["500_2_0.jpg", "501_3_0.jpg", "501_4_0.jpg"]:
        write_image(base / "gallery" / name)
    return root


def make_deepchange(root: Path) -> Path:
    base = root / "DeepChangeDataset"
    splits = {
        "train-set": [("P0001_C01_T2_F001.jpg", 3), ("P0001_C02_T5_F002.jpg", 4), ("P0002_C01_T2_F003.jpg", 5)],
        "val-set-query": [("P0100_C03_T1_F001.jpg", 7)],
        "val-set-gallery": [("P0100_C03_T1_F009.jpg", 8), ("P0100_C04_T2_F010.jpg", 9)],
        "test-set-query": [("P0200_C05_T1_F001.jpg", 11), ("P0201_C06_T3_F001.jpg", 12)],
        "test-set-gallery": [("P0200_C05_T1_F002.jpg", 13), ("P0200_C06_T4_F003.jpg", 14),
                             ("P0201_C06_T3_F002.jpg", 12)],
    }
    for split, items in splits.items():
        for name, _ in items:
            write_image(base / split / name)
        (base / f"{split}-bbox.txt").write_text("".join(f"{n},{t}\n" for n, t in items))
    return root


def make_last(root: Path) -> Path:
    base = root / "last"
    for pid, names in {"000001": ["000001_0_c1_a0.jpg", "000001_1_c2_a1.jpg"],
                       "000004": ["000004_0_c1_b0.jpg"]}.items():
        for n in names:
            write_image(base / "train" / pid / n)
    for split in ("val", "test"):
        write_image(base / split / "query" / "000900_0_x_0.jpg")
        write_image(base / split / "query" / "000901_0_x_0.jpg")
        write_image(base / split / "gallery" / "000900" / "000900_1_x_0.jpg")
        write_image(base / split / "gallery" / "000901" / "000901_1_x_0.jpg")
        write_image(base / split / "gallery" / "000901" / "000901_2_x_1.jpg")
    return root


def make_synthcc(root: Path, n_train: int = 6, n_test: int = 4, outfits: int = 2, cams: int = 3, per: int = 2,
                 size: tuple[int, int] = (32, 16), seed: int = 0) -> Path:
    """A learnable toy SynthCC tree: identity = a fixed head/leg colour pair, outfit = a torso colour
    drawn from a small shared palette (so outfits are shared between people), camera = background tint."""
    rng = np.random.default_rng(seed)
    h, w = size
    palette = rng.integers(0, 255, (4, 3))
    idx = 0
    meta = {"preset": "test-fixture", "seed": seed, "version": 0, "labels": {}, "identities": {}, "outfits": {},
            "splits": {}}
    for split, pids in (("train", range(1, n_train + 1)), ("test", range(100, 100 + n_test))):
        for pid in pids:
            head, legs = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
            meta["identities"][str(pid)] = {"body": [float(v) for v in (*head, *legs)]}
            for clothes in range(1, outfits + 1):
                top = palette[rng.integers(0, len(palette))]
                for cam in range(1, cams + 1):
                    for _ in range(per):
                        img = np.full((h, w, 3), 40 * cam, np.uint8)
                        img[: h // 4, w // 4: 3 * w // 4] = head
                        img[h // 4: h // 2 + h // 8] = top
                        img[h // 2 + h // 8:, w // 8: 7 * w // 8] = legs
                        img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
                        name = f"{pid:04d}_{clothes:02d}_c{cam:02d}_{idx:06d}.png"
                        # test: camera 1 -> query, others -> gallery (LTCC-style, several cams and outfits)
                        sub = split if split == "train" else ("query" if cam == 1 else "test")
                        (root / sub).mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(root / sub / name), img)
                        mask = np.zeros((h, w), np.uint8)
                        mask[h // 4: h // 2 + h // 8] = 3
                        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(root / "masks" / sub / name), mask)
                        idx += 1
    (root / "meta.json").write_text(json.dumps(meta))
    return root
