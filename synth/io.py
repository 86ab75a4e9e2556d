"""Byte-stable writers: PNG with fixed parameters, JSON with sorted keys."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT]


def write_png(path: Path, img: np.ndarray) -> None:
    """Write a uint8 image (BGR or single channel) as PNG; raises if OpenCV refuses."""
    if img.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {img.dtype} for {path}")
    ok, buf = cv2.imencode(".png", img, _PNG_PARAMS)
    if not ok:
        raise OSError(f"OpenCV could not encode {path} as PNG")
    path.write_bytes(buf.tobytes())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def prepare_out(out: Path, force: bool) -> None:
    """Create ``out``; refuse to mix with an earlier data set unless ``force``."""
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"output folder {out} is not empty; pass --force to write into it anyway")
    out.mkdir(parents=True, exist_ok=True)
