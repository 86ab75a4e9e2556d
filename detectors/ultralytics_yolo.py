"""Any Ultralytics YOLO model file the user supplies (.pt, .onnx, .engine, OpenVINO dir), batched."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from detectors.base import Detections


class UltralyticsDetector:
    def __init__(
        self,
        model_path: str | Path,
        input_size: int = 640,
        confidence: float = 0.1,
        nms_iou: float = 0.45,
        classes: Sequence[int] = (0,),
        device: str | None = None,
    ) -> None:
        from ultralytics import YOLO  # imported lazily: it pulls torch

        path = Path(model_path)
        if not path.exists():
            # Ultralytics would try to download a bare name such as "yolov8n.pt"; we never download.
            raise FileNotFoundError(f"Ultralytics model file not found: {path}")
        self.model = YOLO(str(path), task="detect")
        self.kwargs = dict(imgsz=input_size, conf=confidence, iou=nms_iou, classes=list(classes), verbose=False)
        if device:
            self.kwargs["device"] = device

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        results = self.model.predict(list(frames), **self.kwargs)
        out = []
        for r in results:
            boxes = r.boxes.cpu().numpy()
            out.append(
                Detections(
                    boxes.xyxy.astype(np.float32),
                    boxes.conf.astype(np.float32),
                    boxes.cls.astype(np.int32),
                )
            )
        return out
