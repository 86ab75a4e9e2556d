"""Per-camera colour levelling ("grey world" over person pixels), shared by training, evaluation and the runtime.

Why: a ReID model trained on a few cameras loses most of its cloth-changing accuracy on a camera whose colour
response (gain, white balance, gamma) it has not seen (README, "What in a new camera costs the models": 45.7 ->
19.0 rank-1 for a colour response alone). Many people's clothes average out, so the mean colour of the person
pixels a camera sees is mostly the camera's own cast; multiplying each channel by `reference / camera mean` takes
that cast away. A model trained on levelled crops declares it in its spec (`extra.colour_levelling`: the reference
BGR mean of its training cameras), and whoever feeds it (`reid eval`, `reid calibrate`, the pipeline) levels each
camera's crops to that same reference.

The person pixels are approximated by the centre of the box (`centre_region`), as the runtime has boxes and no
masks; training uses the same estimator on its crops, so the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SPEC_KEY = "colour_levelling"
# The part of a person box that is mostly the person: the middle half of its width, 10-90 % of its height.
CENTRE_X = (0.25, 0.75)
CENTRE_Y = (0.10, 0.90)
# A gain outside this range is a camera we cannot trust the estimate of (a near-black or saturated view).
MAX_GAIN = 4.0


def centre_region(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    y0, y1 = int(h * CENTRE_Y[0]), max(int(h * CENTRE_Y[1]), int(h * CENTRE_Y[0]) + 1)
    x0, x1 = int(w * CENTRE_X[0]), max(int(w * CENTRE_X[1]), int(w * CENTRE_X[0]) + 1)
    return crop[y0:y1, x0:x1]


def centre_mean(crop: np.ndarray) -> np.ndarray:
    """Mean BGR of the crop's centre region (float64, 3)."""
    return np.asarray(cv2.mean(centre_region(crop))[:3], dtype=np.float64)


def gains_for(reference: Sequence[float], camera_mean: np.ndarray) -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float64)
    return np.clip(ref / np.maximum(camera_mean, 1.0), 1.0 / MAX_GAIN, MAX_GAIN)


def gain_lut(gains: np.ndarray) -> np.ndarray:
    v = np.arange(256, dtype=np.float64)[:, None]
    return np.clip(v * gains[None, :] + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def apply_lut(crop: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return cv2.LUT(np.ascontiguousarray(crop), lut)


def reference_of(spec) -> list[float] | None:
    """The BGR reference a model was trained with, or None if it was trained on crops as they came."""
    entry = (getattr(spec, "extra", None) or {}).get(SPEC_KEY)
    if not entry:
        return None
    ref = entry.get("reference") if isinstance(entry, dict) else None
    if not (isinstance(ref, (list, tuple)) and len(ref) == 3 and all(isinstance(v, (int, float)) for v in ref)):
        raise ValueError(f"model spec extra.{SPEC_KEY} = {entry!r}: expected {{'reference': [b, g, r]}}")
    return [float(v) for v in ref]


class CameraLevels:
    """Running per-camera levelling for a live run.

    Each camera's mean starts at the reference with the weight of `prior_crops` crops, so its first crops are
    barely changed and the gain settles as the camera's own crops come in (no decision waits for a warm-up).
    """

    def __init__(self, reference: Sequence[float], prior_crops: float = 50.0,
                 fixed: dict[str, Sequence[float]] | None = None, horizon: float | None = None) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)
        if self.reference.shape != (3,) or not np.all(self.reference > 0):
            raise ValueError(f"colour levelling reference must be 3 positive BGR values, got {list(reference)}")
        self.prior_crops = float(prior_crops)
        # beyond this many crops a camera's mean forgets the oldest ones in proportion (light changes over a day)
        self.horizon = None if horizon is None else float(horizon)
        # cameras whose cast was measured once (config `colour_gains`): those gains, never the running estimate
        self.fixed = {cam: np.asarray(g, dtype=np.float64) for cam, g in (fixed or {}).items()}
        self._sum: dict[str, np.ndarray] = {}
        self._n: dict[str, float] = {}

    def set_fixed(self, camera_id: str, gains: Sequence[float] | None) -> None:
        if gains is None:
            self.fixed.pop(camera_id, None)
        else:
            self.fixed[camera_id] = np.asarray(gains, dtype=np.float64)

    def observe(self, camera_id: str, crop: np.ndarray) -> None:
        if crop.size == 0:
            return
        self._add(camera_id, centre_mean(crop), 1.0)

    def _add(self, camera_id: str, total: np.ndarray, n: float) -> None:
        s, k = self._sum.get(camera_id, 0.0) + total, self._n.get(camera_id, 0.0) + n
        if self.horizon is not None and k > self.horizon:
            s, k = s * (self.horizon / k), self.horizon
        self._sum[camera_id], self._n[camera_id] = s, k

    def state(self) -> dict[str, tuple[list[float], float]]:
        """Each camera's running sum and count, to keep across runs (`restore`)."""
        return {cam: ([float(v) for v in self._sum[cam]], float(n)) for cam, n in self._n.items()}

    def restore(self, saved: dict[str, tuple[Sequence[float], float]]) -> None:
        """Add what earlier runs saw of each camera (`state`)."""
        for cam, (total, n) in saved.items():
            self._add(cam, np.asarray(total, dtype=np.float64), float(n))

    def camera_mean(self, camera_id: str) -> np.ndarray:
        n = self._n.get(camera_id, 0.0)
        return (self._sum.get(camera_id, 0.0) + self.prior_crops * self.reference) / (n + self.prior_crops)

    def gains(self, camera_id: str) -> np.ndarray:
        if camera_id in self.fixed:
            return self.fixed[camera_id]
        return gains_for(self.reference, self.camera_mean(camera_id))

    def summary(self) -> dict[str, tuple[int, np.ndarray]]:
        """Each camera's crop count and current gains (the run's closing log)."""
        return {cam: (int(n), self.gains(cam)) for cam, n in self._n.items()}

    def level(self, camera_ids: Sequence[str], crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Update each camera's mean with these crops, then level them (one lookup table per camera)."""
        for cam, crop in zip(camera_ids, crops):
            self.observe(cam, crop)
        luts = {cam: gain_lut(self.gains(cam)) for cam in set(camera_ids)}
        return [apply_lut(crop, luts[cam]) if crop.size else crop for cam, crop in zip(camera_ids, crops)]
