"""Person detectors behind one interface: `detect(frames) -> list[Detections]`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from detectors.base import Detections, Detector

BACKENDS = ("yolox", "ultralytics")


def create_detector(
    backend: str,
    model_path: str | Path,
    *,
    input_size: int | None = None,
    confidence: float = 0.1,
    nms_iou: float = 0.45,
    classes: Sequence[int] = (0,),
) -> Detector:
    if backend == "yolox":
        from detectors.yolox_onnx import YoloxOnnxDetector

        return YoloxOnnxDetector(model_path, input_size or 416, confidence, nms_iou, classes)
    if backend == "ultralytics":
        from detectors.ultralytics_yolo import UltralyticsDetector

        return UltralyticsDetector(model_path, input_size or 640, confidence, nms_iou, classes)
    raise ValueError(f"unknown detector backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["BACKENDS", "Detections", "Detector", "create_detector"]
