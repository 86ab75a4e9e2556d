"""A Redis outage during a run: cameras keep running, events wait and are delivered, nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics import PipelineMetrics
from pipeline.redis_server import RedisServer, free_port
from pipeline.store import StoreLink, StoreUnavailable

FRAMES = 220


def _config(tmp_path: Path, shared_video, url: str, drain_s: float) -> Path:
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: pets, source: {shared_video['pets']}}}\n"
                   f"  - {{id: room, source: {shared_video['room_mp4']}}}\n"
                   f"store: {url}\noutput: {{video: false}}\nmatcher: {{min_crops: 1}}\n"
                   f"events: {{drain_timeout_s: {drain_s}}}\n")
    return cfg


def _start(cfg: Path, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), "--max-frames", str(FRAMES),
                             "--output-dir", str(tmp_path / "out"), "--mot-dir", str(tmp_path / "mot"),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_events(server: RedisServer, proc: subprocess.Popen, n: int) -> None:
    client = server.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if client.xlen("pipeline:events") >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} events before the outage: {proc.communicate()}")


def _mot_frames(path: Path) -> int:
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    return int(rows[:, 0].max()) if rows.size else 0


def test_store_restart_mid_run_delivers_every_event(tmp_path, shared_video, shared_models):
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=True).start()
    proc = _start(_config(tmp_path, shared_video, server.url, 20), tmp_path)
    try:
        _wait_for_events(server, proc, 8)
        server.stop()  # SHUTDOWN: the append-only file keeps what was delivered so far
        time.sleep(4)  # the run goes on without its store meanwhile
        assert proc.poll() is None, proc.communicate()
        server = RedisServer(tmp_path / "redis", port=server.port, persist=True).start()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 0, err
        assert "unreachable" in err and "answers again" in err, err
        assert "every buffered event was delivered" in out, out
        events = {}
        for _, fields in server.client().xrange("pipeline:events"):
            ev = json.loads(fields[b"json"])
            events[ev["event_id"]] = ev  # delivery is at least once: count each event id once
        started = [e["tracklet_id"] for e in events.values() if e["type"] == "track.started"]
        ended = [e["tracklet_id"] for e in events.values() if e["type"] == "track.ended"]
        assert started and sorted(started) == sorted(ended), "every started track must end exactly once"
        decided = {e["tracklet_id"] for e in events.values() if e["type"] in ("identity.created", "identity.assigned")}
        assert decided, "identity decisions must resume once the store is back"
        final = {(e["camera_id"], e["state"]) for e in events.values() if e["type"] == "camera.state"}
        assert {("pets", "ended"), ("room", "ended")} <= final
    finally:
        server.stop()
    # Both cameras processed every frame: the outage never held the cameras up.
    assert _mot_frames(tmp_path / "mot" / "pets.txt") >= FRAMES - 5
    assert _mot_frames(tmp_path / "mot" / "room.txt") >= FRAMES - 30  # people leave the room near the end


def test_store_gone_for_good_writes_undelivered_events(tmp_path, shared_video, shared_models):
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False).start()
    proc = _start(_config(tmp_path, shared_video, server.url, 1), tmp_path)
    try:
        _wait_for_events(server, proc, 4)
        server.stop()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # events are not where they belong: a runtime failure, said plainly
    path = tmp_path / "out" / "undelivered_events.jsonl"
    assert str(path) in err and path.exists(), err
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and all(e["schema"] == 1 for e in lines)
    assert {("pets", "ended"), ("room", "ended")} <= {(e["camera_id"], e["state"]) for e in lines
                                                      if e["type"] == "camera.state"}
    assert any(e["type"] == "track.ended" for e in lines)
    assert _mot_frames(tmp_path / "mot" / "pets.txt") >= FRAMES - 5


class _FakeStore:
    """Stands in for IdentityStore.publish: fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.published: list = []

    def publish(self, events):
        import redis

        if self.down:
            raise redis.ConnectionError("Connection refused")
        self.published.extend(events)
        return [str(i) for i in range(len(events))]


def test_store_link_buffers_in_order_backs_off_and_bounds_memory():
    now = [0.0]
    store = _FakeStore()
    link = StoreLink(store, "redis://x", max_buffered=5, retry_initial_s=1.0, retry_max_s=4.0, clock=lambda: now[0])
    assert link.publish([1, 2]) == 2 and store.published == [1, 2]
    store.down = True
    assert link.publish([3]) == 0 and not link.up and link.outages == 1
    with pytest.raises(StoreUnavailable):
        link.call(store.publish, [99])  # refused at once, without touching the store, until the retry is due
    assert link.publish([4, 5, 6, 7, 8]) == 0
    assert list(link.outbox) == [4, 5, 6, 7, 8] and link.dropped == 1  # bounded: the oldest (3) went
    scrape = PipelineMetrics(lambda: [], lambda: link).text()
    for line in ("pipeline_store_up 0.0", "pipeline_events_buffered 5.0", "pipeline_events_dropped_total 1.0",
                 "pipeline_store_outages_total 1.0", "process_resident_memory_bytes", "process_open_fds"):
        assert line in scrape, scrape
    now[0] = 1.0  # first retry due: fails, next delay doubles
    assert link.flush() == 0
    now[0] = 2.5
    assert not link.ready()
    now[0] = 3.0
    store.down = False
    assert link.flush() == 5 and link.up
    assert store.published == [1, 2, 4, 5, 6, 7, 8] and not link.outbox
