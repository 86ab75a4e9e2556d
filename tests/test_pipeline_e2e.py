"""End to end: real videos -> `python -m pipeline run` -> Redis -> `python -m pipeline events`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.events import EVENT_TYPES, IdentityEvent


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _check_mot(path: Path, max_frame: int) -> np.ndarray:
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    assert rows.size, f"{path.name} is empty: the camera tracked nobody"
    assert rows.shape[1] == 10
    assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= max_frame
    assert np.all(rows[:, 4:6] > 0) and np.all(rows[:, 7:] == -1)
    return rows


@pytest.mark.slow
def test_two_cameras_to_redis_events(tmp_path, shared_video, shared_models, redis_server):
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(
        f"cameras:\n  - {{id: pets, source: {shared_video['pets']}}}\n"
        f"  - {{id: room, source: {shared_video['room_h264']}, source_fps: 10, fps: 5}}\n"
        f"store: {redis_server.url}\n"
        "matcher: {min_crops: 2}\n"
    )
    proc = _run("run", cfg, "--max-frames", 40, "--output-dir", tmp_path / "out", "--mot-dir", tmp_path / "mot")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "identities" in proc.stdout and "events" in proc.stdout
    pets = _check_mot(tmp_path / "mot" / "pets.txt", 40)
    assert len(np.unique(pets[:, 1])) >= 3
    room = _check_mot(tmp_path / "mot" / "room.txt", 40)
    # fps 5 on a 10 fps source keeps every other decoded frame: MOT frames are decoded indexes + 1.
    assert set(np.unique(room[:, 0]).astype(int) % 2) == {1}
    assert (tmp_path / "out" / "pets.mp4").stat().st_size > 10_000

    events = [json.loads(line) for line in _run("events", "--store", redis_server.url, "--from-start").stdout.splitlines()]
    assert events, "the run must publish events"
    for e in events:
        assert e["type"] in EVENT_TYPES and e["schema"] == 1
        IdentityEvent.from_json(json.dumps(e))  # schema-valid
    kinds = [e["type"] for e in events]
    assert kinds.count("camera.state") >= 4  # streaming + ended per camera
    assert "identity.created" in kinds and "track.ended" in kinds
    assert {e["camera_id"] for e in events if e["type"] == "track.started"} == {"pets", "room"}, \
        "both cameras must publish their tracks"
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    assert started == ended, "every track that started must end (the run drained)"
    decided = [e for e in events if e["type"] in ("identity.created", "identity.assigned")]
    assert all(e["identity_id"] is not None for e in decided)
    # PETS people are distinct: simultaneous tracks of one camera never share an identity.
    ids = _run("identities", "--store", redis_server.url, "--json").stdout.splitlines()
    assert len(ids) == len({e["identity_id"] for e in events if e["type"] == "identity.created"})


@pytest.mark.slow
def test_broken_video_fails_only_its_camera(tmp_path, shared_video, shared_models):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: good, source: {shared_video['pets']}}}\n  - {{id: bad, source: {broken}}}\n"
                   "output: {video: false}\n")
    proc = _run("run", cfg, "--max-frames", 25, "--output-dir", tmp_path / "out", "--mot-dir", tmp_path / "mot")
    assert proc.returncode == 1, proc.stderr  # a camera failed: runtime failure, after the others finished
    assert "camera bad" in proc.stderr
    good = _check_mot(tmp_path / "mot" / "good.txt", 25)
    assert good[:, 0].max() >= 20, "the healthy camera must run to its end"
    # The embedded store is found again from the config alone.
    ev = _run("events", "--config", cfg, "--output-dir", tmp_path / "out", "--from-start")
    assert ev.returncode == 0, ev.stderr
    states = [(e["camera_id"], e["state"]) for e in map(json.loads, ev.stdout.splitlines()) if e["type"] == "camera.state"]
    assert ("bad", "failed") in states and ("good", "ended") in states


@pytest.mark.slow
def test_sigterm_drains_and_exits_0(tmp_path, shared_video, shared_models, redis_server):
    import signal
    import time

    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\nstore: {redis_server.url}\n"
                   "output: {video: false}\nmatcher: {min_crops: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), "--output-dir", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis_server.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and client.xlen("pipeline:events") < 5 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before SIGTERM: {proc.communicate()}"
    assert client.xlen("pipeline:events") >= 5, "the run never got going"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped early" in out
    events = [json.loads(f[b"json"]) for _, f in client.xrange("pipeline:events")]
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    assert started and started == ended, "SIGTERM must close every open track before exiting"
    frames = max(e["frame_index"] for e in events if e["frame_index"] is not None)
    assert frames < 790, "the run should have stopped before the end of the video"


def test_events_into_a_closed_pipe_is_not_an_error(redis_server):
    """`events | head -1`: the reader leaves early; the command ends quietly with 0, no 'error:' line."""
    client = redis_server.client()
    for i in range(5000):
        client.xadd("pipeline:events", {"json": json.dumps({"type": "track.started", "track_id": i, "schema": 1})})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "events", "--store", redis_server.url, "--from-start"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    _, err = proc.communicate(timeout=60)
    assert json.loads(first)["track_id"] == 0
    assert proc.returncode == 0, err
    assert b"error" not in err.lower() and b"Traceback" not in err, err


def test_detector_every_n_frames_tracks_the_frames_between(tmp_path, shared_video):
    """`detector.every: 3`: the detector runs on frames 1, 4, 7, ... of each camera; the frames between carry the
    tracker's motion guesses (MOT confidence 0) under the same track ids, so the output has a box for each
    tracked person on every frame."""
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: pets, source: {shared_video['pets']}}}\nstore: embedded\n"
                   "detector: {every: 3}\noutput: {video: false}\n")
    proc = _run("run", cfg, "--max-frames", 31, "--output-dir", tmp_path / "out", "--mot-dir", tmp_path / "mot",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _check_mot(tmp_path / "mot" / "pets.txt", 31)
    detected = (rows[:, 0] - 1) % 3 == 0
    assert np.all(rows[detected, 6] > 0), "frames 1, 4, 7, ... carry detector scores"
    assert np.all(rows[~detected, 6] == 0), "the frames between carry motion guesses"
    assert set(np.unique(rows[:, 0]).astype(int)) >= set(range(5, 32)), "every frame has tracked people"
    guessed_ids = set(rows[~detected, 1].astype(int))
    assert guessed_ids and guessed_ids <= set(rows[detected, 1].astype(int)), "guesses keep the detected tracks' ids"


@pytest.mark.parametrize("stagger", [True, False])
def test_a_staggered_stride_spreads_cameras_over_the_phases(tmp_path, shared_video, stagger):
    """`detector.every: 2` with `stagger` (the default): the first camera is detected on frames 1, 3, 5, ... and
    the second on 2, 4, 6, ..., so each step detects one of the two; `stagger: false` detects both on 1, 3, 5."""
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: a, source: {shared_video['pets']}}}\n"
                   f"  - {{id: b, source: {shared_video['pets']}}}\nstore: embedded\n"
                   f"detector: {{every: 2, stagger: {str(stagger).lower()}}}\noutput: {{video: false}}\n")
    proc = _run("run", cfg, "--max-frames", 21, "--output-dir", tmp_path / "out", "--mot-dir", tmp_path / "mot",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for camera, phase in (("a", 0), ("b", 1 if stagger else 0)):
        rows = _check_mot(tmp_path / "mot" / f"{camera}.txt", 21)
        frames = rows[:, 0].astype(int)
        detected = (frames - 1 + phase) % 2 == 0
        assert np.all(rows[detected, 6] > 0) and np.all(rows[~detected, 6] == 0), (camera, rows[:, [0, 6]])
        assert set(frames) >= set(range(4, 22)), camera  # every frame has its tracked people
    assert "frames a second, below" not in proc.stderr  # 7 fps at one frame in 2: the measured rate


def test_a_stride_converts_only_the_frames_it_detects_and_tracks_as_if_it_converted_all(tmp_path, shared_video,
                                                                                         monkeypatch, caplog):
    """`detector.every: 2` without annotated video: the frames between detections are decoded but never
    converted to pixels (nothing looks at them: a guessed box gives no crop), and the run is the same, track for
    track and identity for identity, as one that converts every frame; no frame due for detection comes
    without its pixels, on either phase of the stagger."""
    import logging

    from pipeline import sources
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner

    pets = str(shared_video["pets"])
    raw = {"cameras": [{"id": "a", "source": pets}, {"id": "b", "source": pets}], "store": "embedded",
           "detector": {"every": 2}, "output": {"video": False, "snapshots": False}}

    def run(name: str):
        runner = PipelineRunner(parse_config({**raw, "output": {**raw["output"], "dir": str(tmp_path / name)}}),
                                tmp_path / name, max_frames=60, mot_dir=tmp_path / name / "mot", progress=False)
        summary = runner.run()
        mot = {c: (tmp_path / name / "mot" / f"{c}.txt").read_text() for c in "ab"}
        return summary, mot, {c.camera_id: c.reader.imageless for c in runner._cams}

    with caplog.at_level(logging.ERROR, logger="pipeline"):
        summary, mot, imageless = run("skipping")
    assert "without pixels" not in caplog.text
    # a: detected at positions 0, 2, ...; b at 1, 3, ... and its first frame converted for its shape
    assert imageless == {"a": 30, "b": 29}
    monkeypatch.setattr(sources.CameraReader, "_image_wanted", lambda self: True)
    every_summary, every_mot, every_imageless = run("converting")
    assert every_imageless == {"a": 0, "b": 0}
    assert mot == every_mot and mot["a"].count("\n") > 100
    same = ("frames", "identities", "crops", "crops_check")
    assert [getattr(summary, k) for k in same] == [getattr(every_summary, k) for k in same]
    assert summary.frames == 120 and summary.identities >= 4


def test_a_stride_too_coarse_for_a_slow_camera_is_named_in_the_log(tmp_path, shared_video):
    """PETS processed at 3 frames a second with the default stride of 2 detects 1.5 frames a second, below the
    3.5 the tracker was measured at: the run says so, for that camera, and still runs."""
    from pipeline.runner import slow_stride

    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: slow, source: {shared_video['pets']}, fps: 3}}\n"
                   f"  - {{id: full, source: {shared_video['pets']}}}\nstore: embedded\noutput: {{video: false}}\n")
    proc = _run("run", cfg, "--max-frames", 6, "--output-dir", tmp_path / "out", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "frames a second, below" in line]
    assert len(warnings) == 1 and "camera slow: detector.every 2 at 3 frames a second detects 1.5" in warnings[0], \
        proc.stderr[-2000:]
    assert slow_stride(None, 25.0, 2) is None and slow_stride(None, 7.0, 2) is None
    assert slow_stride(10.0, 25.0, 3) is not None and slow_stride(5.0, 0.0, 1) is None


@pytest.mark.slow
def test_an_outfit_model_fills_the_outfit_descriptors(tmp_path, shared_video, shared_models, redis_server):
    """reid.outfit_model: the second model's feature (OMZ 0267: 256 floats) is what the store keeps as each
    outfit's descriptor, instead of the 50-float colour/texture descriptor; the run's log says which thresholds
    it set."""
    import redis

    from reid.inference.outfit import DESCRIPTOR_DIM

    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: pets, source: {shared_video['pets']}}}\n"
                   f"store: {redis_server.url}\nkey_prefix: fused\n"
                   f"reid: {{outfit_model: {shared_models['reid']}}}\nmatcher: {{min_crops: 2}}\n")
    proc = _run("run", cfg, "--max-frames", 30, "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "outfit_link_threshold 0.550" in proc.stderr
    client = redis.Redis.from_url(redis_server.url)
    sizes = {len(v) // 4 for key in client.scan_iter("fused:looks:*") for v in client.hvals(key)}
    assert sizes == {256} and DESCRIPTOR_DIM != 256


def _short_clip(source: Path, path: Path, frames: int) -> Path:
    """The first `frames` frames of `source` as an MJPG file: a camera that ends before the others."""
    import cv2

    cap = cv2.VideoCapture(str(source))
    out = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok
        if out is None:
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 7.0, frame.shape[1::-1])
        out.write(frame)
    out.release()
    cap.release()
    return path


def test_detection_a_step_ahead_gives_the_same_tracks_and_runs_beside_the_loop(tmp_path, shared_video, monkeypatch):
    """`detector.ahead` (default on): the next step's frames are detected on the detector's threads while the
    frame loop tracks this step. Every camera's tracks are those of a run without it (the same boxes, ids and
    frames, in order, for a camera that ends mid-run too), no frame is lost, and the detection really ran beside
    the tracking."""
    import threading
    import time

    import pipeline.runner as runner
    from pipeline.config import parse_config

    short = _short_clip(shared_video["pets"], tmp_path / "short.avi", 15)
    spans = {"detect": [], "track": []}
    build_detector, build_tracker = runner.detector_from_config, runner.tracker_from_config

    def recorded(kind, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spans[kind].append((threading.current_thread() is threading.main_thread(), start, time.perf_counter()))
            return out
        return call

    def detector_from_config(det):
        detector = build_detector(det)
        detector._part_net = recorded("detect", detector._part_net)
        return detector

    def tracker_from_config(cfg):
        tracker = build_tracker(cfg)
        tracker.update, tracker.predict = recorded("track", tracker.update), recorded("track", tracker.predict)
        return tracker

    ended_at = {}  # camera -> frames the first camera had finished when it ended
    end_camera = runner.PipelineRunner._end_camera

    def recording_end(self, c, *args, **kwargs):
        ended_at[c.camera_id] = self._cams[0].frames
        return end_camera(self, c, *args, **kwargs)

    monkeypatch.setattr(runner, "detector_from_config", detector_from_config)
    monkeypatch.setattr(runner, "tracker_from_config", tracker_from_config)
    monkeypatch.setattr(runner.PipelineRunner, "_end_camera", recording_end)
    rows, summaries = {}, {}
    for ahead in (True, False):
        for kind in spans:
            spans[kind].clear()
        raw = {"cameras": [{"id": "a", "source": str(shared_video["pets"])},
                           {"id": "b", "source": str(shared_video["pets"])}, {"id": "c", "source": str(short)}],
               "store": "embedded", "detector": {"ahead": ahead}, "output": {"video": False, "dir": str(tmp_path)}}
        run = runner.PipelineRunner(parse_config(raw), tmp_path / f"out-{ahead}", max_frames=40,
                                    mot_dir=tmp_path / f"mot-{ahead}", progress=False)
        summaries[ahead] = run.run()
        assert not summaries[ahead].failed
        rows[ahead] = {c: _check_mot(tmp_path / f"mot-{ahead}" / f"{c}.txt", 40) for c in "abc"}
        # each step's detection time is in that step's stage times (the metrics' per-step histogram)
        observed = run.metrics.registry.get_sample_value("pipeline_stage_seconds_sum", {"stage": "detect"})
        assert run.stage_s["detect"] > 0 and observed == pytest.approx(run.stage_s["detect"], abs=1e-6)
        # the short camera's end is taken as it comes, not once the others end (frames ahead wait for it)
        assert ended_at["c"] <= 20, ended_at
        if ahead:
            assert run.steps_ahead >= 25, f"only {run.steps_ahead} of ~40 steps were detected ahead"
            beside = [d for d in spans["detect"] if not d[0]
                      if any(t[0] and t[1] < d[2] and d[1] < t[2] for t in spans["track"])]
            assert len(beside) >= 3, "the detector's threads never ran while the frame loop tracked"
        else:
            assert run.steps_ahead == 0
    assert {c["camera"]: c["frames"] for c in summaries[True].cameras} == {"a": 40, "b": 40, "c": 15}
    for camera in "abc":
        got, want = rows[True][camera], rows[False][camera]
        assert np.all(np.diff(got[:, 0]) >= 0), f"camera {camera}: frames out of order"
        assert got.shape == want.shape and np.array_equal(got[:, :2], want[:, :2]), camera  # frames and ids
        np.testing.assert_allclose(got[:, 2:7], want[:, 2:7], atol=0.5)  # boxes and scores
    assert rows[True]["c"][:, 0].max() == 15  # the short camera's last frames were tracked, though others ran on
