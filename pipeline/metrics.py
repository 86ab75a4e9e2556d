"""Prometheus metrics: per-camera health read live from the readers, stage and end-to-end latencies.

Each runner owns its own CollectorRegistry (several runners in one process, as in tests, never clash).
Camera figures are read from the readers at scrape time, so a camera removed by a config reload simply
disappears from the next scrape. Labels carry camera ids only, never source URLs (credentials).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.sources import CAMERA_STATES, CameraReader

# Seconds; fine at the low end where a healthy pipeline lives, up to the point where something is wrong.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class _CameraCollector(Collector):
    def __init__(self, readers: Callable[[], Iterable[CameraReader]]) -> None:
        self._readers = readers

    def collect(self):
        def family(kind, name, doc, extra=()):
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            return cls(name, doc, labels=["camera", *extra])

        frames_in = family("counter", "pipeline_camera_frames_in", "frames decoded")
        frames_out = family("counter", "pipeline_camera_frames_out", "frames handed to the pipeline")
        dropped = family("counter", "pipeline_camera_frames_dropped",
                         "frames dropped: stale = replaced by a newer one (latest-frame policy), "
                         "rate = above the camera's processing fps", ["reason"])
        unconverted = family("counter", "pipeline_camera_frames_unconverted",
                             "frames handed to the pipeline decoded but never converted to pixels: nothing looks "
                             "at them (with detector.every n > 1, the frames between detections)")
        reconnects = family("counter", "pipeline_camera_reconnects", "successful reconnections after a loss")
        failures = family("counter", "pipeline_camera_connect_failures", "failed attempts to open the source")
        fps_in = family("gauge", "pipeline_camera_fps_in", "decoded frames per second over the last 5 s")
        fps_out = family("gauge", "pipeline_camera_fps_out", "processed frames per second over the last 5 s")
        depth = family("gauge", "pipeline_camera_queue_depth", "frames waiting between reader and pipeline")
        state = family("gauge", "pipeline_camera_state", "1 for the camera's current state", ["state"])
        for r in list(self._readers()):
            cam = r.camera.id
            frames_in.add_metric([cam], r.decoded)
            frames_out.add_metric([cam], r.taken)
            dropped.add_metric([cam, "stale"], r.dropped_stale)
            dropped.add_metric([cam, "rate"], r.skipped)
            unconverted.add_metric([cam], r.imageless)
            reconnects.add_metric([cam], r.reconnects)
            failures.add_metric([cam], r.connect_failures)
            fps_in.add_metric([cam], r.rate("in"))
            fps_out.add_metric([cam], r.rate("out"))
            depth.add_metric([cam], r.queue_depth)
            for s in CAMERA_STATES:
                state.add_metric([cam, s], 1.0 if r.state == s else 0.0)
        yield from (frames_in, frames_out, dropped, unconverted, reconnects, failures, fps_in, fps_out, depth, state)


class _StoreCollector(Collector):
    """The store link (pipeline.outage.StoreLink) as seen at scrape time: up or not, what waits, what was lost."""

    def __init__(self, link: Callable[[], object | None]) -> None:
        self._link = link

    def collect(self):
        link = self._link()
        if link is None:
            return
        yield GaugeMetricFamily("pipeline_store_up", "1 while the identity store answers (0 during an outage, and "
                                "while a call has waited longer than its timeout)", value=float(link.up))
        yield GaugeMetricFamily("pipeline_events_buffered", "events waiting for the store", value=len(link.outbox))
        yield CounterMetricFamily("pipeline_events_dropped", "events dropped: the buffer was full during a store outage",
                                  value=link.dropped)
        yield CounterMetricFamily("pipeline_store_outages", "times the store became unreachable", value=link.outages)


class _SkipCollector(Collector):
    """Due frames the detector did not look at (detector.motion_gate), per camera, read at scrape time."""

    def __init__(self, skipped: Callable[[], dict[str, int]]) -> None:
        self._skipped = skipped

    def collect(self):
        family = CounterMetricFamily("pipeline_camera_detections_skipped",
                                     "frames due for detection that the detector skipped: the camera followed no one "
                                     "and its picture had not changed since the detector last looked "
                                     "(detector.motion_gate)", labels=["camera"])
        for cam, n in sorted(self._skipped().items()):
            family.add_metric([cam], n)
        yield family


class PipelineMetrics:
    def __init__(self, readers: Callable[[], Iterable[CameraReader]],
                 store_link: Callable[[], object | None] = lambda: None,
                 skipped: Callable[[], dict[str, int]] = dict) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CameraCollector(readers))
        self.registry.register(_StoreCollector(store_link))
        self.registry.register(_SkipCollector(skipped))
        # RSS, CPU seconds, open fds of this process: long runs must show flat memory (anchors §3.4).
        ProcessCollector(registry=self.registry)
        self.stage_seconds = Histogram("pipeline_stage_seconds", "time per batch spent in each stage",
                                       ["stage"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.frame_age = Histogram("pipeline_frame_age_seconds",
                                   "capture (decode) to start of processing, per frame", ["camera"],
                                   registry=self.registry, buckets=LATENCY_BUCKETS)
        self.capture_to_event = Histogram("pipeline_capture_to_event_seconds",
                                          "capture (decode) of a frame to the publication of the events it caused",
                                          ["type"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self._server = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (port 0 picks a free one)."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def observe_batch(self, batch, stage_s: dict[str, float], started_at: float) -> None:
        """One loop step: `batch` [(camera run, Frame)] and its per-stage seconds."""
        for c, frame in batch:
            self.frame_age.labels(c.camera_id).observe(max(started_at - frame.wall_time, 0.0))
        for stage, seconds in stage_s.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def observe_published(self, events, captured: dict[tuple[str, int], float | None], published_at: float) -> None:
        """Events the store took at `published_at`; `captured` maps (camera, frame index) to the capture time
        of the frames the run still remembers. Events naming a frame it does not remember (a track end
        long after its last frame) measure a policy wait, not the pipeline's latency, and are skipped."""
        for ev in events:
            wall = captured.get((ev.camera_id, ev.frame_index))
            if wall is not None and ev.type != "track.ended":
                self.capture_to_event.labels(ev.type).observe(max(published_at - wall, 0.0))
