"""Cameras: viewpoint habits, illumination, background, scale, blur, noise, occlusion.

Each camera gets its own background image and photometric settings, so that the same
outfit looks somewhat different across cameras (as in real data) and the camera is a
nuisance cue, not an identity cue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Camera:
    cam_id: int  # 1-based
    yaws: tuple[float, ...]  # typical facing directions of people seen by this camera (radians)
    gain: float
    white_balance: tuple[float, float, float]  # RGB multipliers
    gamma: float
    blur_sigma: float  # Gaussian blur at output resolution (pixels)
    noise_sigma: float  # additive noise (0..1 scale)
    jpeg_quality: int  # 0 = no JPEG round trip
    person_px: tuple[float, float]  # person height range in the source image (pixels); small = far, blurry
    occlusion_prob: float
    background: np.ndarray = field(repr=False)  # float32 RGB in [0, 1]

    def to_json(self) -> dict:
        return {
            "cam_id": self.cam_id,
            "yaws_deg": [round(math.degrees(y), 3) for y in self.yaws],
            "gain": round(self.gain, 6),
            "white_balance": [round(v, 6) for v in self.white_balance],
            "gamma": round(self.gamma, 6),
            "blur_sigma": round(self.blur_sigma, 6),
            "noise_sigma": round(self.noise_sigma, 6),
            "jpeg_quality": self.jpeg_quality,
            "person_px": [round(v, 3) for v in self.person_px],
            "occlusion_prob": round(self.occlusion_prob, 6),
        }


_VIEW_HABITS: tuple[tuple[float, ...], ...] = (
    (0.0, math.pi),  # corridor: people walk towards or away from the camera
    (math.pi / 2, -math.pi / 2),  # people cross the view
    (math.pi / 4, -3 * math.pi / 4),  # diagonal
    (-math.pi / 4, 3 * math.pi / 4),
    (0.0, math.pi / 2, math.pi, -math.pi / 2),  # open space, any direction
)


def procedural_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A plausible indoor/outdoor backdrop: wall with openings and signs, tiled floor."""
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.3, 0.55))
    wall = rng.uniform(0.25, 0.8, 3) * rng.uniform(0.6, 1.0)
    wall = 0.6 * wall + 0.4 * wall.mean()  # muted colours
    floor = rng.uniform(0.2, 0.65, 3)
    floor = 0.5 * floor + 0.5 * floor.mean()
    img[:horizon] = wall
    img[horizon:] = floor
    # Openings, posters, shelves on the wall.
    for _ in range(int(rng.integers(3, 9))):
        x0 = int(rng.uniform(-0.1, 0.95) * w)
        bw = int(rng.uniform(0.05, 0.3) * w)
        y0 = int(rng.uniform(0.0, 0.8) * horizon)
        bh = int(rng.uniform(0.15, 0.9) * (horizon - y0)) + 2
        colour = rng.uniform(0.05, 0.95, 3)
        colour = 0.35 * colour + 0.65 * colour.mean() if rng.uniform() < 0.8 else 0.7 * colour + 0.3 * colour.mean()
        cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), colour.tolist(), -1, cv2.LINE_AA)
        if rng.uniform() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), (wall * 0.6).tolist(), max(1, w // 200), cv2.LINE_AA)
    # Floor tiles in perspective.
    vx = w * rng.uniform(0.2, 0.8)
    line = (floor * rng.uniform(0.6, 0.85)).tolist()
    th = max(1, w // 320)
    for k in range(-12, 13):
        x_bottom = vx + k * w * rng.uniform(0.12, 0.16)
        cv2.line(img, (int(vx), horizon), (int(x_bottom), h), line, th, cv2.LINE_AA)
    y = float(horizon + 2)
    step = 2.0
    while y < h:
        cv2.line(img, (0, int(y)), (w, int(y)), line, th, cv2.LINE_AA)
        step *= 1.35
        y += step
    # Low-frequency light falloff and fine grain.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    light = 1.1 - 0.35 * np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
    img *= light[..., None]
    img += rng.normal(0.0, 0.015, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    return np.clip(img, 0.0, 1.0)


@lru_cache(maxsize=8)
def _median_frame(path: str, n_frames: int) -> np.ndarray:
    """Median of ``n_frames`` evenly spaced frames (removes moving people); cached per run."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open background video {path}: check the path and that OpenCV can decode it")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    if total > 0:
        wanted = set(np.linspace(0, total - 1, n_frames).astype(int).tolist())
        i = 0
        while len(frames) < len(wanted):
            ok, f = cap.read()
            if not ok:
                break
            if i in wanted:
                frames.append(f)
            i += 1
    else:  # raw streams (.264) do not report a length: take the first frames
        while len(frames) < n_frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    cap.release()
    if not frames:
        raise ValueError(f"background video {path} gave no frames")
    med = np.median(np.stack(frames), axis=0).astype(np.float32)[..., ::-1] / 255.0
    med.setflags(write=False)
    return med


def video_background(path: Path, w: int, h: int, n_frames: int = 25, region: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A camera backdrop from a real video: its median frame, cropped to w:h and resized.

    ``region`` (fx, fy) in [0, 1) picks which part of the frame to crop when the aspect
    ratios differ, so several cameras can share one video and still look different.
    """
    med = _median_frame(str(path), n_frames)
    fh, fw = med.shape[:2]
    target = w / h
    if fw / fh > target:
        cw = int(fh * target)
        x0 = int(region[0] * (fw - cw))
        med = med[:, x0 : x0 + cw]
    else:
        ch = int(fw / target)
        y0 = int(region[1] * (fh - ch))
        med = med[y0 : y0 + ch]
    return np.ascontiguousarray(cv2.resize(med, (w, h), interpolation=cv2.INTER_AREA))


def sample_camera(
    rng: np.random.Generator,
    cam_id: int,
    bg_size: tuple[int, int],
    backgrounds: list[Path] | None = None,
    occlusion: float = 0.15,
    near: bool | None = None,
) -> Camera:
    """``near``: people seen large and sharp (True) or small and blurry (False); None draws it."""
    w, h = bg_size
    habits = _VIEW_HABITS[int(rng.integers(len(_VIEW_HABITS)))]
    warm = rng.uniform(-0.07, 0.07)
    wb = (1.0 + warm, 1.0 + rng.uniform(-0.03, 0.03), 1.0 - warm)
    drawn_near = rng.uniform() < 0.5  # always drawn, so a given ``near`` leaves the other draws unchanged
    near = drawn_near if near is None else near
    person_px = (90.0, 170.0) if near else (40.0, 90.0)
    if backgrounds:
        src = backgrounds[(cam_id - 1) % len(backgrounds)]
        bg = video_background(src, w, h, region=(float(rng.uniform()), float(rng.uniform())))
        if rng.uniform() < 0.5:
            bg = np.ascontiguousarray(bg[:, ::-1])
    else:
        bg = procedural_background(rng, w, h)
    return Camera(
        cam_id=cam_id,
        yaws=habits,
        gain=float(rng.uniform(0.85, 1.15)),
        white_balance=(float(wb[0]), float(wb[1]), float(wb[2])),
        gamma=float(rng.uniform(0.9, 1.12)),
        blur_sigma=float(rng.uniform(0.0, 0.9)),
        noise_sigma=float(rng.uniform(0.005, 0.03)),
        jpeg_quality=int(rng.choice([0, 60, 75, 90])),
        person_px=person_px,
        occlusion_prob=float(np.clip(occlusion * rng.uniform(0.3, 1.7), 0.0, 1.0)),
        background=bg,
    )


def inverse_colour_lut(white_balance, gain: float, gamma: float) -> np.ndarray:
    """BGR lookup table undoing `apply_camera`'s colour table out = clip(v * wb * gain) ** gamma (`white_balance`
    in RGB, as Camera and the sets' meta.json hold it); benchmarks use it to see a camera's frames without its cast."""
    v = np.arange(256, dtype=np.float64) / 255.0
    wb = np.asarray(white_balance, dtype=np.float64)[::-1]
    lut = np.stack([np.clip(v ** (1.0 / gamma) / (wb[c] * gain), 0.0, 1.0) for c in range(3)], axis=-1)
    return (lut * 255.0 + 0.5).astype(np.uint8).reshape(256, 1, 3)


def apply_camera(img: np.ndarray, cam: Camera, rng: np.random.Generator, gain_jitter: float = 0.05,
                 noise: np.ndarray | None = None) -> np.ndarray:
    """Photometric camera model on a float RGB image in [0, 1]; returns uint8 BGR.

    ``noise`` (int16, same shape) replaces the per-call Gaussian draw; video frames pass a
    shifted slice of a per-camera noise bank, which is much cheaper at full HD.
    """
    g = cam.gain * (1.0 + rng.uniform(-gain_jitter, gain_jitter))
    # White balance, gain and gamma as one lookup table per channel (BGR order).
    v = np.arange(256, dtype=np.float64) / 255.0
    wb = cam.white_balance[::-1]
    lut = np.stack([np.clip(v * wb[c] * g, 0.0, 1.0) ** cam.gamma for c in range(3)], axis=-1)
    lut = (lut * 255.0 + 0.5).astype(np.uint8).reshape(256, 1, 3)
    bgr = (np.clip(img[..., ::-1], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    bgr = cv2.LUT(bgr, lut)
    if cam.blur_sigma > 0.3:
        bgr = cv2.GaussianBlur(bgr, (0, 0), cam.blur_sigma)
    if noise is None:
        noise = np.round(rng.standard_normal(bgr.shape, dtype=np.float32) * (cam.noise_sigma * 255.0)).astype(np.int16)
    bgr = np.clip(bgr.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if cam.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg_quality])
        if not ok:
            raise RuntimeError("OpenCV failed to JPEG-encode a frame")
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr)


def noise_bank(rng: np.random.Generator, cam: Camera, h: int, w: int, n: int = 4) -> np.ndarray:
    """``n`` int16 noise images for a camera's video (see ``apply_camera``)."""
    return np.round(rng.standard_normal((n, h, w, 3), dtype=np.float32) * (cam.noise_sigma * 255.0)).astype(np.int16)


def bank_noise(bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A different-looking noise image per frame: a random bank entry, rolled by a random offset."""
    i = int(rng.integers(len(bank)))
    dy, dx = int(rng.integers(bank.shape[1])), int(rng.integers(bank.shape[2]))
    return np.roll(bank[i], (dy, dx), axis=(0, 1))
