"""Per-camera colour levelling of a data set's images (`data.colour_levelling`; `reid.inference.levelling` says why).

Training cameras are levelled to the mean of their own means (the reference, stored in the model's spec), taken over
the box centres (region "centre") or over the person pixels of the set's masks (region "person");
each test camera, later, to the model's reference, from the test camera's own images, as the pipeline levels a
camera from the crops it sees. The gains ride on the image records (`ImageRecord.gains`) and are applied where
images are read (`reid.transforms.read_record`), so every reader sees the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from reid.datasets.base import EvalSplit, ImageRecord, ReIDDataset
from reid.inference.levelling import CENTRE_REGION, PERSON_REGION, centre_mean, check_region, gains_for


def _camera_key(r: ImageRecord) -> tuple[int, str]:
    # extra training sets reuse camera numbers: a camera is its number within its data set's folder
    return r.camid, str(Path(r.path).parent.parent)


def person_mean(r: ImageRecord) -> np.ndarray | None:
    """Mean BGR of the image's person pixels by its mask (None when the mask marks none)."""
    import cv2

    from reid.datasets.masks import UNREADABLE
    from reid.transforms import read_bgr

    if r.mask_path is None or r.mask_path == UNREADABLE:
        raise ValueError(f"{r.path}: colour levelling over person pixels needs a parts mask, and this image has "
                         "none; use data.colour_levelling: centre for data sets without masks")
    mask = cv2.imread(r.mask_path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {r.mask_path} (missing or not an image)")
    img = read_bgr(r.path)
    if mask.shape[:2] != img.shape[:2]:
        raise ValueError(f"{r.mask_path}: mask {mask.shape[:2]} does not match image {img.shape[:2]}")
    person = (mask > 0) & (mask < 255)  # 255 marks "unknown" in the parts masks
    if not person.any():
        return None
    return np.asarray(cv2.mean(img, mask=person.astype(np.uint8))[:3], dtype=np.float64)


def _means(records: Sequence[ImageRecord], region: str = CENTRE_REGION) -> dict[tuple[int, str], np.ndarray]:
    from reid.transforms import read_bgr

    check_region(region)
    groups: dict[tuple[int, str], list[np.ndarray]] = {}
    for r in records:
        m = centre_mean(read_bgr(r.path)) if region == CENTRE_REGION else person_mean(r)
        if m is not None:
            groups.setdefault(_camera_key(r), []).append(m)
    missing = {_camera_key(r) for r in records} - set(groups)
    if missing:
        raise ValueError(f"colour levelling: camera(s) {sorted(missing)} have no person pixels in any image")
    return {k: np.mean(v, axis=0) for k, v in groups.items()}


def _with_gains(records, means: dict, reference) -> list[ImageRecord]:
    gains = {k: tuple(float(g) for g in gains_for(reference, m)) for k, m in means.items()}
    return [replace(r, gains=gains[_camera_key(r)]) for r in records]


def level_dataset(ds: ReIDDataset, reference: Sequence[float] | None = None,
                  train: bool = True, region: str = CENTRE_REGION) -> tuple[ReIDDataset, list[float]]:
    """Levelled copy of `ds` and the reference used (the training cameras' mean when `reference` is None).

    With `train` False the training images are left as they are (evaluation of a trained model reads only the
    test splits; reading every training image to level them would cost time for nothing).
    """
    if reference is None:
        if not ds.train:
            raise ValueError(f"{ds.root}: no training images to take a colour levelling reference from")
        train_means = _means(ds.train, region)
        reference = [float(v) for v in np.mean(list(train_means.values()), axis=0)]
    else:
        reference = [float(v) for v in reference]
        train_means = _means(ds.train, region) if train and ds.train else {}
    new_train = _with_gains(ds.train, train_means, reference) if train_means else list(ds.train)
    splits = []
    for s in ds.eval_splits:
        test_images = list({r.path: r for r in (*s.query, *s.gallery)}.values())
        means = _means(test_images, region)
        splits.append(EvalSplit(s.name, tuple(_with_gains(s.query, means, reference)),
                                tuple(_with_gains(s.gallery, means, reference)), s.protocols))
    out = replace(ds, train=new_train, eval_splits=splits,
                  notes=[*ds.notes, f"colour levelled per camera ({region}) to BGR {[round(v, 1) for v in reference]}"])
    return out, reference


def load_for_model(name: str, root, spec) -> ReIDDataset:
    """`load_dataset`, with each test camera levelled to the model's reference when its spec declares one."""
    from reid.datasets import load_dataset
    from reid.inference.levelling import reference_of, region_of

    ds = load_dataset(name, root)
    reference = reference_of(spec)
    if reference is None:
        return ds
    region = region_of(spec)
    if region == PERSON_REGION and not all(r.mask_path for s in ds.eval_splits for r in (*s.query, *s.gallery)):
        # a set without masks: the box centres are the nearest estimate a still image allows (the pipeline has
        # each camera's background instead)
        region = CENTRE_REGION
    return level_dataset(ds, reference, train=False, region=region)[0]
