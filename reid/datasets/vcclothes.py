"""VC-Clothes (Wang et al. 2020): flat train/query/gallery folders of `<pid>-<cam>-<clothes>-<idx>.jpg`.

Evaluated three ways, as in CAL's script: all cameras (general, plus clothes-aware CC and SC),
cameras 2&3 (same clothes; plain protocol) and cameras 3&4 (clothes change; plain protocol).
"""

from __future__ import annotations

import re
from pathlib import Path

from reid.datasets.base import (EvalSplit, ReIDDataset, list_images, parse_error, relabel_test_clothes,
                                relabel_train, require_dir, resolve_root)
from reid.datasets.ltcc import ALL_PROTOCOLS

LAYOUT = """  train/<pid>-<cam>-<clothes>-<idx>.jpg   query/...   gallery/..."""
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)")


def _parse(folder: Path, cams: tuple[int, ...] | None = None) -> list[tuple[str, int, int, str]]:
    out = []
    for path in list_images(folder):
        m = _NAME.match(path.name)
        if m is None:
            raise parse_error("vcclothes", path, "<pid>-<cam>-<clothes>-<idx>.jpg")
        pid_s, cam_s, clothes_s, _ = m.groups()
        cam = int(cam_s)
        if cams is not None and cam not in cams:
            continue
        out.append((str(path), int(pid_s), cam - 1, pid_s + clothes_s))  # cameras 1-based on disk
    return out


def load_vcclothes(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("VC-Clothes",))
    for sub in ("train", "query", "gallery"):
        require_dir(base / sub, "vcclothes", LAYOUT)
    train, n_pids, n_clothes, pid2clothes = relabel_train(_parse(base / "train"))
    splits = []
    for name, cams, protocols in (("all", None, dict(ALL_PROTOCOLS)),
                                  ("cams23", (2, 3), {"same_clothes": "general"}),
                                  ("cams34", (3, 4), {"cloth_changing": "general"})):
        q, g = relabel_test_clothes(_parse(base / "query", cams), _parse(base / "gallery", cams))
        splits.append(EvalSplit(name, q, g, protocols))
    return ReIDDataset("vcclothes", str(base), train, n_pids, n_clothes, pid2clothes, splits,
                       selection="all/cloth_changing")
