"""Detection only where something may have changed: a camera's due frame is skipped when it follows no one and
its picture has not changed since the detector last looked at it and found no one to follow.

Frigate's idea (run the detector only on motion), reduced to what a per-frame skip needs. The reference is the
last frame the detector saw while the camera followed no one, not the previous frame: a person walking in slowly
adds up against it frame after frame until the change is large enough, where frame-to-frame differences of a slow
walker stay under any noise floor. OpenCV's background subtractors (MOG2, KNN) learn the scene continuously and
would absorb a person who stands still; here nothing is learnt, so a change stays a change until the detector has
looked at it. A frame is compared on a small grey copy (area-averaged, so sensor and compression noise average
out), which costs ~0.1-0.2 ms against the detector's 10-30 ms, and only while the camera follows no one.
"""

from __future__ import annotations

import cv2
import numpy as np

# The grey copy frames are compared on is the frame shrunk by a whole factor to 160-319 px wide (a 768x576 frame
# becomes 192x144, where a 40 px tall far walker still covers ~10x4 cells): OpenCV's area averaging has a fast path
# for whole factors (0.1-0.2 ms a PETS frame, grey first) and takes 1.1 ms for 4.8.
THUMB_WIDTH = 160


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A BGR (or grey) frame as a small area-averaged grey image, int16 (differences keep their sign)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    k = max(1, min(w // THUMB_WIDTH, h))
    if k > 1:  # the rows and columns past a whole number of cells are left out
        grey = cv2.resize(grey[: h - h % k, : w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return grey.astype(np.int16)


class MotionGate:
    """One camera's answer to "does this due frame need the detector?" (detector.motion_gate).

    `level`: a cell of the grey copy has changed when it differs by more than this (0-255); `area`: the frame
    has changed when that share of its cells has; `max_skip_s`: video seconds after which the detector looks
    anyway (a person the detector missed while they walked in, now standing still, is found within this)."""

    def __init__(self, level: float, area: float, max_skip_s: float) -> None:
        self.level, self.area, self.max_skip_s = float(level), float(area), float(max_skip_s)
        self._reference: np.ndarray | None = None
        self._looked_at: float | None = None  # video time of the reference
        self._unsettled: int | None = None  # position of a changed frame whose detections the tracker has not had
        self.skipped = 0  # due frames skipped: nobody followed, nothing changed

    def needs_detection(self, image: np.ndarray, video_time: float, following: bool, position: int) -> bool:
        """Whether the due frame `image` (the camera's frame number `position`) must be detected. `following`: the
        camera's tracker follows someone (then always; the reference is left as it is). A frame the detector
        sees while the camera follows no one becomes the reference."""
        if following:
            return True
        thumb = thumbnail(image)
        ref = self._reference
        changed = (ref is None or ref.shape != thumb.shape  # `_looked_at` is set with the reference
                   or not 0 <= video_time - self._looked_at < self.max_skip_s  # also a clock that went back
                   or self.changed_share(thumb, ref) >= self.area)
        # With detection a step ahead (detector.ahead) and every frame due, this frame is decided while the
        # frame before it is still being detected, before `following` can say whether that one found someone:
        # after a changed frame the next is detected too (it alone, so an empty scene is still skipped).
        if changed or self._unsettled is not None:
            self._reference, self._looked_at = thumb, video_time
            if changed:
                self._unsettled = position
            return True
        self.skipped += 1
        return False

    def settled(self, position: int) -> None:
        """The tracker has had the detections of the camera's frames up to `position`."""
        if self._unsettled is not None and self._unsettled <= position:
            self._unsettled = None

    def changed_share(self, thumb: np.ndarray, ref: np.ndarray) -> float:
        return float(np.count_nonzero(np.abs(thumb - ref) > self.level)) / thumb.size
