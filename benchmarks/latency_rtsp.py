"""End-to-end latency on loopback RTSP: frame capture -> identity event received by a Redis consumer.

Two real videos from ../shared/data are served by GStreamer RTSP servers (tests/rtsp_server.py, system
Python) at --fps; the full pipeline (YOLOX-nano, ByteTrack, ReID, matcher, Redis store) reads them over
RTSP with the chosen backend; a separate Redis client XREADs the event stream like any consumer.

Latency of an event = the consumer's receive time - the capture time of the frame it was decided on
(`Frame.wall_time`: when the pipeline's reader finished decoding that frame; RTSP transport and decode
time before it are not included). Events: track.started and every identity event (identity.created,
.assigned, .outfit_changed, .merged), each with its sample count. The identity events are counted all
together, and split into those decided on the frame being processed and those decided on an earlier frame
(short tracklets decided when the tracker gives them up, decisions the matcher deferred), whose latency
includes that wait. track.ended names a frame seen long before, by design, and is not a latency. Also
printed: frame age at the start of processing, and processed vs served frame rates.

    .venv/bin/python benchmarks/latency_rtsp.py [--seconds 45] [--fps 10] [--backend ffmpeg|gstreamer]
        [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.redis_server import RedisServer, free_port  # noqa: E402
from pipeline.runner import PipelineRunner  # noqa: E402
from tests.rtsp_server import RtspServer, server_unavailable  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
VIDEOS = {"pets": DATA / "pets09-s2l1" / "vtest.avi", "room": DATA / "videos" / "one-by-one-person-detection.mp4"}
IDENTITY_TYPES = ("identity.created", "identity.assigned", "identity.outfit_changed", "identity.merged")
LATENCY_TYPES = ("track.started", *IDENTITY_TYPES)  # track.ended: see the docstring


class RecordingRunner(PipelineRunner):
    """The real runner, remembering the capture time of recent frames (bounded) and their age when taken."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.captured: OrderedDict[tuple[str, int], float] = OrderedDict()
        self.ages: list[float] = []
        self.lock = threading.Lock()
        self.current: dict[str, int] = {}  # camera -> index of the frame being processed
        self.slow_steps: list[tuple[float, dict[str, float]]] = []  # steps over 1 s: where the time went
        observe = self.metrics.observe_batch

        def observe_and_keep(batch, stage_s, *rest):
            if sum(stage_s.values()) > 1.0:
                self.slow_steps.append((time.time(), {k: round(v, 2) for k, v in stage_s.items()}))
            return observe(batch, stage_s, *rest)

        self.metrics.observe_batch = observe_and_keep

    def _start_step(self, batch, *args):  # every step's frames, taken at its start or a step ahead
        now = time.time()
        self.current = {f.camera_id: f.index for _, f in batch}
        with self.lock:
            for _, f in batch:
                self.captured[(f.camera_id, f.index)] = f.wall_time
                self.ages.append(now - f.wall_time)
            while len(self.captured) > 20_000:
                self.captured.popitem(last=False)
        return super()._start_step(batch, *args)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="measured time after warm-up")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--fps", type=int, default=10, help="frame rate each RTSP server serves")
    ap.add_argument("--backend", choices=("ffmpeg", "gstreamer"), default="ffmpeg")
    ap.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (dotted path, YAML value), as capacity.py --set")
    args = ap.parse_args()
    if (why := server_unavailable()) is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    load_start = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    tmp = Path(tempfile.mkdtemp(prefix="latency_rtsp_"))
    servers = {cam: RtspServer(video, fps=args.fps).start() for cam, video in VIDEOS.items()}
    redis = RedisServer(tmp / "redis", port=free_port(), persist=False).start()
    try:
        cfg = tmp / "cams.yaml"
        cfg.write_text("cameras:\n" + "".join(
            f"  - {{id: {cam}, source: '{srv.url}', backend: {args.backend}, transport: {args.transport}}}\n"
            for cam, srv in servers.items()) + f"store: {redis.url}\noutput: {{video: false}}\n")
        if args.set:
            from capacity import apply_sets  # benchmarks/ is this script's own folder

            cfg.write_text(yaml.safe_dump(apply_sets(yaml.safe_load(cfg.read_text()), args.set)))
        runner = RecordingRunner(load_config(cfg), tmp / "out", progress=False)
        thread = threading.Thread(target=runner.run, name="pipeline")
        client = redis.client()
        thread.start()
        received: list[tuple[dict, float, float]] = []  # (event, receive time, its frame's capture time)
        last_id, t_first, missing = "0-0", None, 0
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            res = client.xread({"pipeline:events": last_id}, count=100, block=200)
            now = time.time()
            if t_first is None and runner.ages:
                t_first = time.monotonic()
                deadline = t_first + args.warmup + args.seconds
            for _, entries in res or []:
                for sid, fields in entries:
                    last_id = sid
                    ev = json.loads(fields[b"json"])
                    if ev["type"] not in LATENCY_TYPES or time.monotonic() - t_first < args.warmup:
                        continue
                    with runner.lock:
                        cap = runner.captured.get((ev["camera_id"], ev["frame_index"]))
                    if cap is None:
                        missing += 1
                        continue
                    received.append((ev, now, cap))
        measured = time.monotonic() - t_first - args.warmup
        elapsed = time.monotonic() - t_first
        fps_out = {c: round(r.taken / elapsed, 1) for c, r in runner.sources.readers.items()}
        dropped = {c: r.dropped_stale for c, r in runner.sources.readers.items()}
        runner.request_stop()
        thread.join(60)
    finally:
        for srv in servers.values():
            srv.stop()
        redis.stop()

    # An identity decided on the frame being processed measures the pipeline. One decided on an earlier
    # frame (a tracklet too short for min_crops, decided when the tracker gives it up; or a decision the
    # matcher deferred) names that frame, so its latency includes the policy's wait. Both count in the
    # "every identity event" row; the split says how much of it is that wait.
    every = "every identity event"
    current, earlier = "... decided on the frame being processed", "... decided on an earlier frame"
    latencies: dict[str, list[float]] = {"track.started": [], every: [], current: [], earlier: []}
    for ev, now, cap in received:
        if ev["type"] == "track.started":
            latencies["track.started"].append(now - cap)
            continue
        latencies[every].append(now - cap)
        # decided at a track's end (the match stage records those) = on an earlier frame
        latencies[earlier if ev["event_id"] in runner.stage.decided_late else current].append(now - cap)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"\nCapture -> identity event at a Redis consumer, loopback RTSP ({args.backend}, {args.transport}), "
          f"2 cameras x {args.fps} fps served, {measured:.0f} s measured after {args.warmup:.0f} s warm-up; "
          f"{platform.machine()} {os.cpu_count()}-core CPU, {date}, Python {platform.python_version()}, "
          f"nice {os.nice(0)}; load average (1 min) {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
          f"{'; ' + ', '.join(args.set) if args.set else ''}\n")
    print("| events | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, vals in latencies.items():
        print(f"| {name} | {len(vals)} | {pct(vals, 50):.0f} | {pct(vals, 99):.0f} | {pct(vals, 100):.0f} |")
    by_type = {t: sum(ev["type"] == t for ev, _, _ in received) for t in IDENTITY_TYPES}
    print(f"\nidentity events by type: {by_type}")
    ages = runner.ages[len(runner.ages) // 10:]
    print(f"\nframe age at processing start: p50 {pct(ages, 50):.0f} ms, p99 {pct(ages, 99):.0f} ms; "
          f"processed fps per camera {fps_out} (served {args.fps}); dropped as stale {dropped}; "
          f"events whose frame was not recorded {missing}")
    for t, stages in runner.slow_steps:
        print(f"slow step at {datetime.fromtimestamp(t, timezone.utc):%H:%M:%S}: {stages} (seconds)")
    return 0 if latencies[every] else 1


if __name__ == "__main__":
    sys.exit(main())
