"""The dashboard's JSON API and pages (issue 18) on a real Redis: identities with one snapshot per outfit and
merged ones marked, filtered events, the SSE feed delivering a new event, the run going on when its port is
taken. The browser test (tests/test_dashboard_browser.py) drives the same pages in Chromium."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from pipeline.dashboard.app import create_app
from pipeline.dashboard.data import StoreView
from pipeline.dashboard.server import DashboardServer
from pipeline.dashboard.snapshots import SNAPSHOT_HEIGHT, SnapshotKeeper
from pipeline.events import IdentityEvent
from pipeline.store import IdentityStore, StoreOp


def _crop(colour: tuple[int, int, int], h: int = 300, w: int = 120) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = colour
    return img


def _gallery(client) -> IdentityStore:
    """Identities 1 and 2 (2 merged into 1), 3 with two outfits; snapshots written the way a run writes them."""
    store = IdentityStore(client)
    v = np.eye(4, dtype=np.float32)
    for i in range(3):
        store.create_identity(v[i], "gate", ts=1000.0 + i)
    ops = StoreOp()
    ops.outfit(3, v[3], None, "hall", 1010.0)
    assert store.commit(ops, store.gallery_version()).status == "ok"
    ops = StoreOp()
    ops.merge(1, 2, 1020.0)
    assert store.commit(ops, store.gallery_version()).status == "ok"

    keeper = SnapshotKeeper(client, "pipeline").start()
    keeper.offer("gate:r:1", "gate", _crop((0, 0, 255)), 300.0, 1.5)  # red (BGR), the best crop of track 1
    keeper.offer("gate:r:1", "gate", _crop((0, 255, 0), h=100), 100.0, 1.6)  # worse: not kept
    keeper.offer("gate:r:2", "gate", _crop((255, 0, 0)), 200.0, 2.0)
    keeper.offer("hall:r:5", "hall", _crop((0, 255, 255)), 250.0, 7.25)
    keeper.offer("gate:r:9", "gate", _crop((9, 9, 9)), 999.0, 3.0)  # a track never decided: no snapshot
    events = [
        IdentityEvent("camera.state", "gate", state="streaming"),
        IdentityEvent("identity.created", "gate", 1, "gate:r:1", 1, None, [0, 0, 10, 30], 15, 1, video_time_s=1.5),
        IdentityEvent("identity.created", "gate", 2, "gate:r:2", 2, None, [0, 0, 10, 30], 20, 1, video_time_s=2.0),
        IdentityEvent("identity.created", "gate", 3, "gate:r:3", 3, None, [0, 0, 10, 30], 21, 1),
        IdentityEvent("identity.outfit_changed", "hall", 5, "hall:r:5", 3, 0.8, [0, 0, 10, 30], 72, 2, True,
                      video_time_s=7.2),
        IdentityEvent("identity.merged", "gate", 2, "gate:r:2", 1, 0.9, [0, 0, 10, 30], 40, None, merged_from=2),
        IdentityEvent("track.ended", "gate", 1, "gate:r:1", 1, None, [0, 0, 10, 30], 50, 1),
    ]
    store.publish(events)
    keeper.on_events(events)
    keeper.close()
    assert keeper.written == 4 and keeper.dropped == 0  # gate:r:1 twice (decided, ended), r:2, r:5
    return store


def test_identities_snapshots_and_merges(redis_client):
    _gallery(redis_client)
    api = TestClient(create_app(StoreView(redis_client)))
    body = api.get("/api/identities").json()
    assert body["count"] == 2 and body["merged"] == 1, "one identity count: merged identities are not counted"
    rows = {r["identity_id"]: r for r in body["identities"]}
    assert [r["identity_id"] for r in body["identities"]][-1] == 2, "merged identities come last"
    assert rows[2]["status"] == "merged" and rows[2]["merged_into"] == 1
    assert rows[1]["status"] == "active" and rows[1]["merged_from"] == [2]
    assert rows[1]["outfits_count"] == 1, "a merge is shown as a merge, not as an extra outfit"
    assert rows[3]["outfits_count"] == 2
    # one snapshot per (identity, outfit); identity 3 was seen in two outfits, on two cameras
    assert [o["outfit_id"] for o in rows[3]["outfits"]] == [2]  # outfit 1 had no crop
    assert rows[3]["outfits"][0]["cameras"] == ["hall"]
    assert rows[3]["outfits"][0]["snapshot_video_time_s"] == 7.25
    o = rows[1]["outfits"][0]
    assert o["snapshot_url"] == "/api/identities/1/outfits/1/snapshot.jpg" and o["snapshot_camera"] == "gate"
    r = api.get(o["snapshot_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] <= SNAPSHOT_HEIGHT
    b, g, rd = img[img.shape[0] // 2, img.shape[1] // 2]
    assert rd > 200 and g < 60, "the best (tallest) crop is kept, not a later worse one"
    assert api.get("/api/identities/1/outfits/7/snapshot.jpg").status_code == 404
    assert api.get(rows[2]["outfits"][0]["snapshot_url"]).status_code == 200, "a merged identity keeps its picture"


def test_identities_cli_counts_like_the_dashboard(redis_server, redis_client, capsys):
    """`identities`: the same count as the run summary and the dashboard (merged ones apart, listed last), a merge
    shown as `merged_from`/`merged_into`, not as an outfit."""
    from pipeline.cli import main

    _gallery(redis_client)
    assert main(["identities", "--store", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "2 identities (+1 merged into others" in out
    assert main(["identities", "--store", redis_server.url, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["identity_id"] for r in rows] == [1, 3, 2]
    assert rows[0]["outfits"] == 1 and rows[0]["merged_from"] == [2] and rows[0]["status"] == "active"
    assert rows[1]["outfits"] == 2
    assert rows[2]["merged_into"] == 1 and rows[2]["status"] == "merged"


def test_events_filters_and_pages(redis_client):
    _gallery(redis_client)
    api = TestClient(create_app(StoreView(redis_client)))
    events = api.get("/api/events").json()["events"]
    assert [e["type"] for e in events][:2] == ["track.ended", "identity.merged"], "newest first"
    assert all(e["stream_id"] for e in events)
    only = api.get("/api/events", params={"camera": "hall"}).json()["events"]
    assert [e["type"] for e in only] == ["identity.outfit_changed"]
    by_id = api.get("/api/events", params={"identity": 2}).json()["events"]
    assert {e["type"] for e in by_id} == {"identity.created", "identity.merged"}, "an identity's merge is its event"
    typed = api.get("/api/events", params={"type": "identity.created", "limit": 2}).json()["events"]
    assert [e["identity_id"] for e in typed] == [3, 2]
    assert api.get("/api/events", params={"identity": "x"}).status_code == 400
    cams = api.get("/api/cameras").json()
    assert cams["live"] is False and [c["camera_id"] for c in cams["cameras"]] == ["gate"]
    assert cams["cameras"][0]["state"] == "streaming"
    for path in ("/cameras", "/identities", "/events"):
        page = api.get(path)
        assert page.status_code == 200 and "/static/app.js" in page.text
    assert "EventSource" in api.get("/static/app.js").text
    assert api.get("/static/../config.py").status_code == 404


def test_event_stream_delivers_new_events(redis_client):
    """SSE: an event published after the page connected reaches it; filters apply to the stream."""
    store = IdentityStore(redis_client)
    store.publish([IdentityEvent("track.started", "gate", 1, "gate:r:1", frame_index=1)])  # before: not sent
    stopping = threading.Event()
    server = DashboardServer(create_app(StoreView(redis_client), stopping=stopping), "127.0.0.1", 0, stopping)
    port = server.start()
    try:
        def later():
            time.sleep(1.0)
            store.publish([IdentityEvent("track.started", "hall", 2, "hall:r:2", frame_index=5),
                           IdentityEvent("identity.created", "hall", 2, "hall:r:2", 7, None, None, 9, 1,
                                         video_time_s=0.9)])

        threading.Thread(target=later, daemon=True).start()
        got = []
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events/stream", params={"camera": "hall"},
                          timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == 2:
                        break
        assert [e["type"] for e in got] == ["track.started", "identity.created"]
        assert got[1]["identity_id"] == 7 and got[1]["video_time_s"] == 0.9
    finally:
        t = time.monotonic()
        server.stop()
        assert time.monotonic() - t < 4, "stopping the dashboard must not wait for open streams"


def test_taken_port_is_refused_at_start(redis_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            DashboardServer(create_app(StoreView(redis_client)), "127.0.0.1", s.getsockname()[1]).start()


@pytest.mark.slow
def test_run_goes_on_when_the_dashboard_port_is_taken(tmp_path, shared_video, shared_models):
    """...and then: `events`/`identities --config` find the run's store without --output-dir; events carry
    video_time_s (PETS: 10 fps in its container)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "cams.yaml"
        cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\n"
                       f"dashboard: {{port: {port}}}\noutput: {{video: false}}\n")
        proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(cfg), "--max-frames", "8",
                               "--output-dir", str(tmp_path / "out"), "--no-progress"],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "dashboard" in ln]
    assert len(lines) == 1 and f"dashboard not served on 127.0.0.1:{port}" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "frames 8 " in proc.stdout
    logged = [ln for ln in proc.stderr.splitlines() if re.search(r" (INFO|WARNING|ERROR) [\w.]+: ", ln)]
    assert logged and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ", ln)
                          for ln in logged), "log lines start with their UTC time"
    pm = [sys.executable, "-m", "pipeline"]
    ev = subprocess.run(pm + ["events", "--config", str(cfg), "--from-start"], capture_output=True, text=True,
                        timeout=60)
    assert ev.returncode == 0, ev.stderr
    events = [json.loads(line) for line in ev.stdout.splitlines()]
    framed = [e for e in events if e["frame_index"] is not None]
    assert framed and all(e["video_time_s"] == round(e["frame_index"] / 10, 3) for e in framed)
    assert all(e["video_time_s"] is None for e in events if e["type"] == "camera.state")
    ids = subprocess.run(pm + ["identities", "--config", str(cfg), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert ids.returncode == 0, ids.stderr


def test_model_paths_resolve_against_the_config_file(tmp_path, monkeypatch, shared_models, shared_video, capsys):
    """`reid.model`/`detector.model` relative paths resolve like camera sources: beside the YAML, whatever the
    working directory."""
    from pipeline.cli import main
    from pipeline.config import load_config

    conf = tmp_path / "site"
    (conf / "weights").mkdir(parents=True)
    (conf / "weights" / "my-reid.onnx").symlink_to(shared_models["reid"])
    (conf / "weights" / "my-det.onnx").symlink_to(shared_models["yolox"])
    cfg = conf / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: a, source: {shared_video['pets']}}}]\n"
                   "reid: {model: weights/my-reid.onnx, outfit_model: weights/my-reid.onnx}\n"
                   "detector: {model: weights/my-det.onnx}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(cfg)
    assert config.reid.model == str((conf / "weights" / "my-reid.onnx").resolve())
    assert config.reid.outfit_model == config.reid.model
    assert config.detector.model == str((conf / "weights" / "my-det.onnx").resolve())
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
    # a bare name that is not beside the YAML is still searched in the model folders
    cfg.write_text(f"cameras: [{{id: a, source: {shared_video['pets']}}}]\n")
    assert load_config(cfg).reid.model == "person-reidentification-retail-0288-224x112-int8.xml"
    # a missing outfit model is one error line naming its key
    cfg.write_text(f"cameras: [{{id: a, source: {shared_video['pets']}}}]\nreid: {{outfit_model: nowhere.onnx}}\n")
    assert main(["validate", str(cfg)]) == 2
    assert "reid.outfit_model" in capsys.readouterr().err


def test_read_only_dashboard_command(redis_server, redis_client):
    """`python -m pipeline dashboard --store URL`: serves the store's identities and events read-only, ends with
    0 on SIGTERM; a taken port is one `error:` line and exit 2."""
    import signal

    _gallery(redis_client)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "dashboard", "--store", redis_server.url, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        base = m.group(1)
        body = httpx.get(base + "api/identities", timeout=10).json()
        assert body["count"] == 2 and body["merged"] == 1
        cams = httpx.get(base + "api/cameras", timeout=10).json()
        assert cams["live"] is False and cams["cameras"][0]["camera_id"] == "gate"
        page = httpx.get(base + "identities", timeout=10).text
        assert redis_server.url not in page and "redis://" not in json.dumps(body), "no store URL in pages or API"
        port = int(base.rsplit(":", 1)[1].strip("/"))
        taken = subprocess.run([sys.executable, "-m", "pipeline", "dashboard", "--store", redis_server.url,
                                "--port", str(port)], capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and taken.stderr.startswith("error: <command line>: --port: cannot serve") \
            and taken.stderr.count("\n") == 1, taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
