"""The run loop: sources -> batched detection -> per-camera tracking -> gated crops -> batched
embedding -> cross-camera matching -> identity store and event stream (+ annotated video, MOT files)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from pipeline.annotate import VideoOut, draw_tracks, write_mot_rows
from pipeline.dashboard.snapshots import LiveFrames, SnapshotKeeper
from pipeline.clock import RunClock, use_video_clock
from pipeline.config import CameraConfig, ConfigError, PipelineConfig, load_config, writes_video
from pipeline.events import IdentityEvent, iso_utc
from reid.inference.outfit import outfit_descriptors
from pipeline.identity_stage import MatchStage
from pipeline.embedded import open_store_client
from pipeline.matcher import matcher_from_config, thresholds_from_model
from pipeline.metrics import PipelineMetrics
from pipeline.motion import MotionGate
from pipeline.models import resolve_model
from detectors.base import frame_threads, queued
from pipeline.perception import detector_from_config, tracker_from_config
from pipeline.outage import StoreFailure, StoreLink, StoreUnavailable, runtime_client_options
from pipeline.redact import redact
from pipeline.sources import END, CameraSet, Frame, FrameReader, camera_changes
from pipeline.store import IdentityStore
from pipeline.store_worker import StoreWorker
from pipeline.tracklets import CameraTracklets, CropGate, CropRequest, SwapCheck, swap_threshold_for
from reid.inference.centring import CameraFeatureMeans, feature_space
from reid.inference.factory import create_embedder
from reid.inference.levelling import PERSON_REGION, CameraLevels, reference_of, region_of

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
    tracks_split: int = 0  # tracks ended at an identity swap and continued under a new id (reid.swap_threshold)
    detect_phase: int = 0  # with detector.every n: the frames k with (k + detect_phase) % n == 0 are detected
    scheduled: int = 0  # frames taken into a step so far (`frames` counts the steps finished)
    missed_detections: int = 0  # frames due for detection that came without pixels (never, unless a bug)
    writes_video: bool = False  # an annotated video (output.video)
    motion: MotionGate | None = None  # detector.motion_gate: due frames skipped while nothing changes
    detected: int = 0  # frames the detector looked at


@dataclass
class _Step:
    """One step of the frame loop: at most one frame per camera, and the detection of those it detects."""
    batch: list[tuple[CameraRun, Frame]]
    due: list[int]  # positions in `batch` of the frames detected (detector.every)
    started: float  # wall time its frames were taken
    found: list | None = None  # Detections of the `due` frames, once in
    handle: object = None  # the detector's handle while they are queued (detector.ahead)
    detect_s: float = 0.0  # the frame loop's time on their detection


@dataclass
class PendingCrops:
    """Crops waiting for one call of the ReID model, in the order they were taken, with what goes with them."""
    requests: list[CropRequest] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # views into their frames (readers never reuse arrays)
    where: list[tuple[str, float]] = field(default_factory=list)  # (camera id, video time)
    # colour levelling's person-pixel mean of each crop where levelling learns each camera's background (None
    # while a camera's background is not yet known; unused otherwise)
    person_means: list = field(default_factory=list)
    first_step: int = 0  # the loop step of the oldest waiting crop

    def add(self, request: CropRequest, image: np.ndarray, camera_id: str, video_time: float, person_mean,
            step: int) -> None:
        if not self.requests:
            self.first_step = step
        self.requests.append(request)
        self.images.append(image)
        self.where.append((camera_id, video_time))
        self.person_means.append(person_mean)

    def take(self) -> tuple[list[CropRequest], list[np.ndarray], list[tuple[str, float]], list]:
        """All waiting crops; the holder is left empty."""
        out = self.requests, self.images, self.where, self.person_means
        self.requests, self.images, self.where, self.person_means = [], [], [], []
        return out

    def __len__(self) -> int:
        return len(self.requests)


# A batch this large already spreads the model's per-call cost thin: embed it without waiting longer.
EMBED_FLUSH_CROPS = 32
# A replayed file behind the others holds a step this long at most (a file on a stalled disk slows the rest by this
# much a step, never stops them).
LOCKSTEP_WAIT_S = 2.0


@dataclass
class RunSummary:
    cameras: list[dict]
    stage_ms_per_frame: dict[str, float]
    frames: int
    wall_s: float
    identities: int
    events: int
    crops: int  # crops embedded
    output_dir: Path
    stopped_early: bool
    undelivered: int = 0  # events the store never took (written to undelivered_file)
    undelivered_file: Path | None = None
    store_outages: int = 0
    store_resets: int = 0  # times the store came back without its data (store.reset events)
    crops_check: int = 0  # of `crops`, those taken only for the swap check (reid.swap_check_per_second)

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cameras if c["status"] == "failed"]


class PipelineRunner:
    def __init__(self, config: PipelineConfig, output_dir: Path, max_frames: int | None = None,
                 mot_dir: Path | None = None, progress: bool = True, config_path: Path | None = None) -> None:
        self.config = config
        self._cameras_made = 0  # cameras made so far: each takes the next detection phase of the stride
        self.config_path = config_path  # re-read on SIGHUP / reload(): the camera set follows it
        self.sources = CameraSet()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()  # camera add/remove/reload, applied by the loop
        self.metrics = PipelineMetrics(lambda: list(self.sources.readers.values()), lambda: self.link,
                                       lambda: {c.camera_id: c.motion.skipped for c in self._cams
                                                if c.motion is not None})
        self.metrics_port: int | None = None
        self.output_dir = Path(output_dir)
        self.max_frames = max_frames
        self.mot_dir = Path(mot_dir) if mot_dir else None
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self.stage_s: dict[str, float] = defaultdict(float)
        self.link: StoreLink | None = None
        self.worker: StoreWorker | None = None
        self.stage: MatchStage | None = None
        self.outfit_embedder = None  # reid.outfit_model, built with the other models
        self.levels: CameraLevels | None = None  # per-camera colour levelling, when the model asks for it
        self.centring: CameraFeatureMeans | None = None  # per-camera feature centring (reid.centring: camera)
        self.feature_space = ""  # the model (and embedding) the centring means belong to
        self.reid_threads = config.reid.threads  # with 0, set from the detector in _build_models
        self.swap_check: SwapCheck | None = None  # built in run(): its level may be the model file's own
        self.clock = RunClock(video=False)  # replaced in run() by the one matcher.clock asks for
        self.undelivered = 0
        self.undelivered_file: Path | None = None
        self.crops_embedded = 0
        self.embedder = None  # the ReID model, built in run()
        self._pending = PendingCrops()  # crops waiting for the ReID model (reid.embed_wait_steps)
        self._steps = 0  # steps of the frame loop so far
        self.steps_ahead = 0  # steps whose detection was queued while the step before was finished (detector.ahead)
        self.crops_check = 0
        # (camera, frame index) -> capture wall time of recent frames, for the capture-to-event latency of
        # events the store worker publishes later (bounded: only recent frames can still be decided on)
        self._captured: OrderedDict[tuple[str, int], tuple[float, float]] = OrderedDict()  # -> (wall, video time)
        self._captured_lock = threading.Lock()
        self._cams: list[CameraRun] = []  # the cameras of the run (the dashboard reads them)
        self.live_frames: LiveFrames | None = None  # latest annotated JPEG per camera (dashboard on)
        self.snapshots: SnapshotKeeper | None = None  # best crop per identity outfit, to the store
        self.dashboard = None  # pipeline.dashboard.server.DashboardServer while serving
        self.dashboard_port: int | None = None

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def _interrupt(self, *_: object) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        log.warning("interrupted: finishing the frame step, then draining and flushing")
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
        """Detector and embedder; a model file that cannot be loaded is a configuration error (exit 2)."""
        det = self.config.detector
        try:
            detector = detector_from_config(det)
        except Exception as exc:
            raise ConfigError(self.config_path or "<config>", "detector.model", _why(exc)) from exc
        self.reid_threads = reid_threads(self.config.reid.threads, detector)
        embedder = self._embedder("model")
        self.outfit_embedder = self._embedder("outfit_model") if self.config.reid.outfit_model is not None else None
        self.levels = self._levels(embedder)
        self.centring = None
        if self.config.reid.centring == "camera":
            self.centring = CameraFeatureMeans(self.config.reid.centring_prior)
            # the store keeps each camera's mean for this model (embedded this way) only
            self.feature_space = feature_space(resolve_model(self.config.reid.model), self.config.reid.flip_sum)
        return detector, embedder

    def _levels(self, embedder) -> CameraLevels | None:
        """Per-camera colour levelling when the ReID model was trained on levelled cameras (and it is not off)."""
        reid = self.config.reid
        try:
            reference = reference_of(getattr(embedder, "spec", None))
            region = region_of(getattr(embedder, "spec", None))
        except ValueError as exc:
            raise ConfigError(self.config_path or "<config>", "reid.model", str(exc)) from exc
        if reference is None:
            return None
        if not reid.colour_levelling:
            log.warning("reid.colour_levelling is off, but %s was trained on colour-levelled cameras: its crops "
                        "will not look like its training crops", reid.model)
            return None
        log.info("colour levelling: each camera's crops to the model's reference BGR %s, cameras' means over %s",
                 [round(v, 1) for v in reference],
                 "person pixels (against each camera's background)" if region == PERSON_REGION else "the boxes' centres")
        fixed = {c.id: c.colour_gains for c in self.config.cameras if c.colour_gains is not None}
        if fixed:
            log.info("colour levelling: measured gains for camera(s) %s", ", ".join(sorted(fixed)))
        return CameraLevels(reference, reid.colour_levelling_prior, fixed, reid.colour_levelling_horizon, region)

    def _camera_stats(self, store: IdentityStore) -> list[tuple[str, object, object, object, str]]:
        """(what, running statistics, store reader, store writer, tag) of each per-camera statistic this run keeps
        across runs: colour levelling's mean colour (per region), feature centring's mean feature (per model)."""
        out = []
        if self.levels is not None:
            out.append(("colour levelling", self.levels, store.camera_colour, store.save_camera_colour,
                        self.levels.region))
        if self.centring is not None:
            out.append(("feature centring", self.centring, store.camera_features, store.save_camera_features,
                        self.feature_space))
        return out

    def _restore_camera_stats(self, store: IdentityStore) -> None:
        """Continue each camera's running means from earlier runs on this store (an outage: start afresh)."""
        for what, stats, read, _, tag in self._camera_stats(store):
            try:
                saved = self.link.call(read, tag)
            except (StoreUnavailable, StoreFailure) as exc:
                log.warning("%s: earlier runs' camera statistics unavailable (%s); cameras start afresh", what, exc)
                continue
            stats.restore(saved)
            for cam_id, (_, n) in sorted(saved.items()):
                log.info("%s: camera %s continues from %d crops of earlier runs", what, cam_id, n)

    def _save_camera_stats(self, store: IdentityStore) -> None:
        """What each camera's crops said (colour, mean feature), for the next run."""
        for what, stats, _, write, tag in self._camera_stats(store):
            try:
                self.link.call(write, stats.state(), tag)
            except (StoreUnavailable, StoreFailure) as exc:
                log.warning("%s: cameras' statistics not saved (%s); the next run starts them afresh", what, exc)

    def _embedder(self, key: str):
        """The embedder of the model file named by `reid.<key>`; one that cannot be loaded is a ConfigError."""
        reid = self.config.reid
        try:
            return create_embedder(resolve_model(getattr(reid, key)), reid.backend, threads=self.reid_threads,
                                   spin_wait=reid.spin_wait, flip_sum=reid.flip_sum and key == "model",
                                   fixed_batches=reid.fixed_batches)
        except Exception as exc:
            raise ConfigError(self.config_path or "<config>", f"reid.{key}", _why(exc)) from exc

    def _tracker(self):
        try:
            return tracker_from_config(self.config.tracker)
        except Exception as exc:
            raise ConfigError(self.config_path or "<config>", "tracker.params", _why(exc)) from exc

    def _camera(self, cam) -> CameraRun:
        tracker = self._tracker()
        r = self.config.reid
        gate = CropGate(r.min_height, r.min_width, r.min_confidence, r.crops_per_second, r.edge_margin,
                        r.max_crops_per_track, r.small_min_height,
                        r.swap_check_per_second if r.swap_threshold is not None else 0.0, r.swap_check_while_near)
        run = CameraRun(cam.id, self.sources.reader(cam, self.max_frames), tracker,
                        CameraTracklets(cam.id, self.run_id, gate, tracker.max_lost_frames))
        every, motion = self.config.detector.every, self.config.detector.motion_gate
        if motion.enabled:
            run.motion = MotionGate(motion.level, motion.area, motion.max_skip_s)
        if self.config.detector.stagger:
            run.detect_phase = self._cameras_made % every
        self._cameras_made += 1
        run.writes_video = writes_video(self.config.output, cam)
        if run.writes_video and cam.kind != "file":
            log.warning("camera %s: output.video true writes this live camera's annotated video as one MP4 for the "
                        "whole run, growing until the run ends and readable only then (output.video: auto writes "
                        "it for file cameras only)", cam.id)
        if every > 1 and not run.writes_video:
            # Only the frames detected are looked at (a guessed box gives no crop; the dashboard draws the next
            # frame with pixels): the others are decoded and never converted. Positions among the frames taken
            # are what `scheduled` counts in _start_step.
            phase = run.detect_phase
            run.reader.wants_image = lambda position: detected(position, phase, every)
        if self.mot_dir:
            self.mot_dir.mkdir(parents=True, exist_ok=True)
            run.mot = open(self.mot_dir / f"{cam.id}.txt", "w")
        return run

    def _serve_metrics(self) -> None:
        m = self.config.metrics
        if m.port is None:
            return
        try:
            self.metrics_port = self.metrics.serve(m.host, m.port)
        except OSError as exc:
            raise ConfigError(self.config_path or "<config>", "metrics.port",
                              f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror or exc}") from exc
        log.info("metrics on http://%s:%d/metrics", m.host, self.metrics_port)

    def _serve_dashboard(self, client) -> None:
        """The web dashboard in its own thread; a failure to serve it is logged (one line) and the run goes on."""
        d = self.config.dashboard
        if d.port is None:
            return
        try:
            from pipeline.dashboard.app import create_app
            from pipeline.dashboard.data import StoreView
            from pipeline.dashboard.server import DashboardServer

            self.live_frames = LiveFrames(d.frame_fps, d.frame_width)
            stopping = threading.Event()
            app = create_app(StoreView(client, self.config.key_prefix, self.config.events.stream),
                             _LiveCameras(self), read_only=False, stopping=stopping)
            server = DashboardServer(app, d.host, d.port, stopping)
            self.dashboard_port = server.start()
            self.dashboard = server
        except Exception as exc:  # port taken, bad host, a missing package: the run goes on without it
            self.live_frames = None
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            log.error("dashboard not served on %s:%s: %s (dashboard.port in the config); the run goes on without it",
                      d.host, d.port, redact(str(why)))
            return
        log.info("dashboard on %s", self.dashboard.url)

    def _stop_dashboard(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        if self.snapshots is not None:
            self.snapshots.close()
            self.snapshots = None

    def _stamp_video_time(self, events: list[IdentityEvent]) -> None:
        """Fill `video_time_s` (the event's frame's position in its source) on events that name a frame."""
        fps = {c.camera_id: c.reader.source_fps for c in self._cams if not c.reader.live}
        for ev in events:
            if ev.video_time_s is not None or ev.frame_index is None or ev.camera_id is None:
                continue
            rate = fps.get(ev.camera_id)
            if rate:
                ev.video_time_s = round(ev.frame_index / rate, 3)
                continue
            with self._captured_lock:
                seen = self._captured.get((ev.camera_id, ev.frame_index))
            if seen is not None:
                ev.video_time_s = round(seen[1], 3)

    def _on_published(self, events: list[IdentityEvent], published_at: float) -> None:
        self._observe_published(events, published_at)
        if self.snapshots is not None:
            self.snapshots.on_events(events)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        # Signals first: a SIGHUP (reload) or SIGTERM (stop) while the models load must not kill the process.
        # Ctrl-C (SIGINT) stops like SIGTERM, at the end of the frame step under way: a KeyboardInterrupt raised
        # mid-step could lose a tracklet between `live` and the store worker's queue (a started track that never
        # ends). A second Ctrl-C raises, to stop waiting for the store (see _drain).
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGHUP: self.reload, signal.SIGINT: self._interrupt}
        previous = ({s: signal.getsignal(s) for s in handlers}
                    if threading.current_thread() is threading.main_thread() else {})
        for s in previous:
            if not (s == signal.SIGINT and previous[s] == signal.SIG_IGN):  # started to ignore Ctrl-C: keep it so
                signal.signal(s, handlers[s])
        identities = None
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            detector, embedder = self._build_models()
            self.embedder = embedder
            swap, from_model = swap_threshold_for(self.config.reid, getattr(embedder, "spec", None))
            if from_model:
                log.info("reid.swap_threshold %.3f from the model file (the config leaves it unset)", swap)
            self.swap_check = None if swap is None else SwapCheck(swap, self.config.reid.swap_crops)
            self.clock = RunClock(use_video_clock(self.config.matcher.clock, self.config.cameras))
            log.info("matcher clock: %s%s", self.clock.name, " (each frame's position in its file, from the run's "
                     "start: transit times are video seconds)" if self.clock.video else "")
            cams = self._cams = [self._camera(c) for c in self.config.cameras]
            t0 = time.monotonic()
            self._serve_metrics()
            with open_store_client(self.config.store, self.output_dir / "store", "run",
                                   **runtime_client_options()) as client:
                m, taken = thresholds_from_model(self.config.matcher, getattr(embedder, "spec", None),
                                                 self.outfit_embedder is not None,
                                                 getattr(self.outfit_embedder, "spec", None))
                if taken:
                    calibration = (getattr(getattr(embedder, "spec", None), "extra", None) or {}).get("matcher") or {}
                    log.info("matcher thresholds from the model file's calibration (%s)%s: %s",
                             calibration.get("calibrated_on", "none recorded"),
                             " and the outfit model" if self.outfit_embedder is not None else "",
                             ", ".join(f"{k} {v:.3f}" for k, v in taken.items()))
                    if bool(calibration.get("flip_sum", False)) != self.config.reid.flip_sum:
                        log.warning("the model file's thresholds were calibrated %s flip-summed features but "
                                    "reid.flip_sum is %s: links will be decided at the wrong cosines; run `reid "
                                    "calibrate --write` again %s --flip-sum, or set the matcher thresholds in the config",
                                    "on" if calibration.get("flip_sum") else "without",
                                    str(self.config.reid.flip_sum).lower(),
                                    "with" if self.config.reid.flip_sum else "without")
                    if calibration.get("centring", "none") != self.config.reid.centring:
                        log.warning("the model file's thresholds were calibrated on features centred %r but "
                                    "reid.centring is %r: links will be decided at the wrong cosines; run `reid "
                                    "calibrate --write --centre %s` again, or set the matcher thresholds in the config",
                                    calibration.get("centring", "none"), self.config.reid.centring,
                                    self.config.reid.centring)
                store = IdentityStore(client, self.config.key_prefix, self.config.events.stream,
                                      self.config.events.maxlen, gallery_log_maxlen=m.gallery_log_maxlen,
                                      retention_s=m.retention_s or 0)
                self.link = StoreLink(store, redact(self.config.store), max_buffered=self.config.events.maxlen)
                self.link.on_published = self._on_published
                self._restore_camera_stats(store)
                self.link.stamp = self._stamp_video_time
                if self.config.output.snapshots:
                    self.snapshots = SnapshotKeeper(client, self.config.key_prefix, m.retention_s or 0).start()
                self._serve_dashboard(client)
                self.stage = MatchStage(matcher_from_config(store, m), m.min_crops,
                                        lambda: [c.tracklets for c in cams],  # cameras may be added while running
                                        max_ending=self.config.events.maxlen, clock=self.clock.now)
                shift = self.clock.continue_after(self.stage.matcher.latest_seen())
                if shift:
                    log.info("matcher clock: the store holds sightings up to %.1f s ahead of now (an earlier replay): "
                             "this run's video time continues from there", shift)
                self.worker = StoreWorker(self.link, self.stage)
                self.worker.start()
                for c in cams:
                    c.reader.start()
                progress = _Progress(cams, enabled=self.progress)
                try:
                    self._loop(cams, detector, embedder, progress)
                except KeyboardInterrupt:
                    log.warning("interrupted: draining and flushing")
                    self._stop.set()
                finally:
                    progress.close()
                    if self.levels is not None:
                        for cam_id, (n, gains) in sorted(self.levels.summary().items()):
                            log.info("colour levelling: camera %s: %d crops, gains B %.3f G %.3f R %.3f", cam_id, n,
                                     *gains)
                    if self.centring is not None:
                        log.info("feature centring: crops per camera %s", ", ".join(
                            f"{cam} {n}" for cam, n in sorted(self.centring.summary().items())))
                    for c in cams:
                        c.reader.stop()  # all at once, then wait for each (bounded by its timeouts)
                    for c in cams:
                        if c.status == "running":
                            self._end_camera(c, "ended", None, "pipeline stopped")
                        c.reader.close()
                        self._finish_camera(c, everything=True)
                    self._drain()
                    self._stop_dashboard()
                if self.worker.failure is None:
                    self._save_camera_stats(store)
                    try:
                        identities = len(self.link.call(store.identities, include_merged=False))
                    except (StoreUnavailable, StoreFailure) as exc:
                        log.warning("identity count unavailable: %s", exc)
            self.worker.check()  # a store failure ends the run loud (exit 1), after the drain above
        finally:
            self._stop_dashboard()
            self.metrics.close()
            for s, h in previous.items():
                signal.signal(s, h)
        wall = time.monotonic() - t0
        total_frames = sum(c.frames for c in cams)
        return RunSummary(
            cameras=[{"camera": c.camera_id, "status": c.status, "error": c.error, "frames": c.frames,
                      "fps": c.frames / max((c.finished or time.monotonic()) - c.started, 1e-9),
                      "tracks": len(c.tracks_seen), "tracks_split": c.tracks_split, "detected": c.detected,
                      "detections_skipped_still": c.motion.skipped if c.motion is not None else 0} for c in cams],
            stage_ms_per_frame={s: 1000 * self.stage_s[s] / max(total_frames, 1) for s in STAGES},
            frames=total_frames, wall_s=wall, identities=identities, events=self.link.published,
            crops=self.crops_embedded, output_dir=self.output_dir, stopped_early=self._stop.is_set(),
            undelivered=self.undelivered, undelivered_file=self.undelivered_file, store_outages=self.link.outages,
            store_resets=self.worker.resets, crops_check=self.crops_check,
        )

    def _publish(self, events: list[IdentityEvent]) -> None:
        """Events made by the frame loop go to the store worker's outbox, in order; never waits."""
        self.worker.publish(events)

    def _observe_published(self, events: list[IdentityEvent], published_at: float) -> None:
        """Capture-to-event latency of events the store took (in the store worker's thread)."""
        late = self.stage.decided_late
        timed = [e for e in events if e.event_id not in late]
        with self._captured_lock:
            captured = {(e.camera_id, e.frame_index): self._captured.get((e.camera_id, e.frame_index), (None,))[0]
                        for e in timed}
        self.metrics.observe_published(timed, captured, published_at)

    def _drain(self) -> None:
        """At the end of a run: give the store `events.drain_timeout_s` to take what waits (ended tracklets
        to decide, buffered events); what is still undelivered is written to `undelivered_events.jsonl`
        under the output dir, never dropped."""
        try:
            left = self.worker.drain(self.config.events.drain_timeout_s)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the store, keep what is left
            log.warning("interrupted again: writing what the store has not taken to a file")
            left = self.worker.drain(0)
        if left.events or left.dropped:
            self.undelivered = len(left.events) + left.dropped
            self.undelivered_file = self.output_dir / "undelivered_events.jsonl"
            with open(self.undelivered_file, "a") as f:
                for ev in left.events:
                    f.write(ev.to_json() + "\n")
            log.error("store at %s did not take every event by the end of the run: %d events written to %s%s",
                      self.link.where, len(left.events), self.undelivered_file,
                      f" ({left.dropped} older ones dropped beyond events.maxlen)" if left.dropped else "")

    def _next_frames(self, cams: list[CameraRun]) -> list[tuple[CameraRun, Frame]]:
        """The frames ready now (at most one per camera; live cameras: their newest). Waits until some
        camera has one, never for a live camera (nor a paced file), so a stalled or dead stream slows no other;
        files replayed as fast as they decode go in lockstep (`_wait_for_replayed`, at most LOCKSTEP_WAIT_S a step).
        Returns [] when no camera is running any more or a stop was requested."""
        while not self._stop.is_set():
            self.worker.check()
            self._apply_camera_changes(cams)
            running = [c for c in cams if c.status == "running"]
            if not running:
                return []
            self.sources.wait([c.reader for c in running], timeout=0.2)
            self._wait_for_replayed(running)
            self._publish([IdentityEvent("camera.state", ch.camera_id, state=ch.state, detail=ch.detail,
                                         ts=iso_utc(ch.wall_time)) for ch in self.sources.state_changes()])
            batch = []
            for c in running:
                item = c.reader.poll()
                if item is END:
                    self._end_camera(c, c.reader.state, c.reader.error)
                elif item is not None:
                    batch.append((c, item))
            if batch:
                return batch
        return []

    def _wait_for_replayed(self, running: list[CameraRun]) -> None:
        """Lockstep for files replayed as fast as they decode: every step takes a frame of each of them (or its
        end), so which camera's frames share a step does not follow the decoders' pace, and a replay of several
        files repeats exactly (crops wait a number of steps, and a swap split lands where they are embedded).
        Waits at most LOCKSTEP_WAIT_S for a file that is behind; live cameras and paced files are never waited for."""
        behind = self._replayed_behind(running)
        deadline = time.monotonic() + LOCKSTEP_WAIT_S
        while behind and not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.sources.wait(behind, timeout=min(left, 0.2))
            behind = [r for r in behind if not r.ready_now()]

    @staticmethod
    def _replayed_behind(running: list[CameraRun]) -> list:
        """The readers of replayed files (lockstep) that have neither a frame nor their end waiting."""
        return [c.reader for c in running if c.reader.replayed and not c.reader.ready_now()]

    def _end_camera(self, c: CameraRun, status: str, error: str | None, detail: str | None = None) -> None:
        c.error = c.error or error
        c.status = "failed" if c.error else status
        c.finished = time.monotonic()
        if c.error:
            log.error("%s", c.error)
        self._publish([IdentityEvent("camera.state", c.camera_id, state="failed" if c.error else "ended",
                                     detail=c.error or detail)])
        self._finish_camera(c, everything=True)

    def _apply_camera_changes(self, cams: list[CameraRun]) -> None:
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
                except Exception as exc:  # a reload never stops a running pipeline; say what went wrong
                    log.error("config reload refused, cameras unchanged: %s: %s", type(exc).__name__,
                              redact(str(exc)))
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
                        self._end_camera(c, "ended", None, "removed from the configuration")
                    c.status = "removed"
                    self.sources.discard(cid)
                    log.info("camera %s removed", cid)
            for cam in added:
                if self.clock.video and (cam.kind != "file" or cam.realtime):
                    log.warning("camera %s is live, but this run reads times on its files' video clock "
                                "(matcher.clock %s): its transit times will not line up with the files'; set "
                                "matcher.clock: wall for runs that mix live cameras and files",
                                cam.id, self.config.matcher.clock)
                try:
                    run = self._camera(cam)
                except ConfigError as exc:
                    log.error("camera %s not added: %s", cam.id, exc)
                    continue
                if self.levels is not None:  # a re-added camera may come with new measured gains, or none
                    self.levels.set_fixed(cam.id, cam.colour_gains)
                with self.stage.lock:
                    cams.append(run)
                run.reader.start()
                log.info("camera %s added", cam.id)

    def _loop(self, cams, detector, embedder, progress) -> None:
        # detector.ahead (a detector that takes frames without waiting: `queued`): the next step's frames, where
        # they are already waiting, go to the detector's threads before this step is tracked and embedded, so the
        # frame loop's own work runs beside the detection instead of leaving its cores idle (README, Benchmarks:
        # "Frame by frame, and detection a step ahead"). Steps are still finished one at a time, in order.
        ahead = self.config.detector.ahead and queued(detector)
        step = None
        while True:
            if step is None:
                if self._stop.is_set():
                    return
                batch = self._next_frames(cams)
                if not batch:
                    return
                step = self._start_step(batch, detector, ahead)
            following = None
            if ahead and (frames := self._frames_ahead(cams)):
                following = self._start_step(frames, detector, ahead)
                self.steps_ahead += 1
            self._finish_step(step, detector, progress)
            step = following

    def _frames_ahead(self, cams: list[CameraRun]) -> list[tuple[CameraRun, Frame]]:
        """Frames already waiting (at most one per camera) for the next step, or [] when anything but frames
        waits: a stop, a camera command, a state change or a camera's end. Those are `_next_frames`' to handle
        once the steps under way are finished, so no camera ends or changes with a frame of it in a step."""
        if self._stop.is_set() or not self._commands.empty() or self.sources.changes_waiting():
            return []
        self.worker.check()
        running = [c for c in cams if c.status == "running"]
        now = time.monotonic()
        for c in running:
            c.reader.check_stall(now)  # a camera that stopped sending is noticed while the others keep the loop busy
        if any(c.reader.end_waiting() for c in running):
            return []
        if self._replayed_behind(running):
            return []  # lockstep: the step waits in _next_frames for the replayed file that is behind
        return [(c, frame) for c in running if (frame := c.reader.poll_frame()) is not None]

    def _start_step(self, batch: list[tuple[CameraRun, Frame]], detector, ahead: bool) -> "_Step":
        """Records the step's frames and starts their detection: queued on the detector's threads (ahead),
        else run now."""
        started = time.time()
        with self._captured_lock:
            for c, frame in batch:
                self._captured[(c.camera_id, frame.index)] = (frame.wall_time, frame.video_time)
            while len(self._captured) > 10_000:
                self._captured.popitem(last=False)
        every = self.config.detector.every
        # detector.every > 1: a camera's frames between detections are tracked by motion alone (None). Frames
        # are counted as they are taken (`scheduled`): a camera's frame may still wait in the step before.
        due = []
        for k, (c, frame) in enumerate(batch):
            if detected(c.scheduled, c.detect_phase, every):
                if frame.image is not None:
                    # detector.motion_gate: a camera that follows no one skips the frame while its picture has not
                    # changed since the detector last looked (its tracker moves on as on any frame between)
                    if c.motion is None or c.motion.needs_detection(frame.image, frame.video_time,
                                                                    c.tracker.following(), c.scheduled):
                        due.append(k)
                        c.detected += 1
                else:  # the reader's count of frames taken and `scheduled` disagree: a bug, said, never hidden
                    c.missed_detections += 1
                    log.error("camera %s: frame %d was due for detection but came without pixels (%d so far); "
                              "it is tracked by motion", c.camera_id, frame.index, c.missed_detections)
            c.scheduled += 1
        images = [batch[k][1].image for k in due]
        if not images:
            return _Step(batch, due, started, found=[])
        if ahead:
            return _Step(batch, due, started, handle=detector.submit(images))
        t = time.perf_counter()
        found = detector.detect(images)
        return _Step(batch, due, started, found=found, detect_s=time.perf_counter() - t)

    def _finish_step(self, step: "_Step", detector, progress) -> None:
        """Tracks, crops, embeds and publishes one step, once its detections are in."""
        stage, worker, every = self.stage, self.worker, self.config.detector.every
        batch, step_started, stage_before = step.batch, step.started, dict(self.stage_s)
        found = step.found
        if found is None:
            t = time.perf_counter()
            found = detector.collect(step.handle)  # this thread runs queued frames too; a failure is raised here
            # the loop's time on detection: the rest of it ran beside the step before
            step.detect_s = time.perf_counter() - t
        self.stage_s["detect"] += step.detect_s  # counted in this step's stage times (metrics.observe_batch)
        detections: list = [None] * len(batch)
        for k, dets in zip(step.due, found):
            detections[k] = dets
        if self.levels is not None and self.levels.learns_background:
            t = time.perf_counter()
            for (c, frame), dets in zip(batch, detections):
                if dets is not None:  # each camera's background is learnt outside the boxes it holds
                    self.levels.see_frame(c.camera_id, frame.image, dets.xyxy)
            self.stage_s["embed"] += time.perf_counter() - t

        events: list[IdentityEvent] = []
        pending = self._pending
        per_camera_tracks = []
        t = time.perf_counter()
        for (c, frame), dets in zip(batch, detections):
            size = (frame.shape[1], frame.shape[0])
            if c.frame_size is not None and size != c.frame_size:
                self._restart_tracking(c, size)
            c.frame_size = size
            if c.frames == 0 and (slow := slow_stride(c.reader.camera.fps, c.reader.source_fps, every)):
                log.warning("camera %s: %s", c.camera_id, slow)
            c.frames += 1
            tracks = c.tracker.update(dets, frame.image) if dets is not None else c.tracker.predict(frame.image)
            if c.motion is not None:
                c.motion.settled(c.frames - 1)  # this frame's position among the camera's (`scheduled` in _start_step)
            with stage.lock:  # tracklets are shared with the store worker's decisions
                started, requests = c.tracklets.update(c.frames, frame.index, frame.video_time, tracks,
                                                       frame.shape,
                                                       self.clock.frame_time(c.camera_id, frame.video_time))
            c.tracks_seen.update(int(t_) for t_ in tracks.track_id)
            for tl in started:
                events.append(IdentityEvent("track.started", c.camera_id, tl.track_id, tl.tracklet_id,
                                            bbox=_bbox(tl.last_bbox), frame_index=frame.index))
            for req in requests:
                x1, y1, x2, y2 = req.bbox
                person_mean = self.levels.person_mean(c.camera_id, frame.image, req.bbox) \
                    if self.levels is not None and self.levels.learns_background else None
                pending.add(req, frame.image[y1:y2, x1:x2], c.camera_id, frame.video_time, person_mean,
                            self._steps)
            per_camera_tracks.append((c, frame, tracks))
        self.stage_s["track"] += time.perf_counter() - t

        # The step's crops wait up to reid.embed_wait_steps steps to share one call of the ReID model with
        # later steps' crops (never past their tracklet's end: _end_tracklets).
        if pending and (self._steps - pending.first_step >= self.config.reid.embed_wait_steps
                        or len(pending) >= EMBED_FLUSH_CROPS):
            self._embed_pending()
        self._steps += 1

        # Decisions and track ends are the store worker's: hand them over, never wait for them.
        t, embedding = time.perf_counter(), self.stage_s["embed"]
        self._publish(events)
        for c, _, _ in per_camera_tracks:
            self._end_tracklets(c)
        worker.request_step()
        self.stage_s["match"] += time.perf_counter() - t - (self.stage_s["embed"] - embedding)

        t = time.perf_counter()
        for c, frame, tracks in per_camera_tracks:
            if c.mot is not None:
                write_mot_rows(c.mot, frame.index, tracks)
            # a frame without pixels is not drawn: the dashboard's frame stays due for the next one with them
            live_due = self.live_frames is not None and frame.image is not None and self.live_frames.due(c.camera_id)
            if c.writes_video or live_due:
                with stage.lock:
                    ids = {tid: tl.identity_id for tid, tl in c.tracklets.live.items()}
                drawn = draw_tracks(frame.image, tracks, ids, c.camera_id, frame.index)
            if c.writes_video:
                if c.video is None:
                    c.video = VideoOut(self.output_dir / f"{c.camera_id}.mp4",
                                       c.reader.camera.fps or c.reader.source_fps or 25.0)
                c.video.write(drawn)
            if live_due:
                jpeg = self.live_frames.put(c.camera_id, drawn, frame.index)
                if self.snapshots is not None:  # a dashboard beside the run reads it from the store
                    self.snapshots.publish_frame(c.camera_id, jpeg, _camera_info(c, self.live_frames))
        self.stage_s["output"] += time.perf_counter() - t
        self.metrics.observe_batch(batch, {s: self.stage_s[s] - stage_before.get(s, 0.0) for s in STAGES},
                                   step_started)
        progress.update(batch)

    def _end_tracklets(self, c: CameraRun, everything: bool = False) -> None:
        """Hand the tracklets of camera `c` that end now (all of them with `everything`) to the store worker,
        each with all its crops: the store decides a tracklet on the crops it holds when it ends, so crops still
        waiting for the ReID model (reid.embed_wait_steps) are embedded first."""
        live = c.tracklets.live
        if any(live.get(r.tracklet.track_id) is r.tracklet and (everything or c.tracklets.ends(r.tracklet, c.frames))
               for r in self._pending.requests):
            self._embed_pending()
        self.stage.expire(c.tracklets, c.frames, everything=everything)

    def _embed_pending(self) -> None:
        """Embed the crops waiting in `_pending` in one call of the ReID model and give each to its tracklet
        (swap check, running embedding, gallery snapshot)."""
        if not self._pending:
            return
        t = time.perf_counter()
        requests, images, where, person_means = self._pending.take()
        # a colour-levelled model sees each camera's crops levelled; so does the hand-made outfit
        # descriptor beside it, as `reid calibrate` measured it (an outfit model gets the crops as they came)
        model_crops = images if self.levels is None else self.levels.level(
            [cam for cam, _ in where], images, person_means if self.levels.learns_background else None)
        emb = self.embedder.embed(model_crops)
        identity = emb.identity if self.centring is None else \
            self.centring.centre([cam for cam, _ in where], emb.identity)
        # the outfit model's feature; else the model's clothes-sensitive output when it has one; else the
        # colour/texture descriptor. Check-only crops never reach an embedding: no look is made for them.
        kept = [i for i, r in enumerate(requests) if not r.check_only]
        looks = [None] * len(images)
        if kept:
            if self.outfit_embedder is not None:
                kept_looks = self.outfit_embedder.embed([images[i] for i in kept]).identity
            elif emb.appearance is not None:
                kept_looks = emb.appearance[kept]
            else:
                kept_looks = outfit_descriptors([model_crops[i] for i in kept])
            for i, look in zip(kept, kept_looks):
                looks[i] = look
        swapped = []
        with self.stage.lock:
            for req, vec, look in zip(requests, identity, looks):
                agrees, swap = (True, False) if self.swap_check is None else \
                    self.swap_check.observe(req.tracklet, vec, req.met_lately)
                if agrees and not req.check_only:
                    req.tracklet.add_embedding(vec, req.weight, look)
                if swap and not req.tracklet.split_off:
                    swapped.append(req.tracklet)
            runs = {c.camera_id: c for c in self._cams if c.status == "running"} if swapped else {}
            for tl in swapped:
                c = runs.get(tl.camera_id)  # a camera ending now: its tracklets end anyway
                # the tracker continues the box under a new id; this tracklet ends with what it saw
                if (c is not None and c.tracklets.live.get(tl.track_id) is tl
                        and c.tracker.split(tl.track_id) is not None):
                    tl.split_off = True
                    c.tracks_split += 1
                    log.info("camera %s: track %d split at frame %d (its crops turned to another person)",
                             tl.camera_id, tl.track_id, tl.last_frame)
        self.crops_embedded += len(images)
        self.crops_check += sum(r.check_only for r in requests)
        if self.snapshots is not None:
            for req, crop, (cam_id, vt) in zip(requests, images, where):
                if req.check_only or req.tracklet.split_off:
                    continue  # may show the person the track turned to
                # taller (nearer) and full-weight crops make the better gallery picture
                self.snapshots.offer(req.tracklet.tracklet_id, cam_id, crop, req.weight * crop.shape[0], vt)
        self.stage_s["embed"] += time.perf_counter() - t

    def _restart_tracking(self, c: CameraRun, size: tuple[int, int]) -> None:
        """The source came back at another resolution (a reconnect to another stream profile): boxes of the
        old size mean nothing in the new frames, so the camera's tracks end and its tracker starts afresh."""
        log.warning("camera %s: frame size changed from %dx%d to %dx%d (new stream profile after a reconnect?): "
                    "its tracks end and its tracker restarts", c.camera_id, *c.frame_size, *size)
        self._end_tracklets(c, everything=True)
        self.worker.wake()
        c.tracker_restarts += 1
        c.tracker = self._tracker()
        old = c.tracklets
        # A new tracker may count its track ids from 1 again: a new run-id suffix keeps tracklet ids unique.
        with self.stage.lock:
            c.tracklets = CameraTracklets(old.camera_id, f"{self.run_id}-{c.tracker_restarts}", old.gate,
                                          c.tracker.max_lost_frames)

    def _finish_camera(self, c: CameraRun, everything: bool) -> None:
        self.clock.camera_ended(c.camera_id)
        self._end_tracklets(c, everything=everything)
        self.worker.wake()
        if c.mot is not None:
            c.mot.close()
            c.mot = None
        if c.video is not None:
            c.video.close()
            c.video = None


# The slowest detection rate a stride was measured to track at: PETS09-S2L1 at 7 fps, one frame in 2 (README,
# Benchmarks: "A stride by default").
MIN_DETECTIONS_PER_S = 3.5


def reid_threads(configured: int, detector) -> int:
    """The ReID model's threads: `reid.threads` when set; with 0 and a detector running frames on threads side by
    side, one frame's share of the cores (1 on 2 cores with 2 workers), since the model runs in the frame loop's
    thread while the detector's other threads run frames: on all cores, its threads waited on each other at every
    layer for a core the detector held (README: Benchmarks, "The ReID model on its share of the cores"); else 0,
    the backend's own choice."""
    if configured:
        return configured
    return frame_threads(detector) or 0


def detected(position: int, phase: int, every: int) -> bool:
    """Whether a camera detects its frame at `position` among those taken (`detector.every`, its phase)."""
    return (position + phase) % every == 0


def slow_stride(camera_fps: float | None, source_fps: float, every: int) -> str | None:
    """Why `detector.every` is too coarse for a camera processed at min(its `fps`, its source's rate), or None."""
    rate = min(r for r in (camera_fps, source_fps) if r) if (camera_fps or source_fps) else 0.0
    if every <= 1 or rate <= 0 or rate / every >= MIN_DETECTIONS_PER_S:
        return None
    return (f"detector.every {every} at {rate:g} frames a second detects {rate / every:.2g} frames a second, below "
            f"the {MIN_DETECTIONS_PER_S:g} the tracker was measured at, so tracks may break at crossings: set "
            f"detector.every to {max(1, int(rate // MIN_DETECTIONS_PER_S))} or less for this camera's rate")


def _camera_info(c: CameraRun, frames: LiveFrames | None) -> dict:
    """A camera as the dashboard shows it: ids and counters only, never its source (it may hold credentials)."""
    r = c.reader
    latest = frames.get(c.camera_id) if frames is not None else None
    return {"camera_id": c.camera_id, "state": r.state if c.status == "running" else c.status,
            "detail": c.error, "fps": round(r.rate("out"), 2), "fps_in": round(r.rate("in"), 2),
            "frames": c.frames, "decoded": r.decoded, "reconnects": r.reconnects, "tracks": len(c.tracks_seen),
            "dropped": r.dropped_stale + r.skipped, "has_frame": latest is not None,
            "frame_index": latest[2] if latest else None,
            "frame_at": iso_utc(latest[1]) if latest else None,
            "frame_url": f"/api/cameras/{c.camera_id}/frame.jpg"}


class _LiveCameras:
    """The running pipeline's cameras for its dashboard (read from another thread: plain attribute reads)."""

    def __init__(self, runner: "PipelineRunner") -> None:
        self.runner = runner

    def cameras(self) -> list[dict]:
        return [_camera_info(c, self.runner.live_frames) for c in list(self.runner._cams) if c.status != "removed"]

    def frame(self, camera_id: str) -> bytes | None:
        frames = self.runner.live_frames
        latest = frames.get(camera_id) if frames is not None else None
        return latest[0] if latest else None


def _why(exc: BaseException) -> str:
    """One line saying why a model or tracker could not be built, secrets redacted."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text if len(text) <= 400 else text[:400] + "…")


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
