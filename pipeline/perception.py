"""The detector and the per-camera tracker built from a config: the one code path `pipeline run` and
benchmarks/mot_pets.py share, so a benchmark figure is the pipeline's figure."""

from __future__ import annotations

from detectors import Detector, create_detector
from pipeline.config import DetectorConfig, TrackerConfig
from pipeline.models import resolve_model
from trackers import Tracker, create_tracker


def detector_from_config(det: DetectorConfig) -> Detector:
    return create_detector(det.backend, resolve_model(det.model), input_size=det.input_size,
                           confidence=det.confidence, nms_iou=det.nms_iou, classes=det.classes,
                           min_height=det.min_height, runtime=det.runtime, precision=det.precision,
                           spin_wait=det.spin_wait, workers=det.workers)


def tracker_from_config(tracker: TrackerConfig) -> Tracker:
    return create_tracker(tracker.type, dict(tracker.params))
