"""ByteTrack and BoT-SORT through Ultralytics' own implementations (no hand-written copy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import Detections
from trackers.base import Tracks

TRACKER_TYPES = ("bytetrack", "botsort")


def default_tracker_params(kind: str) -> dict[str, Any]:
    """Ultralytics' shipped defaults for `kind` (bytetrack.yaml / botsort.yaml)."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if kind not in TRACKER_TYPES:
        raise ValueError(f"unknown tracker type {kind!r}; choose one of {TRACKER_TYPES}")
    return dict(YAML.load(check_yaml(f"{kind}.yaml")))


class UltralyticsTracker:
    def __init__(self, kind: str = "bytetrack", params: dict[str, Any] | None = None) -> None:
        from ultralytics.engine.results import Boxes
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        cfg = default_tracker_params(kind)
        unknown = sorted(set(params or {}) - set(cfg))
        if unknown:
            raise ValueError(f"unknown {kind} parameter(s) {unknown}; known: {sorted(cfg)}")
        cfg.update(params or {})
        if kind == "botsort" and cfg.get("with_reid") and cfg.get("model") == "auto":
            # "auto" makes Ultralytics reuse detector features it never receives here.
            raise ValueError("botsort with_reid needs an explicit ReID model file in tracker.params.model")
        args = IterableSimpleNamespace(**cfg)
        self._tracker = BYTETracker(args) if kind == "bytetrack" else BOTSORT(args)
        self._boxes = Boxes
        self.kind = kind
        self.max_lost_frames = int(cfg["track_buffer"])

    def update(self, detections: Detections, frame: np.ndarray) -> Tracks:
        h, w = frame.shape[:2]
        boxes = self._boxes(detections.as_rows().reshape(-1, 6), (h, w)).numpy()
        return _tracks(self._tracker.update(boxes, frame))

    def predict(self, frame: np.ndarray) -> Tracks:
        """A frame the detector skipped (`detector.every` > 1): every track's motion model moves one frame on, as
        an update would, and the confirmed tracks are reported where it puts them, with score 0 (so no crop is
        taken from a guessed box) and det_index -1. Nothing is matched, started or lost; the frame counter moves,
        so `track_buffer` still counts frames."""
        t = self._tracker
        t.frame_id += 1
        t.multi_predict(t.tracked_stracks + t.lost_stracks)
        rows = [s.result for s in t.tracked_stracks if s.is_activated]
        tracks = _tracks(rows)
        return Tracks(tracks.xyxy, tracks.track_id, np.zeros_like(tracks.score), tracks.cls,
                      np.full_like(tracks.det_index, -1))


def _tracks(rows) -> Tracks:
    """Ultralytics' `[x1, y1, x2, y2, track_id, score, cls, idx]` rows as a Tracks record."""
    if len(rows) == 0:
        return Tracks.empty()
    rows = np.asarray(rows, dtype=np.float64)
    return Tracks(
        xyxy=rows[:, 0:4].astype(np.float32),
        track_id=rows[:, 4].astype(np.int64),
        score=rows[:, 5].astype(np.float32),
        cls=rows[:, 6].astype(np.int32),
        det_index=rows[:, 7].astype(np.int64),
    )
