"""PRCC (Yang et al. 2019): rgb/{train,val}/<pid>/<cam letter>*.jpg and rgb/test/{A,B,C}/<pid>/*.jpg.

Cameras A and B show the same clothes, camera C other clothes. Test: gallery = camera A; the
same-clothes query set is camera B and the cloth-changing query set is camera C, both scored with the
plain protocol (camera junk never fires because cameras differ), all gallery images ("multi-shot").
"""

from __future__ import annotations

from pathlib import Path

from reid.datasets.base import (DatasetLayoutError, EvalSplit, ImageRecord, ReIDDataset, list_images,
                                relabel_train, require_dir, resolve_root)

LAYOUT = """  rgb/train/<pid>/<A|B|C>*.jpg   rgb/val/<pid>/<A|B|C>*.jpg
  rgb/test/A/<pid>/*.jpg   rgb/test/B/<pid>/*.jpg   rgb/test/C/<pid>/*.jpg"""

CAMERAS = {"A": 0, "B": 1, "C": 2}


def _pid_dirs(folder: Path) -> list[Path]:
    dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    bad = [d.name for d in dirs if not d.name.isdigit()]
    if bad:
        raise DatasetLayoutError(f"prcc: {folder} holds non-numeric identity folders {bad[:5]}; expected\n{LAYOUT}")
    return dirs


def _parse_train(folder: Path) -> list[tuple[str, int, int, str]]:
    out = []
    for pdir in _pid_dirs(folder):
        for img in list_images(pdir):
            cam = img.name[0]
            if cam not in CAMERAS:
                raise DatasetLayoutError(f"prcc: {img} does not start with the camera letter A, B or C")
            # A and B share one outfit per person; C is the second outfit.
            key = pdir.name if cam in "AB" else pdir.name + "C"
            out.append((str(img), int(pdir.name), CAMERAS[cam], key))
    return out


def load_prcc(root: str | Path) -> ReIDDataset:
    base = resolve_root(root, ("prcc", "PRCC"))
    rgb = require_dir(base / "rgb", "prcc", LAYOUT)
    train, n_pids, n_clothes, pid2clothes = relabel_train(_parse_train(require_dir(rgb / "train", "prcc", LAYOUT)))
    test = rgb / "test"
    for cam in CAMERAS:
        require_dir(test / cam, "prcc", LAYOUT)
    test_pids = sorted(int(d.name) for d in _pid_dirs(test / "A"))
    pid2label = {p: i for i, p in enumerate(test_pids)}
    sets: dict[str, list[ImageRecord]] = {c: [] for c in CAMERAS}
    for cam, camid in CAMERAS.items():
        for pdir in _pid_dirs(test / cam):
            pid = int(pdir.name)
            if pid not in pid2label:
                raise DatasetLayoutError(f"prcc: identity {pid} in {test / cam} has no gallery folder in {test / 'A'}")
            clothes = 2 * pid2label[pid] + (1 if cam == "C" else 0)
            sets[cam].extend(ImageRecord(str(img), pid, camid, clothes) for img in list_images(pdir))
    gallery = tuple(sets["A"])
    splits = [EvalSplit("same_clothes", tuple(sets["B"]), gallery, {"same_clothes": "general"}),
              EvalSplit("cloth_changing", tuple(sets["C"]), gallery, {"cloth_changing": "general"})]
    notes = []
    if (rgb / "val").is_dir():
        notes.append("rgb/val is present and, as in the papers' code, unused")
    return ReIDDataset("prcc", str(base), train, n_pids, n_clothes, pid2clothes, splits,
                       selection="cloth_changing/cloth_changing", notes=notes)
