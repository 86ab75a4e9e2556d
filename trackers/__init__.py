"""Per-camera multi-object trackers behind one interface: `update(detections, frame) -> Tracks`."""

from trackers.base import Tracker, Tracks
from trackers.ultralytics_trackers import (
    STATIC_CAMERA_PARAMS,
    TRACKER_TYPES,
    UltralyticsTracker,
    default_tracker_params,
    ultralytics_tracker_params,
)


def create_tracker(kind: str = "bytetrack", params: dict | None = None) -> Tracker:
    return UltralyticsTracker(kind, params)


__all__ = ["STATIC_CAMERA_PARAMS", "TRACKER_TYPES", "Tracker", "Tracks", "UltralyticsTracker", "create_tracker",
           "default_tracker_params", "ultralytics_tracker_params"]
