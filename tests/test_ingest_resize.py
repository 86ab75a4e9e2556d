"""A camera that comes back from a reconnect at another resolution (anchors §3.2: "shape changed after
reconnect"): its tracker restarts, its tracks end cleanly, the annotated video keeps one size, nothing crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import pytest

from tests.rtsp_server import RtspServer

# GStreamer's RTSP server is required: the tests fail, naming what is missing, without it.
pytestmark = [pytest.mark.usefixtures("gst_rtsp_server"), pytest.mark.slow]


def _wait(client, predicate, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        events = [json.loads(f[b"json"]) for _, f in client.xrange("pipeline:events")]
        if predicate(events):
            return events
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the pipeline")


def test_reconnect_at_another_resolution_restarts_the_tracker(tmp_path, shared_video, shared_models, redis_server):
    server = RtspServer(shared_video["pets"], fps=4, width=384).start()
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(
        f"cameras:\n  - {{id: door, source: '{server.url}', read_timeout_s: 2, open_timeout_s: 5,\n"
        "      reconnect: {initial_s: 0.25, max_s: 1.0, reset_after_s: 2.0}}\n"
        f"store: {redis_server.url}\ntracker: {{type: botsort}}\nmatcher: {{min_crops: 1}}\n"
        "output: {video: true}\n")  # a live camera's annotated video only when asked for (default: files only)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), "--output-dir", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis_server.client()
    try:
        _wait(client, lambda ev: sum(e["type"] == "track.started" for e in ev) >= 2, proc)
        server.kill()
        server.width = 256  # the camera comes back with another stream profile
        time.sleep(1.0)
        server.start()

        def resumed(ev):
            streaming = [i for i, e in enumerate(ev) if e["type"] == "camera.state" and e["state"] == "streaming"]
            return len(streaming) >= 2 and sum(e["type"] == "track.started" for e in ev[streaming[1]:]) >= 1
        _wait(client, resumed, proc, timeout=90)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert proc.returncode == 0, err
    assert "frame size changed from 384x288 to 256x192" in err, err
    assert "camera door: output.video true writes this live camera's annotated video as one MP4" in err, err
    events = [json.loads(f[b"json"]) for _, f in client.xrange("pipeline:events")]
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    assert started == ended
    video = cv2.VideoCapture(str(out / "door.mp4"))
    sizes = set()
    while True:
        ok, frame = video.read()
        if not ok:
            break
        sizes.add(frame.shape)
    assert sizes == {(288, 384, 3)}, sizes
