"""The run loop: sources -> batched detection -> per-camera tracking -> gated crops -> batched
embedding -> cross-camera matching -> identity store and event stream (+ annotated video, MOT files)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from detectors import create_detector
from pipeline.annotate import VideoOut, draw_tracks, write_mot_rows
from pipeline.config import CameraConfig, ConfigError, PipelineConfig, load_config
from pipeline.events import IdentityEvent, iso_utc
from pipeline.appearance import outfit_descriptors
from pipeline.identity_stage import MatchStage
from pipeline.matcher import matcher_from_config
from pipeline.models import resolve_model
from pipeline.metrics import PipelineMetrics
from pipeline.sources import END, CameraSet, Frame, FrameReader, camera_changes
from pipeline.redact import redact_url
from pipeline.store import IdentityStore, StoreLink, StoreUnavailable, open_redis, runtime_client_options
from pipeline.tracklets import CameraTracklets, CropGate, Tracklet
from reid.inference.factory import create_embedder
from trackers import create_tracker

log = logging.getLogger("pipeline")
STAGES = ("detect", "track", "embed", "match", "output")


@dataclass
class CameraRun:
    camera_id: str
    reader: FrameReader
    tracker: object
    tracklets: CameraTracklets
    mot: TextIO | None = None
    video: VideoOut | None = None
    frames: int = 0
    tracks_seen: set = field(default_factory=set)
    status: str = "running"
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    frame_size: tuple[int, int] | None = None  # (width, height) the tracker's coordinates refer to
    tracker_restarts: int = 0


@dataclass
class RunSummary:
    cameras: list[dict]
    stage_ms_per_frame: dict[str, float]
    frames: int
    wall_s: float
    identities: int
    events: int
    crops: int
    output_dir: Path
    stopped_early: bool
    undelivered: int = 0  # events the store never took (written to undelivered_file)
    undelivered_file: Path | None = None
    store_outages: int = 0

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cameras if c["status"] == "failed"]


class PipelineRunner:
    def __init__(self, config: PipelineConfig, output_dir: Path, max_frames: int | None = None,
                 mot_dir: Path | None = None, progress: bool = True, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # re-read on SIGHUP / reload(): the camera set follows it
        self.sources = CameraSet()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()  # camera add/remove/reload, applied by the loop
        self.metrics = PipelineMetrics(lambda: list(self.sources.readers.values()), lambda: self.link)
        self.metrics_port: int | None = None
        self.output_dir = Path(output_dir)
        self.max_frames = max_frames
        self.mot_dir = Path(mot_dir) if mot_dir else None
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self.stage_s: dict[str, float] = defaultdict(float)
        self.events_published = 0
        self.link: StoreLink | None = None
        self._ended_backlog: list[Tracklet] = []  # ended while the store was down; decided when it is back
        self.undelivered = 0
        self.undelivered_file: Path | None = None
        self.crops_embedded = 0

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    # -- cameras while running (thread- and signal-safe: applied by the loop between steps) -------------
    def reload(self, *_: object) -> None:
        """Re-read `config_path` and add/remove/restart the cameras that changed (SIGHUP)."""
        self._commands.put(("reload", None))

    def add_camera(self, camera: CameraConfig) -> None:
        self._commands.put(("add", camera))

    def remove_camera(self, camera_id: str) -> None:
        self._commands.put(("remove", camera_id))

    # -- set-up -----------------------------------------------------------------------------------
    def _build_models(self):
        det = self.config.detector
        detector = create_detector(det.backend, resolve_model(det.model), input_size=det.input_size,
                                   confidence=det.confidence, nms_iou=det.nms_iou, classes=det.classes)
        embedder = create_embedder(resolve_model(self.config.reid.model), self.config.reid.backend,
                                   threads=self.config.reid.threads)
        return detector, embedder

    def _camera(self, cam) -> CameraRun:
        tracker = create_tracker(self.config.tracker.type, self.config.tracker.params)
        r = self.config.reid
        gate = CropGate(r.min_height, r.min_width, r.min_confidence, r.crops_per_second, r.edge_margin)
        run = CameraRun(cam.id, self.sources.reader(cam, self.max_frames), tracker,
                        CameraTracklets(cam.id, self.run_id, gate, tracker.max_lost_frames))
        if self.mot_dir:
            self.mot_dir.mkdir(parents=True, exist_ok=True)
            run.mot = open(self.mot_dir / f"{cam.id}.txt", "w")
        return run

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        detector, embedder = self._build_models()
        cams = [self._camera(c) for c in self.config.cameras]
        t0 = time.monotonic()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)} if threading.current_thread() is threading.main_thread() else {}
        for s in previous:
            signal.signal(s, self.request_stop if s == signal.SIGTERM else self.reload)
        if self.config.metrics.port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics.host, self.config.metrics.port)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.metrics_port)
        with open_redis(self.config.store, self.output_dir / "store", **runtime_client_options()) as client:
            m = self.config.matcher
            store = IdentityStore(client, self.config.key_prefix, self.config.events.stream, self.config.events.maxlen,
                                  gallery_log_maxlen=m.gallery_log_maxlen, retention_s=m.retention_s or 0)
            self.link = StoreLink(store, redact_url(self.config.store), max_buffered=self.config.events.maxlen)
            matcher = MatchStage(matcher_from_config(store, m), m.min_crops,
                                 lambda: [c.tracklets for c in cams])  # cameras may be added while running
            for c in cams:
                c.reader.start()
            progress = _Progress(cams, enabled=self.progress)
            try:
                self._loop(cams, detector, embedder, store, matcher, progress)
            except KeyboardInterrupt:
                log.warning("interrupted: draining and flushing")
                self._stop.set()
            finally:
                progress.close()
                for c in cams:
                    c.reader.stop()  # all at once, then wait for each (bounded by its timeouts)
                for c in cams:
                    if c.status == "running":
                        self._end_camera(c, store, matcher, "ended", None, "pipeline stopped")
                    c.reader.close()
                    self._finish_camera(c, store, matcher, everything=True)
                self._drain_store(matcher)
                self.metrics.close()
                for s, h in previous.items():
                    signal.signal(s, h)
            try:
                identities = len(self.link.call(store.identities, include_merged=False))
            except StoreUnavailable:
                identities = None
        wall = time.monotonic() - t0
        total_frames = sum(c.frames for c in cams)
        return RunSummary(
            cameras=[{"camera": c.camera_id, "status": c.status, "error": c.error, "frames": c.frames,
                      "fps": c.frames / max((c.finished or time.monotonic()) - c.started, 1e-9),
                      "tracks": len(c.tracks_seen)} for c in cams],
            stage_ms_per_frame={s: 1000 * self.stage_s[s] / max(total_frames, 1) for s in STAGES},
            frames=total_frames, wall_s=wall, identities=identities, events=self.events_published,
            crops=self.crops_embedded, output_dir=self.output_dir, stopped_early=self._stop.is_set(),
            undelivered=self.undelivered, undelivered_file=self.undelivered_file, store_outages=self.link.outages,
        )

    def _publish(self, store: IdentityStore, events: list[IdentityEvent]) -> None:
        """Events go through the store link: published now, or buffered while the store is down."""
        self.events_published += self.link.publish(events)

    def _store_step(self, matcher: MatchStage, events: list[IdentityEvent]) -> None:
        """Decisions that need the store: first the tracklets whose end a store outage interrupted, then
        this step's. While the store is down they wait (tracklets keep collecting crops meanwhile)."""
        try:
            while self._ended_backlog:
                self.link.call(matcher.end, self._ended_backlog[0], out=events)
                self._ended_backlog.pop(0)
            self.link.call(matcher.step, out=events)
        except StoreUnavailable:
            # Not swallowed: StoreLink logged the outage and counts it in the metrics; the decisions wait.
            return

    def _drain_store(self, matcher: MatchStage) -> None:
        """At the end of a run: give an unreachable store `events.drain_timeout_s` to come back; what still
        cannot be delivered is written to `undelivered_events.jsonl` under the output dir, never dropped."""
        deadline = time.monotonic() + self.config.events.drain_timeout_s
        while True:
            events: list[IdentityEvent] = []
            self._store_step(matcher, events)
            self._publish(None, events)
            if (not self._ended_backlog and not self.link.outbox) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        pending = list(self.link.outbox)
        for tl in self._ended_backlog:  # never decided: the store was down from their end to ours
            pending.append(IdentityEvent("track.ended", tl.camera_id, tl.track_id, tl.tracklet_id, tl.identity_id,
                                         tl.similarity, _bbox(tl.last_bbox), tl.last_frame, tl.outfit_id,
                                         outfit_changed=tl.outfit_changed, detail="store unreachable: not decided"))
        if pending or self.link.dropped:
            self.undelivered = len(pending) + self.link.dropped
            self.undelivered_file = self.output_dir / "undelivered_events.jsonl"
            with open(self.undelivered_file, "a") as f:
                for ev in pending:
                    f.write(ev.to_json() + "\n")
            log.error("store at %s unreachable at the end of the run: %d events written to %s%s", self.link.where,
                      len(pending), self.undelivered_file,
                      f" ({self.link.dropped} older ones dropped beyond events.maxlen)" if self.link.dropped else "")

    def _next_frames(self, cams: list[CameraRun], store: IdentityStore, matcher) -> list[tuple[CameraRun, Frame]]:
        """The frames ready now (at most one per camera; live cameras: their newest). Waits until some
        camera has one, never for a particular camera, so a stalled or dead camera slows no other.
        Returns [] when no camera is running any more or a stop was requested."""
        while not self._stop.is_set():
            self._apply_camera_changes(cams, store, matcher)
            running = [c for c in cams if c.status == "running"]
            if not running:
                return []
            self.sources.wait([c.reader for c in running], timeout=0.2)
            self._publish(store, [IdentityEvent("camera.state", ch.camera_id, state=ch.state, detail=ch.detail,
                                                ts=iso_utc(ch.wall_time)) for ch in self.sources.state_changes()])
            batch = []
            for c in running:
                item = c.reader.poll()
                if item is END:
                    self._end_camera(c, store, matcher, c.reader.state, c.reader.error)
                elif item is not None:
                    batch.append((c, item))
            if batch:
                return batch
        return []

    def _end_camera(self, c: CameraRun, store: IdentityStore, matcher, status: str, error: str | None,
                    detail: str | None = None) -> None:
        c.error = c.error or error
        c.status = "failed" if c.error else status
        c.finished = time.monotonic()
        if c.error:
            log.error("%s", c.error)
        self._publish(store, [IdentityEvent("camera.state", c.camera_id, state="failed" if c.error else "ended",
                                            detail=c.error or detail)])
        self._finish_camera(c, store, matcher, everything=True)

    def _apply_camera_changes(self, cams: list[CameraRun], store: IdentityStore, matcher) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            current = {c.camera_id: c for c in cams if c.status != "removed"}
            if kind == "reload":
                if self.config_path is None:
                    log.warning("reload requested but the runner has no config file; cameras unchanged")
                    continue
                try:
                    new = load_config(self.config_path)
                except ConfigError as exc:
                    log.error("config reload refused, cameras unchanged: %s", exc)
                    continue
                added, removed = camera_changes({k: c.reader.camera for k, c in current.items()}, new.cameras)
                self.config = self.config.model_copy(update={"cameras": new.cameras})
            elif kind == "add":
                added, removed = [arg], ([arg.id] if arg.id in current else [])
            else:
                added, removed = [], [arg]
            for cid in removed:
                if cid in current:
                    c = current[cid]
                    c.reader.stop()  # joined at the end of the run: never wait here while others stream
                    if c.status == "running":
                        self._end_camera(c, store, matcher, "ended", None, "removed from the configuration")
                    c.status = "removed"
                    self.sources.discard(cid)
                    log.info("camera %s removed", cid)
            for cam in added:
                run = self._camera(cam)
                cams.append(run)
                run.reader.start()
                log.info("camera %s added", cam.id)

    def _loop(self, cams, detector, embedder, store, matcher, progress) -> None:
        while not self._stop.is_set():
            batch = self._next_frames(cams, store, matcher)
            if not batch:
                return
            step_started, stage_before = time.time(), dict(self.stage_s)
            t = time.perf_counter()
            detections = detector.detect([f.image for _, f in batch])
            self.stage_s["detect"] += time.perf_counter() - t

            events: list[IdentityEvent] = []
            crop_requests, crop_images = [], []
            per_camera_tracks = []
            t = time.perf_counter()
            for (c, frame), dets in zip(batch, detections):
                size = (frame.image.shape[1], frame.image.shape[0])
                if c.frame_size is not None and size != c.frame_size:
                    self._restart_tracking(c, matcher, events, size)
                c.frame_size = size
                c.frames += 1
                tracks = c.tracker.update(dets, frame.image)
                started, requests = c.tracklets.update(c.frames, frame.index, frame.video_time, tracks,
                                                       frame.image.shape)
                c.tracks_seen.update(int(t_) for t_ in tracks.track_id)
                for tl in started:
                    events.append(IdentityEvent("track.started", c.camera_id, tl.track_id, tl.tracklet_id,
                                                bbox=_bbox(tl.last_bbox), frame_index=frame.index))
                for req in requests:
                    x1, y1, x2, y2 = req.bbox
                    crop_requests.append(req)
                    crop_images.append(frame.image[y1:y2, x1:x2])
                per_camera_tracks.append((c, frame, tracks))
            self.stage_s["track"] += time.perf_counter() - t

            t = time.perf_counter()
            if crop_images:
                emb = embedder.embed(crop_images)
                # the model's clothes-sensitive output when it has one, else the colour/texture descriptor
                looks = emb.appearance if emb.appearance is not None else outfit_descriptors(crop_images)
                for req, vec, look in zip(crop_requests, emb.identity, looks):
                    req.tracklet.add_embedding(vec, req.weight, look)
                self.crops_embedded += len(crop_images)
            self.stage_s["embed"] += time.perf_counter() - t

            t = time.perf_counter()
            self._store_step(matcher, events)
            expired = [(c, tl) for c, _, _ in per_camera_tracks for tl in c.tracklets.expire(c.frames)]
            matcher.ending.extend(tl for _, tl in expired)  # evidence for each other's end decisions
            for c, tl in expired:
                self._end_tracklet(c, tl, matcher, events)
            self._publish(store, events)
            published_at = time.time()
            self.stage_s["match"] += time.perf_counter() - t

            t = time.perf_counter()
            for c, frame, tracks in per_camera_tracks:
                if c.mot is not None:
                    write_mot_rows(c.mot, frame.index, tracks)
                if self.config.output.video:
                    if c.video is None:
                        c.video = VideoOut(self.output_dir / f"{c.camera_id}.mp4",
                                           c.reader.camera.fps or c.reader.source_fps or 25.0)
                    ids = {tid: tl.identity_id for tid, tl in c.tracklets.live.items()}
                    c.video.write(draw_tracks(frame.image, tracks, ids, c.camera_id, frame.index))
            self.stage_s["output"] += time.perf_counter() - t
            self.metrics.observe_batch(batch, {s: self.stage_s[s] - stage_before.get(s, 0.0) for s in STAGES},
                                       events, published_at, step_started)
            progress.update(batch)

    def _restart_tracking(self, c: CameraRun, matcher: MatchStage, events: list[IdentityEvent],
                          size: tuple[int, int]) -> None:
        """The source came back at another resolution (a reconnect to another stream profile): boxes of the
        old size mean nothing in the new frames, so the camera's tracks end and its tracker starts afresh."""
        log.warning("camera %s: frame size changed from %dx%d to %dx%d (new stream profile after a reconnect?): "
                    "its tracks end and its tracker restarts", c.camera_id, *c.frame_size, *size)
        expired = c.tracklets.expire(c.frames, everything=True)
        matcher.ending.extend(expired)
        for tl in expired:
            self._end_tracklet(c, tl, matcher, events)
        c.tracker_restarts += 1
        c.tracker = create_tracker(self.config.tracker.type, self.config.tracker.params)
        old = c.tracklets
        # A new tracker may count its track ids from 1 again: a new run-id suffix keeps tracklet ids unique.
        c.tracklets = CameraTracklets(old.camera_id, f"{self.run_id}-{c.tracker_restarts}", old.gate,
                                      c.tracker.max_lost_frames)

    def _end_tracklet(self, c: CameraRun, tl: Tracklet, matcher: MatchStage, events: list[IdentityEvent]) -> None:
        """Final decision and track.ended; deferred (in order) while the store is unreachable."""
        if self._ended_backlog:
            self._ended_backlog.append(tl)
            return
        try:
            self.link.call(matcher.end, tl, out=events)
        except StoreUnavailable:
            self._ended_backlog.append(tl)

    def _finish_camera(self, c: CameraRun, store: IdentityStore, matcher, everything: bool) -> None:
        events = []
        expired = c.tracklets.expire(c.frames, everything=everything)
        matcher.ending.extend(expired)
        for tl in expired:
            self._end_tracklet(c, tl, matcher, events)
        self._publish(store, events)
        if c.mot is not None:
            c.mot.close()
            c.mot = None
        if c.video is not None:
            c.video.close()
            c.video = None


def _bbox(b: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in b]


class _Progress:
    """A rich progress bar per camera (plain log lines when not on a terminal)."""

    def __init__(self, cams: list[CameraRun], enabled: bool, log_every_s: float = 15.0) -> None:
        self.enabled = enabled
        self._bar = None
        self._log_every = log_every_s
        self._last_log = time.monotonic()
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), transient=False)
        self._tasks = {}
        for c in cams:
            self._tasks[c.camera_id] = self._bar.add_task(c.camera_id, total=None)
        self._bar.start()

    def update(self, batch) -> None:
        if self._bar is None:
            if time.monotonic() - self._last_log >= self._log_every:
                self._last_log = time.monotonic()
                log.info("progress: %s", ", ".join(
                    f"{c.camera_id} {f.index + 1}/{c.reader.frame_count or '?'}" for c, f in batch))
            return
        for c, frame in batch:
            if c.camera_id not in self._tasks:  # added while running
                self._tasks[c.camera_id] = self._bar.add_task(c.camera_id, total=None)
            total = c.reader.frame_count
            if self.enabled and c.reader.max_frames:
                total = min(total or c.reader.max_frames, c.reader.max_frames)
            self._bar.update(self._tasks[c.camera_id], completed=frame.index + 1, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
