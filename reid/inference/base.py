"""The `Embedder` interface shared by every backend, and the one place preprocessing is defined.

A backend turns a list of BGR uint8 person crops (any sizes) into L2-normalised feature rows.
Preprocessing constants (input size, scale, mean/std, colour order) travel with the model file
as a `PreprocessSpec` (ONNX metadata key ``ccreid.spec``), so no constant is duplicated between
training, export and the runtime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

SPEC_METADATA_KEY = "ccreid.spec"


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input, and what it gives back."""

    height: int = 256
    width: int = 128
    colour: str = "rgb"  # channel order fed to the network: "rgb" or "bgr"
    scale: float = 1.0 / 255.0  # pixel value multiplier applied before mean/std
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    identity_dim: int = 0  # 0 = unknown until the first batch
    appearance_dim: int = 0  # 0 = the model has no clothes-sensitive branch
    method: str = "unknown"
    train_dataset: str = "unknown"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.colour not in ("rgb", "bgr"):
            raise ValueError(f"PreprocessSpec.colour must be 'rgb' or 'bgr', got {self.colour!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"PreprocessSpec size must be positive, got {self.height}x{self.width}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        raw = json.loads(text)
        for key in ("mean", "std"):
            if key in raw:
                raw[key] = tuple(float(v) for v in raw[key])
        return cls(**raw)


@dataclass(frozen=True)
class EmbeddingBatch:
    """Features for N crops: rows are L2-normalised float32."""

    identity: np.ndarray  # (N, D) clothes-invariant (or generic) identity feature
    appearance: np.ndarray | None = None  # (N, Da) clothes-sensitive feature, when the model has one

    def __len__(self) -> int:
        return int(self.identity.shape[0])


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def resize_crops(crops: list[np.ndarray], spec: PreprocessSpec, out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 crops of any size -> (N, H, W, 3) uint8 BGR at the model's input size.

    `out` (at least N rows) lets a GPU backend resize straight into a pinned host buffer.
    """
    n = len(crops)
    shape = (spec.height, spec.width, 3)
    if out is None:
        batch = np.empty((n, *shape), dtype=np.uint8)
    elif out.dtype != np.uint8 or out.shape[1:] != shape or out.shape[0] < n:
        raise ValueError(f"resize_crops: out buffer {out.shape} {out.dtype} cannot hold {n} crops of {shape} uint8")
    else:
        batch = out[:n]
    for i, crop in enumerate(crops):
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
            raise ValueError(f"crop {i} has shape {crop.shape}; expected a non-empty HxWx3 BGR image")
        batch[i] = cv2.resize(crop, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    return batch


def normalisation_affine(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray, bool]:
    """(gain, offset, flip_bgr): network input = pixel * gain + offset per channel, after BGR->RGB when flip_bgr.

    The one statement of the normalisation, shared by `preprocess_crops` (NumPy) and the GPU backends,
    which normalise on the device after an async upload of the uint8 batch.
    """
    std = np.asarray(spec.std, np.float32)
    gain = np.float32(spec.scale) / std
    offset = -np.asarray(spec.mean, np.float32) / std
    return gain.astype(np.float32), offset.astype(np.float32), spec.colour == "rgb"


def preprocess_crops(crops: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """BGR uint8 crops of any size -> one (N, 3, H, W) float32 tensor, vectorised after the resize."""
    return normalise_uint8(resize_crops(crops, spec), spec)


def normalise_uint8(batch: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) float32 network input, one vectorised pass for the batch."""
    gain, offset, flip = normalisation_affine(spec)
    if flip:
        batch = batch[..., ::-1]
    x = batch.astype(np.float32) * gain + offset
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@runtime_checkable
class Embedder(Protocol):
    """Embeds person crops. Implementations must be safe to call from one thread at a time."""

    spec: PreprocessSpec

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        """BGR uint8 crops -> L2-normalised features; an empty list gives (0, D) arrays."""
        ...
