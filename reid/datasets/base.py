"""Typed records shared by every data-set loader, and the relabelling helpers they use.

Label conventions follow Simple-CCReID (methods.md §6.1): train pids and clothes are relabelled
0..N-1 over the training set; test pids stay raw; test clothes are relabelled over query ∪ gallery
so that one outfit has one id in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetLayoutError(FileNotFoundError):
    """The data-set folder does not have the layout the loader expects."""


@dataclass(frozen=True)
class ImageRecord:
    path: str
    pid: int
    camid: int
    clothes: int
    mask_path: str | None = None  # per-pixel parts mask (SynthCC only)
    # per-channel BGR multipliers applied when the image is read (colour levelling, reid.datasets.levelling)
    gains: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class EvalSplit:
    """One query set against one gallery, scored under one or more protocols.

    ``protocols`` maps the report label (e.g. "cloth_changing") to the `reid.evaluation.evaluate`
    mode that computes it. PRCC's "cloth_changing" is query camera C against gallery camera A under
    the plain "general" mode, so the mapping lives here rather than in `evaluate`.
    """

    name: str
    query: tuple[ImageRecord, ...]
    gallery: tuple[ImageRecord, ...]
    protocols: dict[str, str]


@dataclass
class ReIDDataset:
    name: str
    root: str
    train: list[ImageRecord]
    num_train_pids: int
    num_train_clothes: int
    pid2clothes: np.ndarray  # (num_train_pids, num_train_clothes) bool
    eval_splits: list[EvalSplit]
    selection: str  # "<split>/<label>" whose rank-1 picks the best epoch (as the papers' code does)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.name} at {self.root}",
                 f"  train: {self.num_train_pids} ids, {len(self.train)} images, {self.num_train_clothes} clothes"]
        for s in self.eval_splits:
            q_ids = len({r.pid for r in s.query})
            lines.append(f"  {s.name}: query {len(s.query)} images ({q_ids} ids), gallery {len(s.gallery)} images;"
                         f" protocols {', '.join(s.protocols)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(
            f"{dataset}: expected folder {path} is missing. Expected layout under the data-set root:\n{layout}\n"
            f"Pass --root pointing at the folder that holds this layout.")
    return path


def require_file(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(
            f"{dataset}: expected file {path} is missing. Expected layout under the data-set root:\n{layout}")
    return path


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def resolve_root(root: str | Path, default_dirnames: Sequence[str]) -> Path:
    """Accept either the data-set folder itself or its parent holding the usual folder name."""
    root = Path(root)
    for name in default_dirnames:
        if (root / name).is_dir():
            return root / name
    return root


def relabel_train(raw: Iterable[tuple[str, int, int, str]], mask_of=None
                  ) -> tuple[list[ImageRecord], int, int, np.ndarray]:
    """(path, raw pid, camid, clothes key) -> records with pids/clothes relabelled, and pid2clothes."""
    raw = list(raw)
    if not raw:
        raise DatasetLayoutError("training split holds no images")
    pid2label = {p: i for i, p in enumerate(sorted({r[1] for r in raw}))}
    clothes2label = {c: i for i, c in enumerate(sorted({r[3] for r in raw}))}
    pid2clothes = np.zeros((len(pid2label), len(clothes2label)), dtype=bool)
    records = []
    for path, pid, cam, clothes in raw:
        p, c = pid2label[pid], clothes2label[clothes]
        pid2clothes[p, c] = True
        records.append(ImageRecord(path, p, cam, c, mask_of(path) if mask_of else None))
    return records, len(pid2label), len(clothes2label), pid2clothes


def relabel_test_clothes(*splits: list[tuple[str, int, int, str]], mask_of=None
                         ) -> list[tuple[ImageRecord, ...]]:
    """Relabel clothes keys jointly over all given test splits; pids stay raw."""
    keys = sorted({r[3] for split in splits for r in split})
    clothes2label = {k: i for i, k in enumerate(keys)}
    return [tuple(ImageRecord(p, pid, cam, clothes2label[c], mask_of(p) if mask_of else None)
                  for p, pid, cam, c in split) for split in splits]


def parse_error(dataset: str, path: Path, expected: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{dataset}: cannot parse file name {path.name!r} ({path}); expected {expected}")


def with_extra_training(main: ReIDDataset, extras: Sequence[ReIDDataset]) -> ReIDDataset:
    """`main` whose training set also holds every extra set's training images, their people and outfits
    relabelled after `main`'s (an extra person is never one of `main`'s people: different data sets share no
    one, and SynthCC sets of different generators or seeds draw different bodies). Test splits are `main`'s."""
    train = list(main.train)
    n_pids, n_clothes = main.num_train_pids, main.num_train_clothes
    blocks = [main.pid2clothes]
    notes = list(main.notes)
    for extra in extras:
        train += [replace(r, pid=r.pid + n_pids, clothes=r.clothes + n_clothes)
                  for r in extra.train]
        blocks.append(extra.pid2clothes)
        notes.append(f"extra training set {extra.name} at {extra.root}: {extra.num_train_pids} ids, "
                     f"{len(extra.train)} images, {extra.num_train_clothes} clothes")
        n_pids += extra.num_train_pids
        n_clothes += extra.num_train_clothes
    pid2clothes = np.zeros((n_pids, n_clothes), dtype=bool)
    r = c = 0
    for block in blocks:
        pid2clothes[r:r + block.shape[0], c:c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    return ReIDDataset(main.name, main.root, train, n_pids, n_clothes, pid2clothes, main.eval_splits,
                       main.selection, notes)
