"""The clock the matcher's times are read on: when a tracklet started and was last seen, and "now".

Transit times between cameras (`matcher.topology`) and the presence of a person on another camera are
physics: a walk of 3 seconds between two cameras. With live cameras the wall clock is that physics. A run over
recorded files decodes them as fast as it can (or slower, on a loaded machine), so three seconds of video may
take one second or ten of wall time, and every transit window would stretch or shrink with the machine's load.
The video clock times each frame at the run's start plus the frame's position in its file, as if the
recordings had started together when the run did; "now" is the earliest of the running cameras' latest frame
times, so no camera's tracklets look older than they are because another camera decodes faster.

`matcher.clock: auto` (the default) takes the video clock when every camera is a file replayed at decoding
speed (`realtime: false`), and the wall clock otherwise. A run on a store that already holds later times (an
earlier replay that decoded faster than real time) starts its video clock after them: recordings replayed one
after the other continue each other's time line.
"""

from __future__ import annotations

import threading
import time


class RunClock:
    def __init__(self, video: bool, origin: float | None = None) -> None:
        self.video = video
        self.origin = time.time() if origin is None else origin
        self._latest: dict[str, float] = {}  # camera -> time of its latest frame (video clock only)
        self._now = self.origin  # never goes back, also when the last camera has ended
        self._lock = threading.Lock()  # read by the store worker's thread, written by the frame loop

    def continue_after(self, latest: float | None) -> float:
        """Start the video clock no earlier than `latest` (the newest time the store holds). A replay decodes
        faster than real time, so a replay before this one, sharing the store, may have written times past the
        wall clock; this one's times must not run behind them (its people would seem to arrive before the
        earlier run's left). Call before the first frame. Returns how far the clock moved (seconds, 0 if not)."""
        if not (self.video and latest is not None and latest > self.origin):
            return 0.0
        shift = latest - self.origin
        self.origin = self._now = latest
        return shift

    @property
    def name(self) -> str:
        return "video" if self.video else "wall"

    def frame_time(self, camera_id: str, video_time: float) -> float:
        """The time of a frame that was `video_time` seconds into its source; recorded as the camera's latest."""
        if not self.video:
            return time.time()
        t = self.origin + video_time
        with self._lock:
            self._latest[camera_id] = max(t, self._latest.get(camera_id, t))
        return t

    def camera_ended(self, camera_id: str) -> None:
        """A camera that stopped no longer holds "now" back."""
        with self._lock:
            ended = self._latest.pop(camera_id, None)
            if ended is not None and not self._latest:
                self._now = max(self._now, ended)  # the run's last instant

    def now(self) -> float:
        if not self.video:
            return time.time()
        with self._lock:
            if self._latest:
                self._now = max(self._now, min(self._latest.values()))
            return self._now


def use_video_clock(mode: str, cameras) -> bool:
    """Which clock `matcher.clock` asks for, given the configured cameras (pipeline.config.CameraConfig)."""
    if mode == "auto":
        return all(c.kind == "file" and not c.realtime for c in cameras)
    return mode == "video"
