"""A runtime that keeps going (issue 13), against real redis-server processes: a frozen store never slows the
cameras, every store error that may pass (OOM, READONLY, MISCONF, BUSY, timeouts) is an outage that loses
nothing, errors retrying cannot fix fail loud, and a store that comes back empty is announced and never
makes identity ids repeat."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from pipeline.events import IdentityEvent
from pipeline.identity_stage import MatchStage
from pipeline.matcher import CrossCameraMatcher
from pipeline.outage import CALL_TIMEOUT_S, StoreFailure, StoreLink, is_transient
from pipeline.redis_server import RedisServer, free_port
from pipeline.store import IdentityStore, StoreOp, StoreReset
from pipeline.store_worker import StoreWorker
from pipeline.tracklets import CameraTracklets, CropGate, Tracklet
from tests.rtsp_server import RtspServer
from tests.test_store_outage import _scrape_frames, _stream, _wait_frames

PROTECTED = ("--enable-protected-configs", "yes")  # lets a test move `dir` to make persistence fail (MISCONF)


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "pipeline_camera_frames_out_total":
                out["frames"] = s.value
            elif s.name == "pipeline_store_up":
                out["up"] = s.value
            elif s.name == "pipeline_stage_seconds_sum" and s.labels.get("stage") == "match":
                out["match_s"] = s.value  # the frame loop's time handing decisions to the store worker
    return out


def _run(tmp_path: Path, shared_video, url: str, name: str, frames: int | None, extra: str = "",
         source: str | None = None):
    """A `pipeline run` of PETS (`frames` of the file), or of a live `source` that runs until `_stop`."""
    port = free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: '{source or shared_video['pets']}'}}]\nstore: {url}\n"
                   f"output: {{video: false}}\nmetrics: {{port: {port}}}\nevents: {{drain_timeout_s: 60}}\n{extra}")
    limit = ["--max-frames", str(frames)] if frames else []
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), *limit,
                             "--output-dir", str(tmp_path / name), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, port


def _stop(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    """SIGTERM a live run (it drains, flushes and exits 0) and collect its output. A run that already ended
    while the test still needed it is a test failure, not a pass: a live source never ends by itself."""
    assert proc.poll() is None, ("the live run ended before the test stopped it", proc.communicate())
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=timeout)


@contextlib.contextmanager
def _live_run(tmp_path: Path, shared_video, url: str, name: str):
    """A run of PETS served live over RTSP at 10 fps: it lasts as long as the test needs on a fast or a slow
    machine, and the frame rate it can reach is the camera's. Yields (process, metrics port); whatever
    happens, the run and the camera are gone afterwards."""
    camera = RtspServer(shared_video["pets"], fps=10).start()
    proc, port = _run(tmp_path, shared_video, url, name, None, source=camera.url)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        camera.stop()


def _rate_over(proc: subprocess.Popen, port: int, seconds: float) -> float:
    """Frames per second over the next `seconds`, scraping as often as during a fault (a scrape costs the run a
    little CPU); infinite if the run ended meanwhile (then `_stop` fails the test)."""
    f0, t0 = _scrape_frames(port), time.monotonic()
    while time.monotonic() - t0 < seconds and proc.poll() is None:
        time.sleep(0.5)
        _scrape(port)
    return (_scrape_frames(port) - f0) / (time.monotonic() - t0) if proc.poll() is None else float("inf")


def _every_track_ended(events: list[dict]) -> None:
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    assert started and started == ended, (sorted(started - ended), sorted(ended - started))


# -- classification ------------------------------------------------------------------------------------
def _ops() -> StoreOp:
    ops = StoreOp()
    ops.create(np.ones(4, np.float32), None, "cam", 1.0)
    return ops


def test_store_errors_are_classified_on_a_real_server(tmp_path):
    """Replies a real redis-server gives for a full memory, a demoted primary, a failing disk and a long script
    are transient (plain commands, the event pipeline and the commit script alike); a wrong type or a wrong
    password is not, and StoreLink turns it into StoreFailure instead of an outage."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False, extra_args=PROTECTED).start()
    client = server.client()
    store = IdentityStore(client, prefix="c")
    calls = {"SET": lambda: client.set("k", "v"),
             "publish": lambda: store.publish([IdentityEvent("camera.state", "c", state="streaming")]),
             "commit script": lambda: store.commit(_ops(), 0)}

    def transient_errors(label: str) -> None:
        for what, call in calls.items():
            with pytest.raises(redis.RedisError) as info:
                call()
            assert is_transient(info.value), (label, what, repr(info.value))

    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        transient_errors("OOM")
        client.config_set("maxmemory", "0")

        client.replicaof("127.0.0.1", str(free_port()))  # a primary that is not there: a read-only replica
        transient_errors("READONLY")
        client.replicaof("NO", "ONE")

        data_dir = client.config_get("dir")["dir"]
        client.config_set("save", "3600 1")
        client.config_set("dir", "/proc")  # the next snapshot cannot be written: writes are refused (MISCONF)
        client.bgsave()
        deadline = time.monotonic() + 10
        while client.info("persistence")["rdb_last_bgsave_status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        transient_errors("MISCONF")
        client.config_set("dir", data_dir)
        client.config_set("save", "")
        client.bgsave()
        time.sleep(0.5)

        client.config_set("busy-reply-threshold", "100")  # a script running 100 ms makes others wait: BUSY
        spinning = threading.Thread(target=lambda: server.client().eval(
            "local t = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) < t + 2 do end", 0))
        spinning.start()
        time.sleep(0.5)
        with pytest.raises(redis.RedisError) as info:
            server.client().get("k")
        assert is_transient(info.value), repr(info.value)
        spinning.join()

        client.set("a-string", "x")
        with pytest.raises(redis.ResponseError) as info:
            client.xadd("a-string", {"json": "{}"})
        assert not is_transient(info.value)  # WRONGTYPE: a bug, not an outage
        link = StoreLink(store, "redis://test")
        with pytest.raises(StoreFailure, match="WRONGTYPE"):
            link.call(client.xadd, "a-string", {"json": "{}"})
        assert link.up and link.outages == 0
        assert not is_transient(redis.AuthenticationError("WRONGPASS invalid username-password pair"))
    finally:
        server.stop()


# -- a frozen store ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("gst_rtsp_server")
def test_a_frozen_store_does_not_slow_the_cameras_and_loses_nothing(tmp_path, shared_video, shared_models):
    """SIGSTOP on the store for 10 s mid-run: the camera keeps at least 80 % of its frame rate (store calls
    happen in the store worker, never in the frame loop), `pipeline_store_up` reads 0 once a call has waited
    longer than its timeout, and after SIGCONT every buffered event is delivered."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False).start()
    try:
        with _live_run(tmp_path, shared_video, server.url, "frozen") as (proc, port):
            _wait_frames(port, proc, 40)
            rate_before = _rate_over(proc, port, 10)  # the same length as the freeze
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                t_stop, f_stop, match_stop = time.monotonic(), _scrape_frames(port), _scrape(port)["match_s"]
                ups = []
                while time.monotonic() - t_stop < 10:
                    time.sleep(0.5)
                    ups.append((time.monotonic() - t_stop, _scrape(port)["up"]))
                frozen = _scrape(port)
                rate_frozen = (frozen["frames"] - f_stop) / (time.monotonic() - t_stop)
                match_frozen = frozen["match_s"] - match_stop
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            # A shared machine's speed drifts: the reference is the slower of the windows before and after.
            rate_after = _rate_over(proc, port, 10)
            out, err = _stop(proc)
        rate_ref = min(rate_before, rate_after)
        print(f"frame rate {rate_before:.2f} fps before, {rate_frozen:.2f} fps while the store was frozen, "
              f"{rate_after:.2f} after; frame loop's match stage {match_frozen:.3f} s in the freeze; "
              f"store_up samples {ups}")
        assert proc.returncode == 0, err
        assert rate_frozen >= 0.8 * rate_ref, (rate_before, rate_frozen, rate_after)
        assert match_frozen < 0.5, match_frozen  # the frame loop never waited for the frozen store
        # Down at the latest a call timeout (+ a scrape interval) into the freeze.
        assert any(up == 0.0 for t, up in ups if t <= CALL_TIMEOUT_S + 1.5), ups
        assert "every buffered event was delivered" in out, out
        assert not (tmp_path / "frozen" / "undelivered_events.jsonl").exists()
        events, _ = _stream(server)
        _every_track_ended(events)
    finally:
        server.stop()


# -- OOM, READONLY, MISCONF mid-run ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("gst_rtsp_server")
def test_oom_readonly_and_misconf_are_outages_that_lose_nothing(tmp_path, shared_video, shared_models):
    """One run, three faults of a real server one after the other, each for 4 s: maxmemory reached with
    noeviction (OOM), the primary demoted to a replica (READONLY), snapshots that cannot be written (MISCONF).
    Each is an outage (logged, counted); the run ends 0 and every event reaches the store."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False, extra_args=PROTECTED).start()
    client = server.client()
    data_dir = client.config_get("dir")["dir"]

    def misconf_on():
        client.config_set("save", "3600 1")
        client.config_set("dir", "/proc")
        client.bgsave()

    def misconf_off():
        client.config_set("dir", data_dir)
        client.bgsave()
        time.sleep(0.5)
        client.config_set("save", "")

    faults = [
        ("OOM", lambda: (client.config_set("maxmemory-policy", "noeviction"), client.config_set("maxmemory", "1")),
         lambda: client.config_set("maxmemory", "0")),
        ("READONLY", lambda: client.replicaof("127.0.0.1", str(free_port())), lambda: client.replicaof("NO", "ONE")),
        ("MISCONF", misconf_on, misconf_off),
    ]
    with _live_run(tmp_path, shared_video, server.url, "faults") as (proc, port):
        _wait_frames(port, proc, 40)
        for _, on, off in faults:
            on()
            time.sleep(4)
            off()
            time.sleep(2)
        out, err = _stop(proc)
    try:
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        outages = int(re.search(r"store outages during the run: (\d+)", out).group(1))
        assert outages >= 3, out
        for word in ("OutOfMemoryError", "ReadOnlyError", "MISCONF"):
            assert word in err, (word, err[-3000:])
        assert "every buffered event was delivered" in out, out
        assert not (tmp_path / "faults" / "undelivered_events.jsonl").exists()
        events, _ = _stream(server)
        _every_track_ended(events)
        decided = {e["tracklet_id"] for e in events if e["type"] in ("identity.created", "identity.assigned")}
        assert decided, "no decision reached the store"
    finally:
        server.stop()


# -- a store that comes back empty ------------------------------------------------------------------------
DIM = 16


def _person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_a_store_that_comes_back_empty_is_announced_and_ids_never_repeat(redis_server):
    """The store worker decides two people, the store loses everything (as a restarted server without
    persistence does), a third person arrives: a `store.reset` event says so, before the new decision, and
    the new identity's id continues after the highest id seen instead of starting again at 1."""
    client = redis_server.client()
    store = IdentityStore(client, prefix="g", stream="g:events")
    cams = CameraTracklets("cam", "run", CropGate(), 30)
    stage = MatchStage(CrossCameraMatcher(store, threshold=0.9), 1, [cams])
    link = StoreLink(store, "redis://test")
    worker = StoreWorker(link, stage)
    worker.start()

    def arrive(track_id: int, seed: int) -> int:
        t = Tracklet(f"cam:run:{track_id}", "cam", track_id, 0, 0, np.array([0, 0, 50, 150.0]), 0.9,
                     last_step=track_id)
        t.add_embedding(_person(seed), 1.0)
        with stage.lock:
            cams.live[track_id], cams.step = t, track_id
        worker.request_step()
        deadline = time.monotonic() + 20
        while t.identity_id is None:
            assert time.monotonic() < deadline and worker.failure is None, worker.failure
            time.sleep(0.02)
        return t.identity_id

    try:
        first = [arrive(1, 1), arrive(2, 2)]
        assert first == [1, 2]
        client.flushall()  # the store comes back empty
        third = arrive(3, 3)
        left = worker.drain(10)
    finally:
        worker.stop()
    assert not left.events and worker.resets == 1
    assert third == 3, "identity ids must go on after the highest one seen, not start again at 1"
    assert int(client.get("g:next_identity")) == 3
    events = [json.loads(f[b"json"]) for _, f in client.xrange("g:events")]
    kinds = [e["type"] for e in events]
    assert "store.reset" in kinds, kinds
    reset = kinds.index("store.reset")
    created = [i for i, e in enumerate(events) if e["type"] == "identity.created" and e["identity_id"] == 3]
    assert created and created[0] > reset, kinds
    assert "new identity ids start after 2" in events[reset]["detail"]


def test_commit_refuses_to_write_into_another_generation(redis_server):
    client = redis_server.client()
    a = IdentityStore(client, prefix="h")
    a.open_generation()
    assert a.commit(_ops(), 0).status == "ok"
    client.delete("h:generation")  # as if the store came back empty
    res = a.commit(_ops(), a.gallery_version())
    assert res.status == "reset" and res.generation == ""
    with pytest.raises(StoreReset):
        a.check_generation()
    a.open_generation()
    client.set("h:next_identity", 0)  # a counter that went back (an old snapshot restored)
    res = a.commit(_ops(), a.gallery_version())
    assert res.status == "ok" and res.results == [2]  # never 1 again


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a whole run under load; the suite's default is 600 s
def test_a_run_whose_store_restarts_empty_announces_it(tmp_path, shared_video, shared_models):
    """A whole run: the store (no persistence) restarts empty mid-run. The run goes on, says so, publishes
    `store.reset`, and no identity id created after it was already given before."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False).start()
    proc, port = _run(tmp_path, shared_video, server.url, "reset", 300, "matcher: {min_crops: 1}\n")
    try:
        _wait_frames(port, proc, 150)
        before = [json.loads(f[b"json"]) for _, f in server.client().xrange("pipeline:events")]
        server.stop()
        server = RedisServer(tmp_path / "redis2", port=server.port, persist=False).start()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 0, err[-3000:]
        after = [json.loads(f[b"json"]) for _, f in server.client().xrange("pipeline:events")]
    finally:
        server.stop()
    ids_before = {e["identity_id"] for e in before if e["type"] == "identity.created"}
    ids_after = [e["identity_id"] for e in after if e["type"] == "identity.created"]
    assert ids_before and ids_after, (ids_before, ids_after)
    assert min(ids_after) > max(ids_before), (sorted(ids_before), ids_after)
    assert [e["type"] for e in after].count("store.reset") == 1
    assert "came back without its data" in out + err
