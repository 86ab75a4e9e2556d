"""DeepChange (Xu et al. 2021): image folders plus `<split>-bbox.txt` lists of `<image name>,<tracklet id>`.

Names split on '_': [0] = 'P<pid>', [1] = 'C<cam>', [2] = the field that, with the pid, keys the
clothes. The tracklet id replaces the camera id, so same-camera matches from other tracklets count as
true matches, as in the original protocol. Test pids stay raw; general protocol only.
"""

from __future__ import annotations

from pathlib import Path

from reid.datasets.base import (DatasetLayoutError, EvalSplit, ReIDDataset, relabel_test_clothes, relabel_train,
                                require_dir, require_file, resolve_root)

LAYOUT = """  train-set/  val-set-query/  val-set-gallery/  test-set-query/  test-set-gallery/
  train-set-bbox.txt  val-set-query-bbox.txt  ...  (lines "<image name>,<tracklet id>")
  image names: P<pid>_C<cam>_<clothes field>_...jpg"""

SPLITS = ("train-set", "val-set-query", "val-set-gallery", "test-set-query", "test-set-gallery")


def _parse(base: Path, split: str) -> list[tuple[str, int, int, str]]:
    folder = require_dir(base / split, "deepchange", LAYOUT)
    listing = require_file(base / f"{split}-bbox.txt", "deepchange", LAYOUT)
    out = []
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            name, tracklet = line.rsplit(",", 1)
            parts = Path(name).stem.split("_")
            if not (parts[0].startswith("P") and parts[1].startswith("C")):
                raise ValueError("name does not start with P<pid>_C<cam>_")
            pid = int(parts[0][1:])
            clothes_key = parts[0] + parts[2]
            out.append((str(folder / name), pid, int(tracklet), clothes_key))
        except (ValueError, IndexError) as exc:
            raise DatasetLayoutError(f"deepchange: {listing}:{lineno}: cannot parse {line!r} ({exc}); expected "
                                     "'P<pid>_C<cam>_<clothes>_....jpg,<tracklet id>'") from exc
    return out


def load_deepchange(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("DeepChangeDataset",))
    train, n_pids, n_clothes, pid2clothes = relabel_train(_parse(base, "train-set"))
    vq, vg = relabel_test_clothes(_parse(base, "val-set-query"), _parse(base, "val-set-gallery"))
    tq, tg = relabel_test_clothes(_parse(base, "test-set-query"), _parse(base, "test-set-gallery"))
    splits = [EvalSplit("val", vq, vg, {"general": "general"}),
              EvalSplit("test", tq, tg, {"general": "general"})]
    return ReIDDataset("deepchange", str(base), train, n_pids, n_clothes, pid2clothes, splits,
                       selection="test/general")
