"""Celeb-reID (Huang et al. 2019): flat train/query/gallery folders of `<pid>_<idx>_<x>.jpg`.

No camera or clothes labels exist. As in the Wang repos every test image gets its own camera id (so
nothing is junk); clothes ids are set to the identity, which makes CAL's clothes terms degenerate, so
the recipe trains the identity + triplet baseline.
"""

from __future__ import annotations

import re
from pathlib import Path

from reid.datasets.base import (EvalSplit, ImageRecord, ReIDDataset, list_images, parse_error, relabel_train,
                                require_dir, resolve_root)

LAYOUT = """  train/<pid>_<idx>_<x>.jpg   query/...   gallery/..."""
_NAME = re.compile(r"^(-?\d+)_(\d+)")


def _parse(folder: Path) -> list[tuple[str, int]]:
    out = []
    for path in list_images(folder):
        m = _NAME.match(path.name)
        if m is None:
            raise parse_error("celebreid", path, "<pid>_<idx>_<x>.jpg")
        out.append((str(path), int(m.group(1))))
    return out


def load_celebreid(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("Celeb-reID",))
    for sub in ("train", "query", "gallery"):
        require_dir(base / sub, "celebreid", LAYOUT)
    raw_train = [(p, pid, i, str(pid)) for i, (p, pid) in enumerate(_parse(base / "train"))]
    train, n_pids, n_clothes, pid2clothes = relabel_train(raw_train)
    query = _parse(base / "query")
    gallery = _parse(base / "gallery")
    q = tuple(ImageRecord(p, pid, i, pid) for i, (p, pid) in enumerate(query))
    g = tuple(ImageRecord(p, pid, len(query) + i, pid) for i, (p, pid) in enumerate(gallery))
    return ReIDDataset("celebreid", str(base), train, n_pids, n_clothes, pid2clothes,
                       [EvalSplit("test", q, g, {"general": "general"})], selection="test/general",
                       notes=["no clothes labels: clothes id = identity; CAL's clothes terms do not apply"])
