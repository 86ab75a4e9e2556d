"""The per-camera tracker interface and its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from detectors.base import Detections


@dataclass(frozen=True)
class Tracks:
    """Confirmed tracks in one frame, as parallel arrays."""

    xyxy: np.ndarray  # (N, 4) float32
    track_id: np.ndarray  # (N,) int64, unique per camera tracker
    score: np.ndarray  # (N,) float32
    cls: np.ndarray  # (N,) int32
    det_index: np.ndarray  # (N,) int64: the detection this track was matched to in this frame

    def __len__(self) -> int:
        return int(self.track_id.shape[0])

    @classmethod
    def empty(cls) -> "Tracks":
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32),
            np.zeros((0,), np.int32), np.zeros((0,), np.int64),
        )


class Tracker(Protocol):
    """Links one camera's detections over time. Holds no global identities."""

    #: frames a lost track is kept before it is dropped (callers use it to close tracklets)
    max_lost_frames: int

    def update(self, detections: Detections, frame: np.ndarray) -> Tracks: ...

    def predict(self, frame: np.ndarray | None) -> Tracks:
        """A frame without detections: move the tracks by their motion model, report the confirmed ones (with
        det_index -1). `frame` is None when its pixels were never converted (pipeline.sources.Frame)."""
        ...

    def following(self) -> bool:
        """Whether a track is being followed now: seen in the last frames, or just started (not only lost ones)."""
        ...

    def split(self, track_id: int) -> int | None:
        """From the next frame on, report the track `track_id` under a new id (it was found to follow another
        person from here); the new id, or None when the tracker no longer holds that track."""
        ...
