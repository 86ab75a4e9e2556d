"""Per-camera colour levelling ("grey world" over person pixels), shared by training, evaluation and the runtime.

Why: a ReID model trained on a few cameras loses most of its cloth-changing accuracy on a camera whose colour
response (gain, white balance, gamma) it has not seen (README, "What in a new camera costs the models": 45.7 ->
19.0 rank-1 for a colour response alone). Many people's clothes average out, so the mean colour of the person
pixels a camera sees is mostly the camera's own cast; multiplying each channel by `reference / camera mean` takes
that cast away. A model trained on levelled crops declares it in its spec (`extra.colour_levelling`: the reference
BGR mean of its training cameras), and whoever feeds it (`reid eval`, `reid calibrate`, the pipeline) levels each
camera's crops to that same reference.

Where a camera's mean is taken (the spec's `region`): "centre", the centre of each box (`centre_region`), the same
estimator in training and at run time; or "person", the person pixels: the training set's masks in training, and
at run time the pixels of a box unlike the camera's learnt background (`BackgroundModel`, static cameras).
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


# -- person pixels against a static camera's background ----------------------------------------------------------
# Why: the box centre still holds the camera's own background (22 % of its pixels on SynthCC crops), and that
# background is a camera's own colour, not the average: it levels the wrong thing (README, "Colour levelling in
# training and in the pipeline": the grey-world error of box centres is as large as the cast it corrects). A
# static camera's background is learnt from the frames the pipeline already decodes; the pixels of a box that
# differ from it are the person's.
PERSON_REGION = "person"
CENTRE_REGION = "centre"


class BackgroundModel:
    """One static camera's background: a running mean of its frames outside the person boxes, at reduced scale.

    `update` every `every`-th call blends the frame in at `rate` where no box is (so a person standing still is
    never learnt as background); `person_mean` is the mean colour of a box's pixels that differ from the background
    by more than `threshold` in some channel, or None while the model is young or the box shows too little person.
    """

    def __init__(self, scale: float = 0.5, rate: float = 0.1, every: int = 2, threshold: float = 30.0,
                 warmup: int = 10, min_fraction: float = 0.15) -> None:
        if not (0 < scale <= 1 and 0 < rate <= 1 and every >= 1 and threshold > 0):
            raise ValueError("background model: scale and rate in (0, 1], every >= 1, threshold > 0")
        self.scale, self.rate, self.every, self.threshold = scale, rate, every, threshold
        self.warmup, self.min_fraction = warmup, min_fraction
        self.background: np.ndarray | None = None  # float32, reduced scale
        # where the background has been seen free of boxes: what lay under a box in the first frame is unknown
        # (a person there would be taken for background), and unknown pixels are never called a person's
        self.known: np.ndarray | None = None
        self.updates = 0
        self._calls = 0

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = self._small_shape(frame)
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)

    def update(self, frame: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        self._calls += 1
        if self.background is not None and self.background.shape[:2] != self._small_shape(frame):
            self.background, self.updates = None, 0  # the camera's frame size changed: start again
        if self.background is not None and (self._calls - 1) % self.every:
            return
        small = self._small(frame)
        free = np.ones(small.shape[:2], dtype=np.uint8)
        for x1, y1, x2, y2 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * self.scale:
            # a margin around each box: its edges are blurred into the person
            free[max(int(y1) - 2, 0):int(y2) + 3, max(int(x1) - 2, 0):int(x2) + 3] = 0
        if self.background is None:
            self.background, self.known, self.updates = small, free.astype(bool), 1
            return
        # pixels seen free for the first time take the frame as it is; the others blend in at `rate`
        fresh = (free > 0) & ~self.known
        self.background[fresh] = small[fresh]
        cv2.accumulateWeighted(small, self.background, self.rate, mask=free)
        self.known |= free > 0
        self.updates += 1

    def _small_shape(self, frame: np.ndarray) -> tuple[int, int]:
        h, w = frame.shape[:2]
        return max(int(h * self.scale), 1), max(int(w * self.scale), 1)

    def person_mask(self, frame: np.ndarray, box_xyxy) -> np.ndarray | None:
        """Boolean mask over the box's crop of `frame`: the pixels unlike the background (None: not known yet)."""
        if self.background is None or self.updates < self.warmup:
            return None
        x1, y1, x2, y2 = _inside(frame, box_xyxy)
        crop = frame[y1:y2, x1:x2]
        if crop.size == 0:
            return None
        s = self.scale
        sx1, sy1 = int(x1 * s), int(y1 * s)
        sx2, sy2 = max(int(np.ceil(x2 * s)), sx1 + 1), max(int(np.ceil(y2 * s)), sy1 + 1)
        bg = cv2.resize(self.background[sy1:sy2, sx1:sx2], (crop.shape[1], crop.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
        known = cv2.resize(self.known[sy1:sy2, sx1:sx2].astype(np.uint8), (crop.shape[1], crop.shape[0]),
                           interpolation=cv2.INTER_NEAREST) > 0
        return (np.abs(crop.astype(np.float32) - bg).max(axis=2) > self.threshold) & known

    def person_pixels(self, frame: np.ndarray, box_xyxy) -> np.ndarray | None:
        """`person_mask`, or None also when it marks less than `min_fraction` of the box (too little to count)."""
        mask = self.person_mask(frame, box_xyxy)
        return None if mask is None or mask.mean() < self.min_fraction else mask

    def person_mean(self, frame: np.ndarray, box_xyxy) -> np.ndarray | None:
        mask = self.person_pixels(frame, box_xyxy)
        if mask is None:
            return None
        x1, y1, x2, y2 = _inside(frame, box_xyxy)
        return np.asarray(cv2.mean(frame[y1:y2, x1:x2], mask=mask.astype(np.uint8))[:3], dtype=np.float64)


def _inside(frame: np.ndarray, box_xyxy) -> tuple[int, int, int, int]:
    """The box in whole pixels, clipped to the frame (a negative index would wrap around)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    return min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)


def check_region(region: str, where: str = "colour levelling region") -> str:
    if region not in (CENTRE_REGION, PERSON_REGION):
        raise ValueError(f"{where} {region!r}: expected {CENTRE_REGION!r} or {PERSON_REGION!r}")
    return region


def region_of(spec) -> str:
    """Where a levelled model's camera means were taken: "centre" (box centres) or "person" (person pixels)."""
    entry = (getattr(spec, "extra", None) or {}).get(SPEC_KEY) or {}
    region = entry.get("region", CENTRE_REGION) if isinstance(entry, dict) else CENTRE_REGION
    return check_region(region, f"model spec extra.{SPEC_KEY}.region =")


class CameraLevels:
    """Running per-camera levelling for a live run.

    Each camera's mean starts at the reference with the weight of `prior_crops` crops, so its first crops are
    barely changed and the gain settles as the camera's own crops come in (no decision waits for a warm-up).
    """

    def __init__(self, reference: Sequence[float], prior_crops: float = 50.0,
                 fixed: dict[str, Sequence[float]] | None = None, horizon: float | None = None,
                 region: str = CENTRE_REGION) -> None:
        check_region(region)
        # "person": a camera's mean is taken over the pixels of its boxes unlike its learnt background
        # (`see_frame` feeds each camera's background model); "centre": over the boxes' centres
        self.region = region
        self.backgrounds: dict[str, BackgroundModel] = {}
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

    @property
    def learns_background(self) -> bool:
        """Whether the camera means need each camera's frames (`see_frame`) and crops' person means."""
        return self.region == PERSON_REGION

    def see_frame(self, camera_id: str, frame: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        """Let a camera's background model learn from a frame and the person boxes found in it ("person" only)."""
        if self.learns_background:
            self.backgrounds.setdefault(camera_id, BackgroundModel()).update(frame, boxes_xyxy)

    def person_mean(self, camera_id: str, frame: np.ndarray, box_xyxy) -> np.ndarray | None:
        """The mean colour of a box's person pixels, or None (no background learnt yet, or too little person)."""
        model = self.backgrounds.get(camera_id)
        return None if model is None else model.person_mean(frame, box_xyxy)

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

    def level(self, camera_ids: Sequence[str], crops: Sequence[np.ndarray],
              person_means: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Update each camera's mean with these crops, then level them (one lookup table per camera).

        Region "person": `person_means` (from `person_mean`, None where unknown) update the means instead; a crop
        without one is levelled without being counted."""
        if self.learns_background:
            if person_means is None or len(person_means) != len(crops):
                raise ValueError("colour levelling over person pixels needs one person mean (or None) per crop")
            for cam, mean in zip(camera_ids, person_means):
                if mean is not None:
                    self._add(cam, np.asarray(mean, dtype=np.float64), 1.0)
        else:
            for cam, crop in zip(camera_ids, crops):
                self.observe(cam, crop)
        luts = {cam: gain_lut(self.gains(cam)) for cam in set(camera_ids)}
        return [apply_lut(crop, luts[cam]) if crop.size else crop for cam, crop in zip(camera_ids, crops)]
