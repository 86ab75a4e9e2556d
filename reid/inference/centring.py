"""Per-camera feature centring: subtract each camera's mean identity feature before comparing people.

Why: every crop of one camera shares that camera's look (light, angle, distance, its colour cast after
levelling), and a ReID feature carries part of it. Two strangers seen by one camera then score higher than the
same person seen by two, and a clothes-changing model, whose cross-outfit cosines are the lowest it gives a right
link, loses those links first. The camera's mean feature over many people is mostly that shared part (people
average out), so subtracting it, then renormalising, leaves what tells people apart. `reid calibrate --centre
camera` measures the thresholds on features centred the same way; `benchmarks/mtmc_features_synthcc.py
--centre camera` shows what it does to cross-camera cosines.

A live camera's mean is not known at its first crop: each camera's mean starts at the mean of all cameras so far
(with the weight of `prior_crops` crops), and that pooled mean itself starts at zero (no centring) with the same
weight, so the first crops are barely changed and no decision waits for a warm-up (as `CameraLevels` does for
colour). The means are kept in the identity store across runs (with the model they were measured on: another
model's features live in another space), so a restarted run centres as the last one ended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NONE, CAMERA = "none", "camera"
MODES = (NONE, CAMERA)


def check_mode(mode: str, where: str = "feature centring") -> str:
    if mode not in MODES:
        raise ValueError(f"{where} {mode!r}: expected one of {', '.join(repr(m) for m in MODES)}")
    return mode


def l2_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def centre_by_camera(features: np.ndarray, cameras: Sequence) -> np.ndarray:
    """Offline: each row minus the mean of its camera's rows (all of them known), renormalised."""
    features = np.asarray(features, dtype=np.float64)
    cameras = np.asarray(cameras)
    out = np.empty_like(features)
    for cam in np.unique(cameras):
        rows = cameras == cam
        out[rows] = features[rows] - features[rows].mean(0)
    return l2_rows(out)


def feature_space(model_path: str | Path, flip_sum: bool = False) -> str:
    """What a saved camera mean belongs to: a digest of the model file (with an OpenVINO IR's weights) and how
    crops are embedded. Means of another model, or of the same one embedding the other way, do not apply."""
    path = Path(model_path)
    digest = hashlib.sha256()
    for part in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"{path.name}:{digest.hexdigest()[:16]}" + (":flip_sum" if flip_sum else "")


class CameraFeatureMeans:
    """Running per-camera mean of unit identity features for a live run, and the centring it gives."""

    def __init__(self, prior_crops: float = 50.0, horizon: float | None = 5000.0) -> None:
        if prior_crops < 0:
            raise ValueError(f"feature centring prior_crops must be >= 0, got {prior_crops}")
        self.prior_crops = float(prior_crops)
        # beyond this many crops a camera's mean forgets the oldest in proportion (a camera's view changes)
        self.horizon = None if horizon is None else float(horizon)
        self._sum: dict[str, np.ndarray] = {}
        self._n: dict[str, float] = {}

    def pooled_mean(self) -> np.ndarray | None:
        """The mean over every camera (the cameras' own sums: one that forgets also forgets here), shrunk towards
        zero while few crops have been seen."""
        if not self._sum:
            return None
        return sum(self._sum.values()) / (sum(self._n.values()) + self.prior_crops)

    def camera_mean(self, camera_id: str, pooled: np.ndarray | None = None) -> np.ndarray | None:
        pooled = self.pooled_mean() if pooled is None else pooled
        if pooled is None:
            return None
        n = self._n.get(camera_id, 0.0)
        return (self._sum.get(camera_id, 0.0) + self.prior_crops * pooled) / (n + self.prior_crops)

    def _add(self, camera_id: str, total: np.ndarray, n: float) -> None:
        s, k = self._sum.get(camera_id, 0.0) + total, self._n.get(camera_id, 0.0) + n
        if self.horizon is not None and k > self.horizon:
            s, k = s * (self.horizon / k), self.horizon
        self._sum[camera_id], self._n[camera_id] = s, k

    def observe(self, camera_ids: Sequence[str], features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float64)
        camera_ids = np.asarray(camera_ids)
        for cam in dict.fromkeys(camera_ids.tolist()):
            rows = features[camera_ids == cam]
            self._add(cam, rows.sum(0), float(len(rows)))

    def state(self) -> dict[str, tuple[list[float], float]]:
        """Each camera's running sum and count, to keep across runs (`restore`)."""
        return {cam: ([float(v) for v in self._sum[cam]], float(n)) for cam, n in self._n.items()}

    def restore(self, saved: dict[str, tuple[Sequence[float], float]]) -> None:
        """Add what earlier runs of the same model saw of each camera (`state`)."""
        for cam, (total, n) in saved.items():
            self._add(cam, np.asarray(total, dtype=np.float64), float(n))

    def centre(self, camera_ids: Sequence[str], features: np.ndarray) -> np.ndarray:
        """Count these crops into their cameras' means, then return each minus its camera's mean, renormalised."""
        raw = np.asarray(features, dtype=np.float64)
        if len(camera_ids) != len(raw):
            raise ValueError(f"feature centring needs one camera per feature: {len(camera_ids)} for {len(raw)}")
        if len(raw) == 0:
            return raw.astype(np.float32)
        self.observe(camera_ids, raw)
        pooled = self.pooled_mean()
        means = {cam: self.camera_mean(cam, pooled) for cam in set(camera_ids)}
        centred = raw - np.stack([means[c] for c in camera_ids])
        # a crop that is its camera's whole mean (the first crop with prior_crops 0) would leave nothing: keep it
        empty = np.linalg.norm(centred, axis=1) < 1e-6 * np.maximum(np.linalg.norm(raw, axis=1), 1e-12)
        centred[empty] = raw[empty]
        return l2_rows(centred)

    def summary(self) -> dict[str, int]:
        """Each camera's crop count (the run's closing log)."""
        return {cam: int(n) for cam, n in self._n.items()}
