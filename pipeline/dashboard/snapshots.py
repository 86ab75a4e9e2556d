"""What the dashboard shows that the identity store does not hold by itself: the best crop per identity
outfit (snapshots, kept in the store) and the latest annotated frame per camera (kept in memory, and in
the store for a dashboard beside the run).

Store keys (prefix `pipeline` by default), all bounded:
  {p}:snap:{identity}       hash: outfit id -> JPEG bytes of the best crop seen in that outfit (one per outfit)
  {p}:snapmeta:{identity}   hash: outfit id -> JSON {score, camera_id, ts, video_time_s, tracklet_id,
                            first_seen, last_seen, cameras}: where the crop is from and where the outfit was seen
  {p}:frame:{camera}        string: the latest annotated JPEG of a camera (expires after FRAME_TTL_S)
  {p}:camera:{camera}       string: JSON of the camera's state, fps, frames, reconnects (expires likewise)
With `matcher.retention_s` the snapshot hashes expire with their identity.

Nothing here may slow or stop the pipeline: the frame loop only JPEG-encodes (a few small crops per track,
frames at a bounded rate); store writes happen in a daemon thread behind a bounded queue, and a failed
write is logged once and dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict

import cv2
import numpy as np

log = logging.getLogger("pipeline.dashboard")
FRAME_TTL_S = 30
SNAPSHOT_HEIGHT = 192  # px: a gallery tile, a few kB of JPEG
DECIDING = ("identity.created", "identity.assigned", "identity.outfit_changed", "track.ended")

# Keep the better crop (higher score) and always merge where/when the outfit was seen.
_PUT_SNAPSHOT_LUA = """
local outfit, score, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[8])
local ts = tonumber(ARGV[5])
local raw = redis.call('HGET', KEYS[2], outfit)
local meta
if raw then
  meta = cjson.decode(raw)
  if ts < meta.first_seen then meta.first_seen = ts end
  if ts > meta.last_seen then meta.last_seen = ts end
  local known = false
  for _, c in ipairs(meta.cameras) do if c == ARGV[4] then known = true end end
  if not known then meta.cameras[#meta.cameras + 1] = ARGV[4] end
else
  meta = {first_seen = ts, last_seen = ts, cameras = {ARGV[4]}, score = -1}
end
local better = score > tonumber(meta.score)
if better then
  meta.score = score
  meta.camera_id = ARGV[4]
  meta.ts = ts
  meta.video_time_s = tonumber(ARGV[6])
  meta.tracklet_id = ARGV[7]
  redis.call('HSET', KEYS[1], outfit, ARGV[2])
end
redis.call('HSET', KEYS[2], outfit, cjson.encode(meta))
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return better and 1 or 0
"""


def encode_jpeg(image: np.ndarray, max_width: int | None = None, max_height: int | None = None,
                quality: int = 80) -> bytes:
    h, w = image.shape[:2]
    scale = min(1.0, (max_width or w) / max(w, 1), (max_height or h) / max(h, 1))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def snap_key(prefix: str, identity_id: int) -> str:
    return f"{prefix}:snap:{identity_id}"


def snapmeta_key(prefix: str, identity_id: int) -> str:
    return f"{prefix}:snapmeta:{identity_id}"


class LiveFrames:
    """The latest annotated JPEG per camera, encoded at most `fps` times a second per camera."""

    def __init__(self, fps: float = 2.0, width: int = 960) -> None:
        self.period = 1.0 / fps
        self.width = width
        self._lock = threading.Lock()
        self._frames: dict[str, tuple[bytes, float, int]] = {}  # camera -> (jpeg, wall time, frame index)
        self._last: dict[str, float] = {}

    def due(self, camera_id: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._last.get(camera_id, -1e9) >= self.period

    def put(self, camera_id: str, image: np.ndarray, frame_index: int) -> bytes:
        self._last[camera_id] = time.monotonic()
        jpeg = encode_jpeg(image, max_width=self.width)
        with self._lock:
            self._frames[camera_id] = (jpeg, time.time(), frame_index)
        return jpeg

    def get(self, camera_id: str) -> tuple[bytes, float, int] | None:
        with self._lock:
            return self._frames.get(camera_id)

    def discard(self, camera_id: str) -> None:
        with self._lock:
            self._frames.pop(camera_id, None)


class SnapshotKeeper:
    """Best crop per tracklet (frame loop), written to the store as the crop of the tracklet's identity outfit
    once an event names them (store worker), by a writer thread of its own."""

    def __init__(self, client, prefix: str, retention_s: float = 0, max_tracklets: int = 1024,
                 max_pending: int = 1000) -> None:
        self.r = client
        self.p = prefix
        self.ttl = int(retention_s or 0)
        self._best: OrderedDict[str, tuple[float, bytes, str, float | None]] = OrderedDict()
        self._max_tracklets = max_tracklets
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._put = client.register_script(_PUT_SNAPSHOT_LUA)
        self._thread = threading.Thread(target=self._run, name="dashboard-store", daemon=True)
        self._warned = False
        self.dropped = 0
        self.written = 0

    def start(self) -> "SnapshotKeeper":
        self._thread.start()
        return self

    # -- frame loop ---------------------------------------------------------------------------------
    def offer(self, tracklet_id: str, camera_id: str, crop: np.ndarray, score: float,
              video_time: float | None) -> None:
        """A crop the pipeline embedded; kept (encoded) only when it beats the tracklet's best so far."""
        with self._lock:
            best = self._best.get(tracklet_id)
        if best is not None and best[0] >= score:
            return
        if crop.size == 0:
            return
        jpeg = encode_jpeg(crop, max_height=SNAPSHOT_HEIGHT)
        with self._lock:
            self._best[tracklet_id] = (score, jpeg, camera_id, video_time)
            self._best.move_to_end(tracklet_id)
            while len(self._best) > self._max_tracklets:
                self._best.popitem(last=False)

    def publish_frame(self, camera_id: str, jpeg: bytes, stats: dict) -> None:
        self._enqueue(("frame", camera_id, jpeg, json.dumps(stats)))

    # -- store worker (events the store took) -------------------------------------------------------
    def on_events(self, events) -> None:
        for ev in events:
            if ev.type not in DECIDING or ev.tracklet_id is None:
                continue
            with self._lock:
                best = self._best.pop(ev.tracklet_id, None) if ev.type == "track.ended" \
                    else self._best.get(ev.tracklet_id)
            if best is None or ev.identity_id is None or ev.outfit_id is None:
                continue
            score, jpeg, camera_id, video_time = best
            self._enqueue(("snap", int(ev.identity_id), int(ev.outfit_id), jpeg, score, camera_id, time.time(),
                           video_time, ev.tracklet_id))

    def _enqueue(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    # -- writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(item)
            except Exception as exc:  # the store is down or refuses: the dashboard loses a picture, nothing else
                self.dropped += 1
                if not self._warned:
                    self._warned = True
                    log.warning("dashboard: cannot write snapshots/frames to the store (%s: %s); will keep trying "
                                "quietly", type(exc).__name__, exc)

    def _write(self, item) -> None:
        if item[0] == "frame":
            _, camera_id, jpeg, stats = item
            with self.r.pipeline(transaction=False) as pipe:
                pipe.set(f"{self.p}:frame:{camera_id}", jpeg, ex=FRAME_TTL_S)
                pipe.set(f"{self.p}:camera:{camera_id}", stats, ex=FRAME_TTL_S)
                pipe.execute()
            return
        _, identity_id, outfit_id, jpeg, score, camera_id, ts, video_time, tracklet_id = item
        self._put(keys=[snap_key(self.p, identity_id), snapmeta_key(self.p, identity_id)],
                  args=[outfit_id, jpeg, repr(float(score)), camera_id, repr(float(ts)),
                        "" if video_time is None else repr(round(float(video_time), 3)), tracklet_id, self.ttl])
        self.written += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what waits (bounded by `timeout_s`), then stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
