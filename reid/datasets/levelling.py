"""Per-camera colour levelling of a data set's images (`data.colour_levelling`; `reid.inference.levelling` says why).

Training cameras are levelled to the mean of their own centre means (the reference, stored in the model's spec);
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
from reid.inference.levelling import centre_mean, gains_for


def _camera_key(r: ImageRecord) -> tuple[int, str]:
    # extra training sets reuse camera numbers: a camera is its number within its data set's folder
    return r.camid, str(Path(r.path).parent.parent)


def _means(records: Sequence[ImageRecord]) -> dict[tuple[int, str], np.ndarray]:
    from reid.transforms import read_bgr

    groups: dict[tuple[int, str], list[np.ndarray]] = {}
    for r in records:
        groups.setdefault(_camera_key(r), []).append(centre_mean(read_bgr(r.path)))
    return {k: np.mean(v, axis=0) for k, v in groups.items()}


def _with_gains(records, means: dict, reference) -> list[ImageRecord]:
    gains = {k: tuple(float(g) for g in gains_for(reference, m)) for k, m in means.items()}
    return [replace(r, gains=gains[_camera_key(r)]) for r in records]


def level_dataset(ds: ReIDDataset, reference: Sequence[float] | None = None,
                  train: bool = True) -> tuple[ReIDDataset, list[float]]:
    """Levelled copy of `ds` and the reference used (the training cameras' mean when `reference` is None).

    With `train` False the training images are left as they are (evaluation of a trained model reads only the
    test splits; reading every training image to level them would cost time for nothing).
    """
    if reference is None:
        if not ds.train:
            raise ValueError(f"{ds.root}: no training images to take a colour levelling reference from")
        train_means = _means(ds.train)
        reference = [float(v) for v in np.mean(list(train_means.values()), axis=0)]
    else:
        reference = [float(v) for v in reference]
        train_means = _means(ds.train) if train and ds.train else {}
    new_train = _with_gains(ds.train, train_means, reference) if train_means else list(ds.train)
    splits = []
    for s in ds.eval_splits:
        test_images = list({r.path: r for r in (*s.query, *s.gallery)}.values())
        means = _means(test_images)
        splits.append(EvalSplit(s.name, tuple(_with_gains(s.query, means, reference)),
                                tuple(_with_gains(s.gallery, means, reference)), s.protocols))
    out = replace(ds, train=new_train, eval_splits=splits,
                  notes=[*ds.notes, f"colour levelled per camera to BGR {[round(v, 1) for v in reference]}"])
    return out, reference


def load_for_model(name: str, root, spec) -> ReIDDataset:
    """`load_dataset`, with each test camera levelled to the model's reference when its spec declares one."""
    from reid.datasets import load_dataset
    from reid.inference.levelling import reference_of

    ds = load_dataset(name, root)
    reference = reference_of(spec)
    return ds if reference is None else level_dataset(ds, reference, train=False)[0]
