"""LaST (Shu et al. 2021): train/<pid>/*.jpg, {val,test}/query/*.jpg, {val,test}/gallery/<pid>/*.jpg.

File names split on '_': [0] = pid, the last token with the pid keys the training clothes. Test clothes
are unknown (clothes id := pid) and every test image gets its own camera id (gallery offset by the
query count), so nothing is junk; general protocol only.
"""

from __future__ import annotations

from pathlib import Path

from reid.datasets.base import (EvalSplit, ImageRecord, ReIDDataset, list_images, parse_error, relabel_train,
                                require_dir, resolve_root)

LAYOUT = """  train/<pid>/<pid>_..._<clothes token>.jpg
  val/query/*.jpg   val/gallery/<pid>/*.jpg   test/query/*.jpg   test/gallery/<pid>/*.jpg"""


def _tokens(path: Path) -> tuple[int, str]:
    parts = path.name.split(".")[0].split("_")
    try:
        return int(parts[0]), parts[-1]
    except ValueError:
        raise parse_error("last", path, "<pid>_..._<token>.jpg") from None


def _test(base: Path, split: str) -> EvalSplit:
    qdir = require_dir(base / split / "query", "last", LAYOUT)
    gdir = require_dir(base / split / "gallery", "last", LAYOUT)
    q_paths, g_paths = list_images(qdir), list_images(gdir, recursive=True)
    query = tuple(ImageRecord(str(p), _tokens(p)[0], i, _tokens(p)[0]) for i, p in enumerate(q_paths))
    gallery = tuple(ImageRecord(str(p), _tokens(p)[0], len(q_paths) + i, _tokens(p)[0]) for i, p in enumerate(g_paths))
    return EvalSplit(split, query, gallery, {"general": "general"})


def load_last(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("last", "LaST"))
    train_dir = require_dir(base / "train", "last", LAYOUT)
    raw = []
    for path in list_images(train_dir, recursive=True):
        pid, token = _tokens(path)
        raw.append((str(path), pid, 0, f"{pid}_{token}"))
    train, n_pids, n_clothes, pid2clothes = relabel_train(raw)
    return ReIDDataset("last", str(base), train, n_pids, n_clothes, pid2clothes,
                       [_test(base, "val"), _test(base, "test")], selection="test/general")
