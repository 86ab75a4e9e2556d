"""Data-set loaders for the real CC-ReID layouts and SynthCC, behind one registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reid.datasets.base import DatasetLayoutError, EvalSplit, ImageRecord, ReIDDataset
from reid.datasets.celebreid import load_celebreid
from reid.datasets.deepchange import load_deepchange
from reid.datasets.last import load_last
from reid.datasets.ltcc import load_ltcc
from reid.datasets.prcc import load_prcc
from reid.datasets.synthcc import load_synthcc
from reid.datasets.vcclothes import load_vcclothes

LOADERS: dict[str, Callable[[str | Path], ReIDDataset]] = {
    "prcc": load_prcc,
    "ltcc": load_ltcc,
    "vcclothes": load_vcclothes,
    "celebreid": load_celebreid,
    "deepchange": load_deepchange,
    "last": load_last,
    "synthcc": load_synthcc,
}


def load_dataset(name: str, root: str | Path) -> ReIDDataset:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[key](root)


__all__ = ["LOADERS", "DatasetLayoutError", "EvalSplit", "ImageRecord", "ReIDDataset", "load_dataset"]
