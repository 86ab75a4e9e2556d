"""LTCC (Qian et al. 2020): flat train/query/test folders of `<pid>_<clothes>_c<cam>_<frame>.png`."""

from __future__ import annotations

import re
from pathlib import Path

from reid.datasets.base import (EvalSplit, ReIDDataset, list_images, parse_error, relabel_test_clothes,
                                relabel_train, require_dir, resolve_root)

LAYOUT = """  train/<pid>_<clothes>_c<cam>_<frame>.png
  query/...   test/...        (test/ is the gallery)"""

_NAME = re.compile(r"^(\d+)_(\d+)_c(\d+)")
ALL_PROTOCOLS = {"general": "general", "cloth_changing": "cloth_changing", "same_clothes": "same_clothes"}


def parse_ltcc_style(folder: Path, dataset: str, cam_offset: int) -> list[tuple[str, int, int, str]]:
    """-> (path, pid, camid, clothes key "<pid>_<clothes>"); camid = on-disk camera - cam_offset."""
    out = []
    for path in list_images(folder):
        m = _NAME.match(path.name)
        if m is None:
            raise parse_error(dataset, path, "<pid>_<clothes>_c<cam>_<frame>.<ext>")
        pid, clothes, cam = int(m.group(1)), int(m.group(2)), int(m.group(3))
        out.append((str(path), pid, cam - cam_offset, f"{pid}_{clothes}"))
    if not out:
        raise parse_error(dataset, folder / "<empty>", f"image files in {folder}")
    return out


def load_ltcc(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("LTCC_ReID", "LTCC-reID"))
    for sub in ("train", "query", "test"):
        require_dir(base / sub, "ltcc", LAYOUT)
    # LTCC cameras are 1-based on disk; Simple-CCReID makes them 0-based.
    train, n_pids, n_clothes, pid2clothes = relabel_train(parse_ltcc_style(base / "train", "ltcc", 1))
    query, gallery = relabel_test_clothes(parse_ltcc_style(base / "query", "ltcc", 1),
                                          parse_ltcc_style(base / "test", "ltcc", 1))
    return ReIDDataset("ltcc", str(base), train, n_pids, n_clothes, pid2clothes,
                       [EvalSplit("test", query, gallery, dict(ALL_PROTOCOLS))], selection="test/cloth_changing")
