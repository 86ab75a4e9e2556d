"""Person detectors behind one interface: `detect(frames) -> list[Detections]`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from detectors.base import Detections, Detector, MinHeightFilter

BACKENDS = ("yolox", "ultralytics")
# Network input (longer side, px) when the config gives none. YOLOX: 640, not the file's own 416: PETS09-S2L1's
# people (40-90 px tall in 768x576) shrink to 22-49 px at 416 and tracking lost 10-20 IDF1 points there; at
# 640 the input is 640x480 for a 4:3 frame (benchmarks/mot_pets.py has the measured cost).
DEFAULT_INPUT_SIZE = {"yolox": 640, "ultralytics": 640}


def create_detector(
    backend: str,
    model_path: str | Path,
    *,
    input_size: int | None = None,
    confidence: float = 0.1,
    nms_iou: float = 0.45,
    classes: Sequence[int] = (0,),
    min_height: float = 0.0,
) -> Detector:
    """`min_height`: boxes shorter than this (px, original frame) are dropped; 0 keeps all."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown detector backend {backend!r}; choose one of {BACKENDS}")
    size = input_size or DEFAULT_INPUT_SIZE[backend]
    detector: Detector
    if backend == "yolox":
        from detectors.yolox_onnx import YoloxOnnxDetector

        detector = YoloxOnnxDetector(model_path, size, confidence, nms_iou, classes)
    else:
        from detectors.ultralytics_yolo import UltralyticsDetector

        detector = UltralyticsDetector(model_path, size, confidence, nms_iou, classes)
    return MinHeightFilter(detector, min_height) if min_height > 0 else detector


__all__ = ["BACKENDS", "DEFAULT_INPUT_SIZE", "Detections", "Detector", "MinHeightFilter", "create_detector"]
