"""Per-image part masks for training: reading them in one of the common label layouts as SynthCC's roles.

Roles (SynthCC's own labels, synth/README.md): 0 background, 1 skin, 2 hair, 3 top, 4 bottom, 5 shoes,
6 outerwear / bag, 7 accessory kept across outfits. Clothes are roles 3-6, the body shape roles 1-6.
Human-parsing maps of real data sets (a LIP or ATR parser such as SCHP) are mapped onto the same roles:

* LIP (20 classes): 0 background, 1 hat, 2 hair, 3 glove, 4 sunglasses, 5 upper clothes, 6 dress, 7 coat,
  8 socks, 9 pants, 10 jumpsuit, 11 scarf, 12 skirt, 13 face, 14/15 arms, 16/17 legs, 18/19 shoes.
* ATR (18 classes): 0 background, 1 hat, 2 hair, 3 sunglasses, 4 upper clothes, 5 skirt, 6 pants, 7 dress,
  8 belt, 9/10 shoes, 11 face, 12/13 legs, 14/15 arms, 16 bag, 17 scarf.

Hats, gloves, scarves, coats and bags change with the outfit, so they are role 6 (erased by CRE); sunglasses
are an accessory (7: neither clothes nor body shape). A parsing map is a single-channel PNG of class indices
(grey or palette); `data.masks` is a folder that mirrors the data-set folder: the map of
`<root>/train/0001_1_c1_000001.png` is `<masks>/train/0001_1_c1_000001.png` (any image suffix becomes .png).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from reid.datasets.base import DatasetLayoutError, ReIDDataset

IGNORE = 255  # mask value of pixels no role can be read from (random erasing put other pixels there)
# `ImageRecord.mask_path` of a training image that has no parsing map on purpose (an extra set declared
# `unmasked`): read as all IGNORE, so CRE erases nothing there and BSGA gives it no weight.
UNREADABLE = "<no mask: every pixel unreadable>"
ROLES = {0: "background", 1: "skin", 2: "hair", 3: "top", 4: "bottom", 5: "shoes", 6: "outerwear/bag",
         7: "accessory"}
CLOTHES_ROLES = (3, 4, 5, 6)
BODY_ROLES = (1, 2, 3, 4, 5, 6)

_LIP = {0: 0, 1: 6, 2: 2, 3: 6, 4: 7, 5: 3, 6: 3, 7: 6, 8: 5, 9: 4, 10: 3, 11: 6, 12: 4, 13: 1, 14: 1, 15: 1,
        16: 1, 17: 1, 18: 5, 19: 5}
_ATR = {0: 0, 1: 6, 2: 2, 3: 7, 4: 3, 5: 4, 6: 4, 7: 3, 8: 4, 9: 5, 10: 5, 11: 1, 12: 1, 13: 1, 14: 1, 15: 1,
        16: 6, 17: 6}
_SYNTHCC = {k: k for k in ROLES}
LAYOUTS = {"synthcc": _SYNTHCC, "lip": _LIP, "atr": _ATR}


def role_lut(layout: str) -> np.ndarray:
    """A 256-entry lookup table from the layout's class index to the role (IGNORE for unknown classes)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown mask layout {layout!r}; one of {sorted(LAYOUTS)}")
    lut = np.full(256, IGNORE, np.uint8)
    for cls, role in LAYOUTS[layout].items():
        lut[cls] = role
    return lut


def read_mask(path: str, layout: str = "synthcc") -> np.ndarray:
    """A label map file -> HxW uint8 roles. Grey and palette PNGs hold class indices; colour images are refused.
    `UNREADABLE` -> a 1x1 IGNORE map (the caller resizes it to the image)."""
    from PIL import Image

    if path == UNREADABLE:
        return np.full((1, 1), IGNORE, np.uint8)

    if not Path(path).is_file():
        raise FileNotFoundError(f"cannot read mask {path} (missing)")
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise DatasetLayoutError(f"mask {path} is a {im.mode} image; a parsing map must hold one class "
                                     "index per pixel (grey or palette PNG)")
        raw = np.asarray(im)
    if raw.max(initial=0) > 255:
        raise DatasetLayoutError(f"mask {path} holds class {int(raw.max())}; the {layout} layout has "
                                 f"{len(LAYOUTS[layout])} classes")
    return role_lut(layout)[raw.astype(np.uint8)]


def attach_masks(dataset: ReIDDataset, masks: str | Path) -> ReIDDataset:
    """Point every training record at its parsing map under `masks` (mirroring the data-set folder).

    Every training image needs one: a missing map is an error naming how many are missing and the first one.
    """
    root, masks = Path(dataset.root), Path(masks)
    if not masks.is_dir():
        raise DatasetLayoutError(f"{dataset.name}: data.masks {masks} is not a folder; it must mirror {root} "
                                 f"(e.g. {masks}/train/<image name>.png)")
    train, missing = [], []
    for r in dataset.train:
        if r.mask_path == UNREADABLE:
            train.append(r)
            continue
        try:
            rel = Path(r.path).relative_to(root)
        except ValueError:
            rel = Path(Path(r.path).parent.name) / Path(r.path).name
        m = (masks / rel).with_suffix(".png")
        if not m.is_file():
            missing.append(m)
        train.append(replace(r, mask_path=str(m)))
    if missing:
        raise DatasetLayoutError(f"{dataset.name}: {len(missing)} of {len(train)} training images have no parsing "
                                 f"map under data.masks {masks}; the first expected file is {missing[0]}")
    dataset.train = train
    dataset.notes.append(f"part masks from {masks}")
    return dataset


def missing_masks(records) -> int:
    return sum(1 for r in records if not r.mask_path)


def without_masks(dataset: ReIDDataset) -> ReIDDataset:
    """`dataset` whose training images are declared to have no part masks (`UNREADABLE`)."""
    dataset.train = [replace(r, mask_path=UNREADABLE) for r in dataset.train]
    return dataset
