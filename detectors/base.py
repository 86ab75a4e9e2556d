"""The detector interface and its record: one `Detections` per input frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes found in one frame, as parallel arrays (pixel coordinates of the original frame)."""

    xyxy: np.ndarray  # (N, 4) float32
    score: np.ndarray  # (N,) float32
    cls: np.ndarray  # (N,) int32

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.shape != (n, 4) or self.score.shape != (n,) or self.cls.shape != (n,):
            raise ValueError(f"inconsistent Detections shapes {self.xyxy.shape} {self.score.shape} {self.cls.shape}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def select(self, keep: np.ndarray) -> "Detections":
        """The detections where the boolean mask `keep` is true."""
        return Detections(self.xyxy[keep], self.score[keep], self.cls[keep])

    def as_rows(self) -> np.ndarray:
        """(N, 6) float32 rows `[x1, y1, x2, y2, score, cls]` (the layout trackers consume)."""
        return np.concatenate(
            [self.xyxy, self.score[:, None], self.cls[:, None].astype(np.float32)], axis=1
        ).astype(np.float32)


class Detector(Protocol):
    """Finds people in a batch of BGR frames (frames may have different sizes).

    A detector whose `queued` is true also takes frames without waiting for them (`submit`, returning a handle)
    and gives their boxes later (`collect(handle)`), in the order submitted: the frame loop detects the next
    step's frames while it tracks and embeds this step's (detector.ahead)."""

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]: ...


def queued(detector) -> bool:
    """The detector takes `submit` / `collect` (see `Detector`)."""
    return bool(getattr(detector, "queued", False))


def frame_threads(detector) -> int | None:
    """Threads one frame's run takes when the detector runs frames side by side (`queued`), else None: the
    share of the cores another model running beside those runs has to itself."""
    return getattr(detector, "frame_threads", None) if queued(detector) else None


class MinHeightFilter:
    """Drops boxes shorter than `min_height` px from another detector's output.

    For a static camera whose far field holds things nobody needs tracked (on PETS09-S2L1, a 30 px sign the
    detector calls a person in every frame, and unannotated walkers 30-40 px tall on a far path), so they do
    not become long false tracks. Off by default: it is a per-scene choice.
    """

    def __init__(self, inner: Detector, min_height: float) -> None:
        if min_height < 0:
            raise ValueError(f"min_height must be >= 0, got {min_height}")
        self.inner = inner
        self.min_height = float(min_height)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return [self._kept(d) for d in self.inner.detect(frames)]

    def _kept(self, d: Detections) -> Detections:
        return d.select(d.xyxy[:, 3] - d.xyxy[:, 1] >= self.min_height)

    @property
    def queued(self) -> bool:
        return bool(getattr(self.inner, "queued", False))

    @property
    def frame_threads(self) -> int | None:
        return getattr(self.inner, "frame_threads", None)

    def submit(self, frames: Sequence[np.ndarray]):
        return self.inner.submit(frames)

    def collect(self, handle) -> list[Detections]:
        return [self._kept(d) for d in self.inner.collect(handle)]
