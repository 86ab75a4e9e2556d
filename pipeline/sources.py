"""Frame sources: one reader thread per camera, backends behind one interface, reconnection, health.

Why this shape (see ../shared/anchors.md §3: growing latency, fragile reconnects, one dead stream
stopping the others):

* Each camera decodes in its own thread, so a camera that hangs in `open` or `read` only ever blocks
  itself; every backend call has a timeout, so even that thread stays responsive to `stop()`.
* Live sources (RTSP/HTTP/devices) keep only the newest decoded frame: a frame the pipeline has not
  taken when the next one arrives is dropped and counted, so capture-to-processing latency is bounded
  by one processing step, whatever the load. Files keep a small bounded blocking buffer instead: nothing
  is dropped and decoding overlaps inference.
* A live source that fails to open or stops delivering is reopened with exponential backoff and jitter;
  the delay goes back to its initial value after a healthy period. Camera states (connecting, streaming,
  stalled, reconnecting, failed, ended) are reported through a callback (the runner turns them into
  `camera.state` events) and read by the metrics collector.
* Every message that may quote the source goes through `redact`, so credentials in URLs never
  reach logs, events, metrics or errors.

Backends: `ffmpeg` (OpenCV's FFmpeg backend with open/read timeouts; V4L2 for device indexes) and
`gstreamer` (gst-python: `rtspsrc`/`uridecodebin`/`v4l2src` → `decodebin` → `appsink`; decodebin picks
the highest-ranked decoder, hardware ones when their GStreamer plugins are installed).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import cv2
import numpy as np

from pipeline.config import CameraConfig
from pipeline.redact import redact

log = logging.getLogger("pipeline.sources")

CameraState = Literal["connecting", "streaming", "stalled", "reconnecting", "failed", "ended"]
CAMERA_STATES: tuple[str, ...] = ("connecting", "streaming", "stalled", "reconnecting", "failed", "ended")
TERMINAL_STATES = ("failed", "ended")
FILE_BUFFER = 8  # frames a file reader may decode ahead of the pipeline


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Frame:
    camera_id: str
    index: int  # 0-based decoded frame index in the source (MOT frame = index + 1); live: across reconnects
    video_time: float  # seconds since the source's first frame: from its frame rate (files) or wall clock (live)
    wall_time: float  # unix time when the frame was decoded (the capture time this pipeline can see)
    # The BGR pixels, or None for a frame whose pixels the consumer said it would not look at
    # (`CameraReader.wants_image`): it was decoded (a video's next frames need it) but never converted.
    image: np.ndarray | None
    shape: tuple[int, ...]  # (height, width, 3) of the pixels, even when `image` is None


END = object()  # what `CameraReader.poll` returns once a reader has finished and its buffer is empty


# -- backends --------------------------------------------------------------------------------------
class Capture(Protocol):
    fps: float | None  # frames per second the source announces, if any
    frame_count: int | None  # total frames (files), if known
    last_error: str | None  # why the last read returned None, when the backend knows

    def grab(self) -> bool:
        """Decodes the next frame and holds it; False at the end of the source, on an error or after the read
        timeout (`last_error` says which)."""

    def retrieve(self) -> np.ndarray | None:
        """The frame `grab` holds, as BGR pixels. Converting is about half of what a frame costs (768x576
        MPEG-4: 0.31 of 0.67 ms), so frames nobody looks at are grabbed and never retrieved."""

    def read(self) -> np.ndarray | None:
        """`grab`, then `retrieve`: the next BGR frame or None."""

    def close(self) -> None: ...


_FFMPEG_ENV_LOCK = threading.Lock()  # OpenCV reads FFmpeg options from one process-wide variable at open


class OpenCVCapture:
    """OpenCV VideoCapture: FFmpeg for files and streams (with open/read timeouts), V4L2 for devices."""

    def __init__(self, camera: CameraConfig) -> None:
        self.camera = camera
        self.last_error: str | None = None
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(camera.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(camera.read_timeout_s * 1000)]
        if camera.kind != "device" and camera.decode_threads:
            params += [cv2.CAP_PROP_N_THREADS, camera.decode_threads]
        if camera.kind == "device":
            api = cv2.CAP_V4L2 if hasattr(cv2, "CAP_V4L2") and os.name == "posix" else cv2.CAP_ANY
            cap = cv2.VideoCapture(int(camera.source), api, params)
        elif camera.kind == "stream":
            # Low-delay demuxing and a short probe (FFmpeg's default 5 s analysis delays every (re)connect);
            # transport per camera. The variable is process-wide, so set it and open under a lock.
            options = "fflags;nobuffer|flags;low_delay|analyzeduration;1000000|probesize;200000"
            if str(camera.source).startswith(("rtsp://", "rtsps://")):
                options = f"rtsp_transport;{camera.transport}|" + options
            with _FFMPEG_ENV_LOCK:
                saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
                try:
                    cap = cv2.VideoCapture(str(camera.source), cv2.CAP_FFMPEG, params)
                finally:
                    if saved is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved
        else:
            cap = cv2.VideoCapture(str(camera.source), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {camera.id}: cannot open {redact(str(camera.source))} with the ffmpeg backend "
                              f"(unreachable, wrong path/credentials, or not a video)")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if camera.kind == "file" else 0
        self.frame_count = count if count > 0 else None

    def grab(self) -> bool:
        started = time.monotonic()
        ok = self._cap.grab()
        took = time.monotonic() - started
        if self.camera.kind != "file" and took >= 0.95 * self.camera.read_timeout_s:
            # OpenCV's read timeout can hand back the last decoded frame again instead of failing (seen with
            # a hung RTSP server): a read that took the whole timeout is a lost stream, never a new frame.
            self.last_error = f"no data for {took:.1f} s (read timeout, ffmpeg backend)"
            return False
        if not ok:
            self.last_error = "end of stream, read error or read timeout (ffmpeg backend)"
            return False
        return True

    def retrieve(self) -> np.ndarray | None:
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            self.last_error = "a decoded frame could not be converted to BGR (ffmpeg backend)"
            return None
        return image

    def read(self) -> np.ndarray | None:
        return self.retrieve() if self.grab() else None

    def close(self) -> None:
        self._cap.release()


_GST_INIT_LOCK = threading.Lock()


def gstreamer_available() -> str | None:
    """None when the GStreamer backend can be used here, else why not (and how to fix it)."""
    try:
        _gst()
    except SourceError as exc:
        return str(exc)
    return None


def _preload_openvino_cpu() -> None:
    """OpenVINO's CPU plugin crashes (SIGSEGV/SIGABRT in its first compile_model) when it first compiles
    after GStreamer's decoders have loaded Debian's libgomp into a process that already holds OpenCV (seen
    with Debian 12's GStreamer 1.22, opencv-python-headless 4.14, openvino 2026.4; loading libgomp alone
    reproduces it). One compile before that makes every later one safe. So when OpenVINO is installed,
    compile a one-node model on CPU before gi/GStreamer are imported (~0.1 s, once per process)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return
    try:
        import openvino
        from openvino import opset13

        x = opset13.parameter([1, 4], np.float32)
        openvino.Core().compile_model(openvino.Model([opset13.relu(x)], [x]), "CPU")
    except Exception as exc:  # a broken OpenVINO must not stop the camera; say why the guard is off
        log.warning("could not preload OpenVINO's CPU plugin before GStreamer (%s); an OpenVINO model loaded "
                    "after a GStreamer camera started may crash", exc)


_GST_STATE: dict[str, object] = {}


def _gst():
    with _GST_INIT_LOCK:
        if "openvino" not in _GST_STATE:
            _GST_STATE["openvino"] = _preload_openvino_cpu()  # before gi/GLib/GStreamer are loaded
        try:
            import gi

            gi.require_version("Gst", "1.0")
            from gi.repository import Gst
        except (ImportError, ValueError) as exc:
            raise SourceError(f"the gstreamer backend needs gst-python in this environment ({exc}); install "
                              "Debian's gir1.2-gstreamer-1.0 and `pip install '.[gstreamer]'`") from None
        if not Gst.is_initialized():
            Gst.init(None)
        return Gst


class GStreamerCapture:
    """A GStreamer pipeline ending in an appsink that hands over BGR frames."""

    def __init__(self, camera: CameraConfig) -> None:
        Gst = self._Gst = _gst()
        self.camera = camera
        self.last_error: str | None = None
        self.frame_count = None
        self.fps: float | None = None
        live = camera.kind != "file"
        # Live: keep one buffer and drop older ones inside GStreamer too; files: never drop.
        sink = ("appsink name=sink sync=false emit-signals=false "
                + ("max-buffers=1 drop=true" if live else "max-buffers=4 drop=false"))
        convert = "videoconvert ! video/x-raw,format=BGR"
        if camera.kind == "device":
            head = "v4l2src name=src ! decodebin"
        elif str(camera.source).startswith(("rtsp://", "rtsps://")):
            proto = "tcp" if camera.transport == "tcp" else "udp"
            head = f"rtspsrc name=src latency=0 protocols={proto} ! decodebin"
        else:
            head = "uridecodebin name=src"
        self._pipe = Gst.parse_launch(f"{head} ! {convert} ! {sink}")
        if camera.decode_threads:
            self._pipe.connect("deep-element-added", self._limit_threads)
        src = self._pipe.get_by_name("src")
        if camera.kind == "device":
            src.set_property("device", f"/dev/video{int(camera.source)}")
        elif head.startswith("rtspsrc"):
            src.set_property("location", str(camera.source))
            # TCP connect/IO timeouts in microseconds, so a dead server is noticed within our open timeout.
            src.set_property("tcp-timeout", int(camera.open_timeout_s * 1e6))
            src.set_property("timeout", int(camera.read_timeout_s * 1e6))
        else:
            uri = str(camera.source)
            src.set_property("uri", uri if "://" in uri else Gst.filename_to_uri(uri))
        self._sink = self._pipe.get_by_name("sink")
        self._bus = self._pipe.get_bus()
        self._pipe.set_state(Gst.State.PLAYING)
        self._first = self._pull(camera.open_timeout_s)
        self._held = None  # the sample `grab` took
        if self._first is not None:
            self._note_rate(self._first)
        if self._first is None:
            why = self.last_error or f"no frame within {camera.open_timeout_s:g} s"
            self.close()
            raise SourceError(f"camera {camera.id}: cannot open {redact(str(camera.source))} with the gstreamer backend: "
                              f"{why}")
        if not live:
            ok, duration = self._pipe.query_duration(Gst.Format.TIME)
            if ok and duration > 0 and self.fps:
                self.frame_count = int(round(duration / 1e9 * self.fps))

    def _limit_threads(self, _pipe, _bin, element) -> None:
        # decodebin picks the decoder once it knows the stream, so the limit is set as elements appear.
        if element.find_property("max-threads") is not None:
            element.set_property("max-threads", self.camera.decode_threads)

    def _pull(self, timeout_s: float):
        """The next sample (a decoded BGR buffer), or None with `last_error` set."""
        Gst = self._Gst
        deadline = time.monotonic() + timeout_s
        while True:
            # Short slices so that bus errors (server gone) end the wait early.
            sample = self._sink.emit("try-pull-sample", int(0.2 * Gst.SECOND))
            if sample is not None:
                return sample
            msg = self._bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
            if msg is not None:
                if msg.type == Gst.MessageType.EOS:
                    self.last_error = "end of stream"
                else:
                    err, debug = msg.parse_error()
                    self.last_error = redact(f"{err.message} ({debug})" if debug else err.message)
                return None
            if self._sink.get_property("eos"):
                self.last_error = "end of stream"
                return None
            if time.monotonic() >= deadline:
                self.last_error = f"no frame for {timeout_s:g} s (gstreamer backend)"
                return None

    def _note_rate(self, sample) -> None:
        ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
        self.fps = num / den if ok and num > 0 and den > 0 else None

    def _to_array(self, sample) -> np.ndarray:
        Gst = self._Gst
        s = sample.get_caps().get_structure(0)
        w, h = s.get_value("width"), s.get_value("height")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            raise SourceError(f"camera {self.camera.id}: cannot map a GStreamer buffer")
        try:
            stride = info.size // h  # rows may be padded to 4 bytes
            data = np.frombuffer(info.data, np.uint8, count=stride * h).reshape(h, stride)
            return data[:, : w * 3].reshape(h, w, 3).copy()
        finally:
            buf.unmap(info)

    def grab(self) -> bool:
        if self._first is not None:
            self._held, self._first = self._first, None
        else:
            self._held = self._pull(self.camera.read_timeout_s)
        return self._held is not None

    def retrieve(self) -> np.ndarray | None:
        # GStreamer has converted the frame already (videoconvert); what is saved is the copy out of its buffer.
        return self._to_array(self._held) if self._held is not None else None

    def read(self) -> np.ndarray | None:
        return self.retrieve() if self.grab() else None

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.set_state(self._Gst.State.NULL)
            self._pipe = None


def open_capture(camera: CameraConfig) -> Capture:
    if camera.backend == "gstreamer":
        return GStreamerCapture(camera)
    return OpenCVCapture(camera)


# -- reconnection policy -------------------------------------------------------------------------
class Backoff:
    """Exponential backoff with multiplicative jitter: delay n = min(initial * m^n, max) * U(1-j, 1+j)."""

    def __init__(self, initial_s: float, max_s: float, multiplier: float = 2.0, jitter: float = 0.2,
                 rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s, self.multiplier, self.jitter = initial_s, max_s, multiplier, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def bound(self, attempt: int | None = None) -> float:
        """The largest delay the given (default: next) attempt may wait."""
        n = self.attempt if attempt is None else attempt
        return min(self.initial_s * self.multiplier ** min(n, 64), self.max_s) * (1 + self.jitter)

    def next_delay(self) -> float:
        base = min(self.initial_s * self.multiplier ** min(self.attempt, 64), self.max_s)
        self.attempt += 1
        return base * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self.attempt = 0


# -- the reader ----------------------------------------------------------------------------------------
StateCallback = Callable[[str, str, "str | None"], None]


class CameraReader(threading.Thread):
    """Decodes one camera in its own thread.

    The consumer calls `poll()` (never blocks): a Frame, None when nothing new is ready, or END once the
    reader has finished (`state` is then 'ended' or 'failed', `error` says why it failed).
    """

    def __init__(self, camera: CameraConfig, max_frames: int | None = None,
                 cond: threading.Condition | None = None, on_state: StateCallback | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__(name=f"reader-{camera.id}", daemon=True)
        self.camera = camera
        self.live = camera.kind != "file"
        self.max_frames = max_frames
        self._cond = cond or threading.Condition()
        # The consumer waits on the shared condition for "a camera has a frame"; a file reader waits for room in
        # its buffer on its own condition of the same lock, so taking one camera's frame wakes that reader alone
        # (on the shared condition every waiting reader woke for every frame taken, each taking the GIL only to
        # find its buffer still full).
        self._room = threading.Condition(self._cond._lock)  # type: ignore[attr-defined]  # the shared lock
        self._on_state = on_state
        self._buffer: deque[Frame] = deque()
        self._capacity = 1 if self.live else FILE_BUFFER
        self._stop_event = threading.Event()
        self._done = False
        self._end_returned = False
        rc = camera.reconnect
        self.backoff = Backoff(rc.initial_s, rc.max_s, rc.multiplier, rc.jitter, rng)
        # Health and counters (read by metrics and tests; written only by this thread unless noted).
        self.state: str = "idle"  # until the thread starts
        self.state_since = time.monotonic()
        self.error: str | None = None
        self.frame_count: int | None = None
        self.source_fps: float = 0.0
        self.decoded = 0  # frames decoded (fps in)
        self.taken = 0  # frames handed to the pipeline (fps out), written by the consumer under the lock
        self.skipped = 0  # dropped by the processing-rate cap (`fps`)
        self.dropped_stale = 0  # live: replaced by a newer frame before the pipeline took them
        self.room_waits = 0  # files: waits for room in its buffer (ended by its frame taken or by the timeout)
        self.imageless = 0  # frames handed over without pixels (`wants_image` said nobody would look at them)
        self.reconnects = 0  # successful reconnections after a loss
        self.connect_failures = 0  # failed open attempts
        self.last_frame_mono: float | None = None
        self._in_rate: deque[float] = deque(maxlen=256)
        self._out_rate: deque[float] = deque(maxlen=256)
        # Set by the consumer before `start`: called with a frame's position among the frames taken from this
        # reader (0: the first taken), it says whether the consumer will look at that frame's pixels; frames it
        # will not are decoded but never converted (about half of a frame's cost). None: every frame's pixels.
        self.wants_image: Callable[[int], bool] | None = None

    # -- consumer side --------------------------------------------------------------------------------
    def poll(self) -> Frame | None | object:
        with self._cond:
            if self._buffer:
                frame = self._buffer.popleft()
                self.taken += 1
                self._out_rate.append(time.monotonic())
                self._room.notify()  # this file reader may be waiting for room
                return frame
            if self._done and not self._end_returned:
                self._end_returned = True
                return END
            return None

    def poll_frame(self) -> Frame | None:
        """A frame if one is waiting, else None; never the end marker, which stays for `poll` (the frame loop
        takes frames ahead of its step only while nothing but frames waits: `end_waiting`)."""
        with self._cond:
            return self.poll() if self._buffer else None

    def end_waiting(self) -> bool:
        """The reader has finished and only the end marker is left to take."""
        with self._cond:
            return self._done and not self._end_returned and not self._buffer

    def ready(self) -> bool:
        """A frame or the end marker is waiting (call with the shared condition held)."""
        return bool(self._buffer) or (self._done and not self._end_returned)

    def ready_now(self) -> bool:
        """`ready`, taking the shared lock itself."""
        with self._cond:
            return self.ready()

    @property
    def replayed(self) -> bool:
        """A file read as fast as the pipeline takes it (not paced as a live camera): its next frame is always
        coming, so a step may wait for it (PipelineRunner's lockstep)."""
        return not self.live and not self.camera.realtime

    @property
    def queue_depth(self) -> int:
        return len(self._buffer)

    def rate(self, which: Literal["in", "out"], window_s: float = 5.0) -> float:
        """Frames per second over the last `window_s` seconds."""
        times = list(self._in_rate if which == "in" else self._out_rate)
        now = time.monotonic()
        recent = [t for t in times if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def stop(self) -> None:
        self._stop_event.set()
        with self._cond:
            self._cond.notify_all()
            self._room.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread (bounded by the camera's open/read timeouts)."""
        self.stop()
        if self.is_alive():
            self.join(timeout if timeout is not None else
                      self.camera.open_timeout_s + self.camera.read_timeout_s + 5.0)
            if self.is_alive():
                log.error("camera %s: reader thread did not stop within its timeouts", self.camera.id)

    def check_stall(self, now: float | None = None) -> None:
        """Called by the consumer: a streaming camera without frames for `stall_after_s` is 'stalled'."""
        now = time.monotonic() if now is None else now
        # Files are never 'stalled': their reader waits for the pipeline, not for the source.
        if self.live and self.state == "streaming" and self.last_frame_mono is not None \
                and now - self.last_frame_mono > self.camera.stall_after_s:
            self._set_state("stalled", f"no frame for {now - self.last_frame_mono:.1f} s", only_from="streaming")

    # -- reader side ----------------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str | None = None, only_from: str | None = None) -> None:
        with self._cond:
            if (state == self.state and state != "reconnecting") or (only_from and self.state != only_from):
                return
            self.state, self.state_since = state, time.monotonic()
        detail = redact(detail) if detail else None
        log.info("camera %s: %s%s", self.camera.id, state, f" ({detail})" if detail else "")
        if self._on_state is not None:
            self._on_state(self.camera.id, state, detail)

    def _image_wanted(self) -> bool:
        """Whether the frame about to be delivered needs its pixels: asked of `wants_image` for the position it
        will be taken at. A file's frames are all taken, in order: after those in the buffer. A live camera's
        frame replaces the one waiting, which may still be taken before it: either position, so both are asked."""
        wants = self.wants_image
        if wants is None:
            return True
        with self._cond:
            if self.live:
                positions = (self.taken, self.taken + 1) if self._buffer else (self.taken,)
            else:
                positions = (self.taken + len(self._buffer),)
        return any(wants(k) for k in positions)

    def _deliver(self, frame: Frame) -> bool:
        with self._cond:
            if self.live:
                if self._buffer:
                    self._buffer.clear()  # latest-frame policy: the unconsumed older frame is stale
                    self.dropped_stale += 1
            else:
                while len(self._buffer) >= self._capacity and not self._stop_event.is_set():
                    self._room.wait(0.2)
                    self.room_waits += 1
                if self._stop_event.is_set():
                    return False
            self._buffer.append(frame)
            self._cond.notify_all()
        return True

    def _finish(self, state: str, error: str | None = None) -> None:
        self.error = redact(error) if error else None
        with self._cond:
            self.state, self.state_since = state, time.monotonic()
            self._done = True
            self._cond.notify_all()
        # The terminal event is published by the consumer when it takes END (after the last frame).
        log.log(logging.ERROR if state == "failed" else logging.INFO, "camera %s: %s%s", self.camera.id, state,
                f" ({self.error})" if self.error else "")

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a backend bug must fail this camera alone, loudly, not kill the process
            log.exception("camera %s: reader crashed", self.camera.id)
            self._finish("failed", f"camera {self.camera.id}: reader crashed: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        index = 0
        first_wall: float | None = None
        next_keep = 0.0
        lost = False  # a stream was lost and we are trying to get it back
        pace_start: float | None = None  # realtime files: monotonic time of video time 0
        step = 1.0 / self.camera.fps if self.camera.fps else 0.0
        self._set_state("connecting")
        failures = 0
        while not self._stop_event.is_set():
            try:
                cap = open_capture(self.camera)
            except SourceError as exc:
                self.connect_failures += 1
                failures += 1
                if not self.live:
                    self._finish("failed", str(exc))
                    return
                limit = self.camera.reconnect.max_attempts
                if limit is not None and failures >= limit:
                    self._finish("failed", f"{exc}; gave up after {failures} attempts")
                    return
                self._wait_backoff(str(exc))
                continue
            failures = 0
            try:
                self.source_fps = float(self.camera.source_fps or cap.fps or (0.0 if self.live else 25.0))
                self.frame_count = cap.frame_count
                streaming_since: float | None = None
                shape: tuple[int, ...] | None = None  # of this connection's frames: the first is always converted
                while not self._stop_event.is_set():
                    if self.max_frames is not None and index >= self.max_frames:
                        self._finish("ended")
                        return
                    if not cap.grab():
                        break
                    now_wall, now = time.time(), time.monotonic()
                    if first_wall is None:
                        first_wall = now_wall
                    if streaming_since is None:
                        streaming_since = now
                        if lost:
                            self.reconnects += 1
                            lost = False
                    if self.state != "streaming":
                        self._set_state("streaming")
                    if now - streaming_since >= self.camera.reconnect.reset_after_s:
                        self.backoff.reset()
                    self.last_frame_mono = now
                    self.decoded += 1
                    self._in_rate.append(now)
                    # Files: time from the frame rate (reproducible); live: wall clock since the first frame.
                    video_time = index / self.source_fps if not self.live else now_wall - first_wall
                    index += 1
                    if video_time + 1e-9 < next_keep:
                        self.skipped += 1
                        continue
                    # Keep the average at `fps` (a 5 fps stream capped at 3 keeps 3, not every other frame);
                    # live: after a gap (reconnect) start afresh rather than catch up with a burst.
                    next_keep = max(next_keep + step, video_time) if self.live else next_keep + step
                    if self.camera.realtime and not self.live:
                        # a file played as a live camera: frame k is due k / fps seconds after the first
                        if pace_start is None:
                            pace_start = now - video_time
                        if self._stop_event.wait(max(0.0, pace_start + video_time - time.monotonic())):
                            break
                    image = None
                    if shape is None or self._image_wanted():
                        if (image := cap.retrieve()) is None:
                            break
                        shape = image.shape
                    else:
                        self.imageless += 1
                    if not self._deliver(Frame(self.camera.id, index - 1, video_time, now_wall, image, shape)):
                        break
                reason = cap.last_error
            finally:
                cap.close()
            if self._stop_event.is_set():
                break
            if not self.live:
                if index == 0:
                    self._finish("failed", f"camera {self.camera.id}: no frame could be decoded from "
                                           f"{redact(str(self.camera.source))}")
                else:
                    self._finish("ended")
                return
            lost = True
            self._wait_backoff(f"stream lost: {reason or 'no frame'}")
        self._finish("ended")

    def _wait_backoff(self, why: str) -> None:
        delay = self.backoff.next_delay()
        self._set_state("reconnecting", f"{why}; retry in {delay:.2f} s")
        self._stop_event.wait(delay)


FrameReader = CameraReader  # the spine's name


# -- the camera set -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateChange:
    camera_id: str
    state: str
    detail: str | None
    wall_time: float


class CameraSet:
    """Readers sharing one condition, so the consumer can wait for 'any camera has something'."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._changes: deque[StateChange] = deque(maxlen=10_000)
        self.readers: dict[str, CameraReader] = {}

    def reader(self, camera: CameraConfig, max_frames: int | None = None) -> CameraReader:
        r = CameraReader(camera, max_frames, cond=self.cond, on_state=self._record)
        self.readers[camera.id] = r
        return r

    def discard(self, camera_id: str) -> None:
        self.readers.pop(camera_id, None)

    def _record(self, camera_id: str, state: str, detail: str | None) -> None:
        with self.cond:
            self._changes.append(StateChange(camera_id, state, detail, time.time()))
            self.cond.notify_all()

    def state_changes(self) -> list[StateChange]:
        """Non-terminal state changes since the last call (terminal ones come with END from `poll`)."""
        with self.cond:
            out = list(self._changes)
            self._changes.clear()
        return out

    def changes_waiting(self) -> bool:
        """State changes wait for `state_changes` (the frame loop publishes them before it takes frames)."""
        with self.cond:
            return bool(self._changes)

    def wait(self, readers: list[CameraReader], timeout: float) -> None:
        """Block until one of `readers` has a frame or its end, a state changed, or `timeout` passed."""
        with self.cond:
            self.cond.wait_for(lambda: bool(self._changes) or any(r.ready() for r in readers), timeout)
        now = time.monotonic()
        for r in readers:
            r.check_stall(now)


def camera_changes(current: dict[str, CameraConfig], wanted: list[CameraConfig]) -> tuple[list[CameraConfig], list[str]]:
    """What a config reload must do: (cameras to start, camera ids to stop). A camera whose settings
    changed is stopped and started again; unchanged cameras are left alone."""
    wanted_by_id = {c.id: c for c in wanted}
    removed = [cid for cid, cam in current.items() if wanted_by_id.get(cid) != cam]
    added = [cam for cam in wanted if current.get(cam.id) != cam]
    return added, removed
