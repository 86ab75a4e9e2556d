"""Annotated output video and MOTChallenge track files."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from trackers.base import Tracks


def _colour(key: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(key * 7919 + 17)  # stable colour per identity/track
    return tuple(int(c) for c in rng.integers(60, 255, 3))


def draw_tracks(frame: np.ndarray, tracks: Tracks, identities: dict[int, int | None], camera_id: str,
                frame_index: int) -> np.ndarray:
    out = frame.copy()
    for i in range(len(tracks)):
        tid = int(tracks.track_id[i])
        gid = identities.get(tid)
        x1, y1, x2, y2 = (int(v) for v in tracks.xyxy[i])
        colour = _colour(gid) if gid is not None else (160, 160, 160)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = f"T{tid}" + (f" ID{gid}" if gid is not None else "")
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(out, (x1, max(0, y1 - th - 6)), (x1 + tw + 4, y1), colour, -1)
        cv2.putText(out, label, (x1 + 2, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(out, f"{camera_id} #{frame_index}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return out


class VideoOut:
    """Lazily opened writer: the frame size is known only at the first frame."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self.size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"cannot write video {self.path}")
        if (frame.shape[1], frame.shape[0]) != self.size:
            # A source that changed resolution (reconnect): one file keeps one size (the writer would drop
            # frames of another size without a word).
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def write_mot_rows(fh: TextIO, frame_index: int, tracks: Tracks) -> None:
    """MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1`; frame 1 is the first decoded frame."""
    for i in range(len(tracks)):
        x1, y1, x2, y2 = (float(v) for v in tracks.xyxy[i])
        fh.write(f"{frame_index + 1},{int(tracks.track_id[i])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                 f"{float(tracks.score[i]):.4f},-1,-1,-1\n")
