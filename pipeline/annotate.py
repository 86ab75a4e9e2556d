"""Annotated output video and MOTChallenge track files."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from trackers.base import Tracks

log = logging.getLogger("pipeline")


def _colour(key: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(key * 7919 + 17)  # stable colour per identity/track
    return tuple(int(c) for c in rng.integers(60, 255, 3))


UNDECIDED = (160, 160, 160)  # BGR grey: a track that has no identity yet
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_label(box: tuple[int, int, int, int], size: tuple[int, int], taken: list, frame_wh: tuple[int, int]):
    """Where a label of `size` (w, h) goes for `box`: above it, else inside its top, else below it, else the
    nearest free slot going down; never over a label already placed."""
    x1, y1, x2, y2 = box
    w, h = size
    fw, fh = frame_wh
    x = min(max(0, x1), max(0, fw - w))
    candidates = [y1 - h, y1, y2]
    candidates += [y1 + k * h for k in range(1, 40)]
    for y in candidates:
        y = min(max(0, y), max(0, fh - h))
        rect = (x, y, x + w, y + h)
        if not any(_overlaps(rect, t) for t in taken):
            return rect
    return (x, min(max(0, y1 - h), max(0, fh - h)), x + w, min(max(0, y1 - h), max(0, fh - h)) + h)


def draw_tracks(frame: np.ndarray, tracks: Tracks, identities: dict[int, int | None], camera_id: str,
                frame_index: int, legend: bool = True) -> np.ndarray:
    """Boxes coloured by identity (grey while a track has none yet), labels `T<track> ID<identity>` placed so
    they never overlap, the camera and frame in the top-left corner and a legend in the bottom-left one."""
    out = frame.copy()
    fh, fw = out.shape[:2]
    header = f"{camera_id} #{frame_index}"
    (hw, hh), _ = cv2.getTextSize(header, FONT, 0.6, 2)
    taken: list[tuple[int, int, int, int]] = [(0, 0, hw + 16, hh + 14)]  # the header's corner
    order = sorted(range(len(tracks)), key=lambda i: float(tracks.xyxy[i][1]))  # top to bottom: stable placement
    boxes = []
    for i in order:
        tid = int(tracks.track_id[i])
        gid = identities.get(tid)
        x1, y1, x2, y2 = (int(v) for v in tracks.xyxy[i])
        colour = _colour(gid) if gid is not None else UNDECIDED
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        boxes.append((tid, gid, (x1, y1, x2, y2), colour))
    for tid, gid, box, colour in boxes:
        label = f"T{tid} ID{gid}" if gid is not None else f"T{tid} ?"
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.5, 1)
        rect = _place_label(box, (tw + 4, th + 6), taken, (fw, fh))
        taken.append(rect)
        lx1, ly1, lx2, ly2 = rect
        cv2.rectangle(out, (lx1, ly1), (lx2, ly2), colour, -1)
        cv2.putText(out, label, (lx1 + 2, ly2 - 4), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(out, header, (8, 20), FONT, 0.6, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, header, (8, 20), FONT, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    if legend:
        _legend(out)
    return out


def _legend(out: np.ndarray) -> None:
    lines = [("T<n> ID<k>: track n, identity k (one colour per identity)", (90, 200, 255)),
             ("T<n> ?: track without an identity yet (undecided)", UNDECIDED)]
    fh = out.shape[0]
    y = fh - 8 - 18 * (len(lines) - 1)
    for text, colour in lines:
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.45, 1)
        cv2.rectangle(out, (4, y - th - 4), (8 + 14 + tw + 6, y + 4), (0, 0, 0), -1)
        cv2.rectangle(out, (8, y - th), (8 + 10, y), colour, -1)
        cv2.putText(out, text, (8 + 16, y), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        y += 18


class VideoOut:
    """Annotated video in H.264 (yuv420p, `+faststart` MP4: browsers play it) through PyAV's libx264; lazily
    opened, since the frame size is known only at the first frame. Without libx264 it falls back to OpenCV's
    MPEG-4 Part 2 (`mp4v`, not browser-playable), saying so once."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.codec: str | None = None
        self._container = None
        self._stream = None
        self._writer: cv2.VideoWriter | None = None

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (w - w % 2, h - h % 2)  # yuv420p needs even sides
        try:
            import av

            container = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
            try:
                stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                stream.width, stream.height = self.size
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "veryfast", "crf": "25"}
            except Exception:
                container.close()
                raise
            self._container, self._stream, self.codec = container, stream, "h264"
            return
        except Exception as exc:  # no PyAV or no libx264 in it
            log.warning("annotated video %s: H.264 unavailable (%s: %s); writing MPEG-4 (mp4v), which browsers do "
                        "not play", self.path.name, type(exc).__name__, exc)
        self.size = (w, h)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not self._writer.isOpened():
            raise RuntimeError(f"cannot write video {self.path}")
        self.codec = "mp4v"

    def write(self, frame: np.ndarray) -> None:
        if self.codec is None:
            self._open(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self.size:
            if self._stream is not None and frame.shape[1] - frame.shape[1] % 2 == self.size[0] \
                    and frame.shape[0] - frame.shape[0] % 2 == self.size[1]:
                frame = frame[: self.size[1], : self.size[0]]  # an odd side: drop its last row/column
            else:
                # A source that changed resolution (reconnect): one file keeps one size.
                frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._stream is not None:
            import av

            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        else:
            self._writer.write(frame)

    def close(self) -> None:
        if self._stream is not None:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            finally:
                self._container.close()
                self._container = self._stream = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def write_mot_rows(fh: TextIO, frame_index: int, tracks: Tracks) -> None:
    """MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1`; frame 1 is the first decoded frame."""
    for i in range(len(tracks)):
        x1, y1, x2, y2 = (float(v) for v in tracks.xyxy[i])
        fh.write(f"{frame_index + 1},{int(tracks.track_id[i])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                 f"{float(tracks.score[i]):.4f},-1,-1,-1\n")
