"""YOLOX (Megvii) exported to ONNX, run with ONNX Runtime: the offline default detector.

The official export has a fixed batch of 1; its graph computes reshapes from `Shape`, so we relabel the
batch axis as symbolic at load time and run every camera's frame in one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from detectors.base import Detections

PERSON_CLASS = 0
_STRIDES = (8, 16, 32)


def onnx_session_with_dynamic_batch(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """Load an ONNX model with its first input/output axis relabelled as a dynamic batch axis."""
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the official exports carry unused initialisers that warn on every load
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _grids(size: int) -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for stride in _STRIDES:
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


class YoloxOnnxDetector:
    """YOLOX ONNX detector (input BGR 0–255, top-left letterbox padded with 114, no normalisation)."""

    def __init__(
        self,
        model_path: str | Path,
        input_size: int = 416,
        confidence: float = 0.1,
        nms_iou: float = 0.45,
        classes: Sequence[int] = (PERSON_CLASS,),
        threads: int = 0,
    ) -> None:
        self.session = onnx_session_with_dynamic_batch(model_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        if isinstance(shape[2], int) and shape[2] != input_size:
            input_size = int(shape[2])  # the file decides; a mismatching config value would only mis-decode
        self.input_size = input_size
        self.confidence = confidence
        self.nms_iou = nms_iou
        self.classes = np.asarray(list(classes), dtype=np.int64)
        self._grid, self._stride = _grids(input_size)

    def _letterbox(self, frame: np.ndarray, out: np.ndarray) -> float:
        h, w = frame.shape[:2]
        ratio = min(self.input_size / h, self.input_size / w)
        nh, nw = int(round(h * ratio)), int(round(w * ratio))
        out[...] = 114
        out[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return ratio

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        batch = np.empty((len(frames), self.input_size, self.input_size, 3), np.uint8)
        ratios = np.array([self._letterbox(f, batch[i]) for i, f in enumerate(frames)], np.float32)
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        raw = self.session.run(None, {self.input_name: x})[0]  # (B, A, 5 + C)
        # Decode all anchors of all frames at once: centre/size from grid and stride, score = obj * cls.
        xy = (raw[..., 0:2] + self._grid) * self._stride
        wh = np.exp(raw[..., 2:4]) * self._stride
        class_scores = raw[..., 5:][..., self.classes] * raw[..., 4:5]  # (B, A, K)
        best = class_scores.argmax(-1)
        score = np.take_along_axis(class_scores, best[..., None], -1)[..., 0]
        results = []
        for i in range(len(frames)):
            keep = np.flatnonzero(score[i] >= self.confidence)
            if keep.size == 0:
                results.append(Detections.empty())
                continue
            boxes = np.concatenate([xy[i, keep] - wh[i, keep] / 2, xy[i, keep] + wh[i, keep] / 2], 1) / ratios[i]
            h, w = frames[i].shape[:2]
            boxes = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            cls = self.classes[best[i, keep]].astype(np.int32)
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            # Class-aware NMS in OpenCV's C++ (no torch on the detector path).
            kept = cv2.dnn.NMSBoxesBatched(
                xywh.tolist(), score[i, keep].tolist(), cls.tolist(), self.confidence, self.nms_iou
            )
            kept = np.asarray(kept, dtype=np.int64).reshape(-1)
            results.append(Detections(boxes[kept], score[i, keep][kept].astype(np.float32), cls[kept]))
        return results
