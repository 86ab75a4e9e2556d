"""Person detectors behind one interface: `detect(frames) -> list[Detections]`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from detectors.base import Detections, Detector, MinHeightFilter

BACKENDS = ("yolox", "ultralytics")
# Network input (longer side, px) when the config gives none. YOLOX: 640, not the file's own 416: PETS09-S2L1's
# people (40-90 px tall in 768x576) shrink to 22-49 px at 416; with the default tracker, dev frames 1-400 scored
# IDF1 63.6 at 416 and 78.2 at 640 (640x480 input for a 4:3 frame, ~2.3x the pixels of 416x320). IDF1 there
# hangs on a few crossings, so nearby sizes scatter (512: 69.0, 576: 54.9, 608: 53.1, 672: 52.6, 768: 69.6);
# MOTA is ~72 at all of them. benchmarks/mot_pets.py has the table.
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
    runtime: str = "onnxruntime",
    precision: str = "auto",
    spin_wait: bool = True,
    workers: int = 1,
) -> Detector:
    """`min_height`: boxes shorter than this (px, original frame) are dropped; 0 keeps all. `runtime` and
    `precision` choose what runs a YOLOX file (detectors.yolox_onnx); Ultralytics runs its own. `spin_wait`:
    ONNX Runtime's threads spin between runs (False: they sleep; detectors.yolox_onnx.yield_between_runs).
    `workers`: a YOLOX file in ONNX Runtime runs a batch's frames on this many threads side by side, a frame at
    a time (YoloxOnnxDetector)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown detector backend {backend!r}; choose one of {BACKENDS}")
    size = input_size or DEFAULT_INPUT_SIZE[backend]
    detector: Detector
    if backend == "yolox":
        from detectors.yolox_onnx import YoloxOnnxDetector

        detector = YoloxOnnxDetector(model_path, size, confidence, nms_iou, classes, runtime=runtime,
                                     precision=precision, spin_wait=spin_wait, workers=workers)
    else:
        if runtime != "onnxruntime" or precision != "auto":
            raise ValueError("detector.runtime / detector.precision apply to YOLOX files only; the ultralytics "
                             "backend runs its model itself (leave them unset)")
        from detectors.ultralytics_yolo import UltralyticsDetector

        detector = UltralyticsDetector(model_path, size, confidence, nms_iou, classes)
    return MinHeightFilter(detector, min_height) if min_height > 0 else detector


__all__ = ["BACKENDS", "DEFAULT_INPUT_SIZE", "Detections", "Detector", "MinHeightFilter", "create_detector"]
