"""Outfit descriptor: colour and texture of the upper and lower body, computed from person crops.

The default ReID model (Intel OMZ 0267) has one generic output and no clothes-sensitive branch, so the
matcher tells outfits apart with this descriptor instead (a model with an `appearance` output is used
directly). It is deliberately simple and explainable:

* every crop is resized to 24x64 (one cv2.resize per crop, then all work is on one stacked array);
* two regions: torso (rows 15-50 %) and legs (rows 52-92 %), central 70 % of the columns (less background);
* colour: chromatic pixels vote softly into 8 hue x 2 saturation bins, dark/grey/white pixels into 4 value
  bins (hue is meaningless for them);
* texture: a 4-bin gradient-orientation histogram of the V channel weighted by gradient magnitude, plus
  the share of flat pixels (stripes and prints vs plain cloth);
* each region's histograms are normalised, square-rooted (Hellinger, so cosine compares distributions)
  and the whole vector is L2-normalised: cosine 1 = same colours and texture.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE_W, SIZE_H = 24, 64
HUE_BINS, SAT_BINS, GREY_BINS, ORIENT_BINS = 8, 2, 4, 4
COLOUR_BINS = HUE_BINS * SAT_BINS + GREY_BINS
TEXTURE_BINS = ORIENT_BINS + 1
REGION_DIM = COLOUR_BINS + TEXTURE_BINS
DESCRIPTOR_DIM = 2 * REGION_DIM
TEXTURE_WEIGHT = 0.5  # colour matters more than texture for telling outfits apart
_REGIONS = ((0.15, 0.50), (0.52, 0.92))
_COLS = (0.15, 0.85)


def outfit_descriptors(crops: list[np.ndarray]) -> np.ndarray:
    """(N, DESCRIPTOR_DIM) float32, L2-normalised, for BGR uint8 person crops of any size."""
    if not crops:
        return np.zeros((0, DESCRIPTOR_DIM), np.float32)
    for i, c in enumerate(crops):
        if c.ndim != 3 or c.shape[2] != 3 or c.shape[0] == 0 or c.shape[1] == 0:
            raise ValueError(f"crop {i} has shape {c.shape}; expected a non-empty HxWx3 BGR image")
    stack = np.stack([cv2.resize(c, (SIZE_W, SIZE_H), interpolation=cv2.INTER_AREA) for c in crops])
    n = stack.shape[0]
    # One cvtColor over all crops: stack them vertically as a single image.
    hsv = cv2.cvtColor(stack.reshape(n * SIZE_H, SIZE_W, 3), cv2.COLOR_BGR2HSV).reshape(n, SIZE_H, SIZE_W, 3)
    h = hsv[..., 0].astype(np.int32)  # 0..179
    s = hsv[..., 1].astype(np.float32) / 255.0
    v = hsv[..., 2].astype(np.float32) / 255.0
    chromatic = (s >= 0.25) & (v >= 0.2)
    # Hue votes softly into its two nearest bins (bin centres at k*180/8), so a colour on a bin edge,
    # red at 0/179 above all, does not flip between bins with noise or light.
    pos = h.astype(np.float32) * (HUE_BINS / 180.0)
    lo = np.floor(pos).astype(np.int32)
    frac = pos - lo
    sat_bin = (s >= 0.6).astype(np.int32)
    grey_bin = HUE_BINS * SAT_BINS + np.minimum((v * GREY_BINS).astype(np.int32), GREY_BINS - 1)
    bin_a = np.where(chromatic, (lo % HUE_BINS) * SAT_BINS + sat_bin, grey_bin)
    bin_b = np.where(chromatic, ((lo + 1) % HUE_BINS) * SAT_BINS + sat_bin, grey_bin)
    w_a = np.where(chromatic, 1.0 - frac, 0.5).astype(np.float32)
    gy, gx = np.gradient(v, axis=(1, 2))
    mag = np.hypot(gx, gy)
    orient = ((np.arctan2(gy, gx) % np.pi) / np.pi * ORIENT_BINS).astype(np.int32) % ORIENT_BINS
    flat = mag < 0.04

    c0, c1 = int(_COLS[0] * SIZE_W), int(np.ceil(_COLS[1] * SIZE_W))
    parts = []
    offsets = np.arange(n)[:, None]
    for top, bottom in _REGIONS:
        r0, r1 = int(top * SIZE_H), int(np.ceil(bottom * SIZE_H))
        colour = np.zeros(n * COLOUR_BINS)
        for bins, wts in ((bin_a, w_a), (bin_b, 1.0 - w_a)):
            cb = bins[:, r0:r1, c0:c1].reshape(n, -1)
            colour += np.bincount((cb + offsets * COLOUR_BINS).ravel(), weights=wts[:, r0:r1, c0:c1].ravel(),
                                  minlength=n * COLOUR_BINS)
        colour = colour.reshape(n, COLOUR_BINS)
        ob = orient[:, r0:r1, c0:c1].reshape(n, -1)
        mw = mag[:, r0:r1, c0:c1].reshape(n, -1)
        texture = np.bincount((ob + offsets * ORIENT_BINS).ravel(), weights=mw.ravel(),
                              minlength=n * ORIENT_BINS).reshape(n, ORIENT_BINS)
        flat_share = flat[:, r0:r1, c0:c1].reshape(n, -1).mean(axis=1, keepdims=True)
        colour = colour / np.maximum(colour.sum(axis=1, keepdims=True), 1e-9)
        texture = texture / np.maximum(texture.sum(axis=1, keepdims=True), 1e-9)
        tex = np.concatenate([texture * (1 - flat_share), flat_share], axis=1)
        parts.append(np.sqrt(colour))
        parts.append(TEXTURE_WEIGHT * np.sqrt(tex))
    desc = np.concatenate(parts, axis=1).astype(np.float32)
    return desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
