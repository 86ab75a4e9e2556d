"""The embedded store's server has owners (issue 13): it runs in its own session, the last process using it
stops it, a reader never stops it under a run, an orphan left by a killed run is restarted explicitly, and
followers survive the run ending (or leave with one line when the store is gone for good)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pipeline.embedded import EmbeddedServer
from pipeline.events import IdentityEvent
from pipeline.redis_server import RedisServer, free_port
from pipeline.store import IdentityStore

PROJECT = Path(__file__).resolve().parent.parent


def _server_pids(store_dir: Path) -> list[int]:
    """redis-server processes serving `store_dir` (they run in their data directory)."""
    pids, want = [], str(store_dir.resolve())
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "redis-server" and os.readlink(p / "cwd") == want:
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def _cli(*args, **kw) -> subprocess.Popen:
    # SIGINT handled as in a terminal even when the suite itself runs in a shell's background (which starts
    # it with SIGINT ignored, and Python would then never raise KeyboardInterrupt).
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_last_user_stops_the_server_and_a_reader_never_stops_it_under_a_run(tmp_path):
    store_dir = tmp_path / "store"
    run = EmbeddedServer(store_dir).attach("run")
    pid = _server_pids(store_dir)
    assert len(pid) == 1 and os.getpgid(pid[0]) != os.getpgid(0), "the server must not share our process group"
    reader = EmbeddedServer(store_dir).attach("reader")  # shares the running server
    assert _server_pids(store_dir) == pid
    record = json.loads((store_dir / "users.json").read_text())
    assert [u["role"] for u in record["users"]] == ["run", "reader"] and record["server_pid"] == pid[0]
    reader.detach()
    assert _server_pids(store_dir) == pid, "a reader stopped the server a run uses"
    IdentityStore(run.client()).publish([IdentityEvent("camera.state", "c", state="streaming")])
    t = time.monotonic()
    run.detach()
    took = time.monotonic() - t
    assert not _server_pids(store_dir) and not (store_dir / "users.json").exists()
    assert took < 3.0, f"stopping took {took:.1f} s (SHUTDOWN must not be retried)"
    # The data were flushed: a reader alone starts it again, reads, and stops it when it leaves.
    again = EmbeddedServer(store_dir).attach("reader")
    assert [e["state"] for _, e in IdentityStore(again.client()).read_events()] == ["streaming"]
    again.detach()
    assert not _server_pids(store_dir)


def test_an_orphan_left_by_a_killed_run_is_restarted_explicitly(tmp_path, caplog):
    store_dir = tmp_path / "store"
    code = ("import sys, time; from pipeline.embedded import EmbeddedServer; "
            f"EmbeddedServer({str(store_dir)!r}).attach('run'); print('attached', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "attached"
    orphan = _server_pids(store_dir)
    proc.kill()  # SIGKILL: no chance to stop its server
    proc.wait()
    proc.stdout.close()
    assert _server_pids(store_dir) == orphan, "the server should have outlived the killed run"
    with caplog.at_level("WARNING", logger="pipeline.store"):
        mine = EmbeddedServer(store_dir).attach("run")
    assert "left running by run pid" in caplog.text and "restarting it" in caplog.text, caplog.text
    fresh = _server_pids(store_dir)
    assert fresh and fresh != orphan
    mine.detach()
    assert not _server_pids(store_dir), "the restarted server is this run's: it stops when the run leaves"


def _config(tmp_path: Path, shared_video, frames_note: str = "") -> Path:
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\noutput: {{video: false}}\n"
                   "events: {drain_timeout_s: 10}\n" + frames_note)
    return cfg


def _stored_events(cfg: Path, out: Path) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "pipeline", "events", "--config", str(cfg), "--output-dir", str(out),
                          "--from-start"], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def _every_track_ended(events: list[dict]) -> None:
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    assert started and started == ended, sorted(started ^ ended)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # whole runs under load; the suite's default is 600 s
def test_ctrl_c_of_a_follower_never_stops_the_store_under_a_run(tmp_path, shared_video, shared_models):
    """The follower starts the embedded server first; a run attaches to it; the follower gets Ctrl-C (SIGINT to
    its whole process group, as a terminal sends it) mid-run: the follower exits 0 and the run, untouched,
    delivers everything and exits 0; the server stops when the last of them leaves."""
    cfg = _config(tmp_path, shared_video)
    out = tmp_path / "out"
    (out / "store").mkdir(parents=True)
    follower = _cli("events", "--config", cfg, "--output-dir", out, "--follow", start_new_session=True)
    _wait(lambda: (out / "store" / "users.json").exists(), 300, "the follower's server")
    run = _cli("run", cfg, "--max-frames", 200, "--output-dir", out, "--no-progress")
    try:
        _wait(lambda: "track.started" in (follower.stdout.readline() or ""), 600, "the run's first track")
        os.killpg(follower.pid, signal.SIGINT)
        _, ferr = follower.communicate(timeout=60)
        assert follower.returncode == 0, ferr
        assert "Traceback" not in ferr, ferr
        assert run.poll() is None, "the run ended with the follower"
        rout, rerr = run.communicate(timeout=600)
    finally:
        for p in (follower, run):
            if p.poll() is None:
                p.kill()
    assert run.returncode == 0, rerr[-3000:]
    assert "unavailable" not in rerr and not (out / "undelivered_events.jsonl").exists(), rerr[-3000:]
    assert not _server_pids(out / "store"), "the last user left: the server must be stopped"
    _every_track_ended(_stored_events(cfg, out))


@pytest.mark.slow
@pytest.mark.timeout(1500)  # whole runs under load; the suite's default is 600 s
def test_ctrl_c_of_a_run_drains_into_the_embedded_store(tmp_path, shared_video, shared_models):
    """Ctrl-C in the terminal reaches the run's process group, not the store's own session: the run drains,
    every track it started ends in the store, nothing is left undelivered, exit 0."""
    cfg = _config(tmp_path, shared_video)
    out = tmp_path / "out"
    run = _cli("run", cfg, "--output-dir", out, "--no-progress", start_new_session=True)
    try:
        _wait(lambda: (out / "store" / "users.json").exists(), 600, "the run's store")
        peek = redis.Redis(unix_socket_path=str(out / "store" / "redis.sock"))  # not a user: just looking
        _wait(lambda: any(b"track.started" in f[b"json"] for _, f in peek.xrange("pipeline:events")), 600,
              "the run's first track")
        peek.close()
        time.sleep(3)
        os.killpg(run.pid, signal.SIGINT)
        rout, rerr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, rerr[-3000:]
    assert "stopped early" in rout and not (out / "undelivered_events.jsonl").exists(), rout + rerr[-2000:]
    assert not _server_pids(out / "store")
    _every_track_ended(_stored_events(cfg, out))


@pytest.mark.slow
@pytest.mark.timeout(1500)  # whole runs under load; the suite's default is 600 s
def test_a_follower_survives_the_end_of_the_run(tmp_path, shared_video, shared_models):
    """`events --follow` (plain and as a consumer group) attached during a run keeps following after the run
    ended (the store stays up for it), and ends 0 on Ctrl-C, stopping the store as its last user."""
    cfg = _config(tmp_path, shared_video)
    out = tmp_path / "out"
    run = _cli("run", cfg, "--max-frames", 60, "--output-dir", out, "--no-progress")
    followers = []
    try:
        _wait(lambda: (out / "store" / "users.json").exists(), 600, "the run's store")
        followers = [_cli("events", "--config", cfg, "--output-dir", out, "--follow", "--from-start",
                          start_new_session=True),
                     _cli("events", "--config", cfg, "--output-dir", out, "--follow", "--from-start",
                          "--group", "g", "--consumer", "c1", start_new_session=True)]
        rout, rerr = run.communicate(timeout=600)
        assert run.returncode == 0, rerr[-3000:]
        time.sleep(3)
        assert all(f.poll() is None for f in followers), [f.communicate() for f in followers if f.poll() is not None]
        assert _server_pids(out / "store"), "the store stopped under its followers"
        for f in followers:
            os.killpg(f.pid, signal.SIGINT)
        results = [f.communicate(timeout=60) for f in followers]
    finally:
        for p in [run, *followers]:
            if p.poll() is None:
                p.kill()
    for f, (fout, ferr) in zip(followers, results):
        assert f.returncode == 0 and "Traceback" not in ferr, ferr
        kinds = [json.loads(line)["type"] for line in fout.splitlines()]
        assert kinds.count("camera.state") >= 2 and "track.ended" in kinds
    _wait(lambda: not _server_pids(out / "store"), 20, "the last follower to stop the store")


def test_a_follower_reconnects_and_leaves_with_one_line_when_the_store_is_gone(tmp_path):
    """Following a store URL: the server restarts (data kept) and the follower goes on where it was; then
    it goes away for good and the follower says so in one line and exits 0, no traceback."""
    port = free_port()
    server = RedisServer(tmp_path / "redis", port=port, persist=True).start()
    store = IdentityStore(server.client())
    store.publish([IdentityEvent("camera.state", "a", state="streaming")])
    follower = _cli("events", "--store", server.url, "--follow", "--from-start", "--reconnect-s", "3")
    plain_group = _cli("events", "--store", server.url, "--follow", "--from-start", "--group", "g", "--consumer",
                       "c", "--reconnect-s", "3")
    try:
        assert json.loads(follower.stdout.readline())["camera_id"] == "a"
        assert json.loads(plain_group.stdout.readline())["camera_id"] == "a"
        # The group consumer acks after printing; an event still pending when the server stops is delivered
        # again after the restart (at-least-once, pipeline/consumer.py). Stop only once the ack has landed.
        _wait(lambda: server.client().xpending(store.stream, "g")["pending"] == 0, 10, "the group's ack of 'a'")
        server.stop()
        time.sleep(1)
        server = RedisServer(tmp_path / "redis", port=port, persist=True).start()
        IdentityStore(server.client()).publish([IdentityEvent("camera.state", "b", state="streaming")])
        assert json.loads(follower.stdout.readline())["camera_id"] == "b"
        assert json.loads(plain_group.stdout.readline())["camera_id"] == "b"
        server.stop()
        results = [p.communicate(timeout=60) for p in (follower, plain_group)]
    finally:
        server.stop()
        for p in (follower, plain_group):
            if p.poll() is None:
                p.kill()
    for p, (fout, ferr) in zip((follower, plain_group), results):
        assert p.returncode == 0, ferr
        lines = [line for line in ferr.splitlines() if line.strip()]
        assert lines == [f"the store at {server.url} has been unreachable for 3 s: stopped following"], ferr
        assert fout == "", fout  # nothing printed twice
