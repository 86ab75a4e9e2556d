"""The run's clock (pipeline/clock.py): transit times between cameras are read in video seconds when recorded
files are replayed at decoding speed, so `matcher.topology` means the same whatever the machine's speed.

The end-to-end test plays a scripted two-camera scene (`synth scenes --script`: one person walks through camera
1, then camera 2 in the same outfit) with `source_fps: 2` declared for the 10 fps files, so the walk between the
cameras lasts five times longer in video time (about 10 s) than the run takes to decode it (1-3 s on a CPU).
A transit window of 6-30 s must then link the person (the video clock) and one of 15-30 s must not (the
window is applied at all). On the wall clock the first run would split the person (the decoded gap is under 6 s):
set `clock: wall` in `_run` to see that test fail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.clock import RunClock, use_video_clock
from pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


def test_video_clock_times_frames_by_their_place_in_the_file_and_now_waits_for_the_slowest_camera():
    clock = RunClock(video=True, origin=1000.0)
    assert clock.now() == 1000.0
    assert clock.frame_time("a", 2.5) == 1002.5
    assert clock.frame_time("b", 0.5) == 1000.5
    assert clock.now() == 1000.5  # camera b is behind: its tracklets are not older than they are
    clock.frame_time("b", 4.0)
    assert clock.now() == 1002.5
    clock.camera_ended("a")
    assert clock.now() == 1004.0
    clock.camera_ended("b")
    assert clock.now() == 1004.0  # the run's last instant, never back to the origin
    clock.frame_time("c", 1.0)
    assert clock.now() == 1004.0  # monotonic


def test_a_replay_continues_after_the_times_an_earlier_replay_left_in_the_store():
    clock = RunClock(video=True, origin=1000.0)
    assert clock.continue_after(1030.0) == 30.0  # an earlier replay decoded 30 s of video faster than real time
    assert clock.frame_time("b", 0.0) == 1030.0 and clock.now() == 1030.0
    clock = RunClock(video=True, origin=1000.0)
    clock.continue_after(990.0)  # older times change nothing
    clock.continue_after(None)
    assert clock.frame_time("b", 1.0) == 1001.0
    wall = RunClock(video=False)
    wall.continue_after(wall.origin + 3600)  # the wall clock is never moved
    assert abs(wall.now() - time.time()) < 5


def test_wall_clock_is_the_wall_clock():
    clock = RunClock(video=False)
    before = time.time()
    t = clock.frame_time("a", 123.0)
    assert before <= t <= time.time() and before <= clock.now() <= time.time() + 1


@pytest.mark.parametrize("mode, sources, video", [
    ("auto", [{"source": "a.mp4"}, {"source": "b.avi"}], True),
    ("auto", [{"source": "a.mp4", "realtime": True}, {"source": "b.avi"}], False),
    ("auto", [{"source": "a.mp4"}, {"source": "rtsp://cam/stream"}], False),
    ("auto", [{"source": 0}], False),
    ("wall", [{"source": "a.mp4"}], False),
    ("video", [{"source": "rtsp://cam/stream"}], True),
])
def test_which_clock_a_config_gets(mode, sources, video):
    cfg = PipelineConfig.model_validate({"cameras": [{"id": f"c{i}", **s} for i, s in enumerate(sources)],
                                         "matcher": {"clock": mode}})
    assert use_video_clock(cfg.matcher.clock, cfg.cameras) is video


def test_an_unknown_clock_is_a_config_error():
    with pytest.raises(ValueError, match="clock"):
        PipelineConfig.model_validate({"cameras": [{"id": "a", "source": "a.mp4"}], "matcher": {"clock": "sundial"}})


SCRIPT = {"people": 1, "outfits_per_person": 1,
          "visits": [{"person": 1, "camera": 1, "outfit": 1, "start": 0},
                     {"person": 1, "camera": 2, "outfit": 1, "start": 95}]}
DECLARED_FPS = 2.0  # the files are 10 fps: video time runs 5x slower than the frames


@pytest.fixture(scope="module")
def walk_scene(tmp_path_factory) -> tuple[Path, float]:
    work = tmp_path_factory.mktemp("clock")
    (work / "plan.yaml").write_text(yaml.safe_dump(SCRIPT))
    subprocess.run([sys.executable, "-m", "synth", "scenes", "--preset", "tiny", "--seed", "4", "--set", "n_cameras=2",
                    "--set", "frames=180", "--set", "occluders=0", "--script", str(work / "plan.yaml"),
                    "--out", str(work / "scene")], cwd=ROOT, check=True, capture_output=True, timeout=300)
    seen = {s["camera"]: s for s in json.loads((work / "scene" / "sightings.json").read_text())["sightings"]}
    gap_frames = seen["cam02"]["first_frame"] - seen["cam01"]["last_frame"]
    assert gap_frames >= 10, f"the script must leave a walk between the cameras: {seen}"
    return work / "scene", gap_frames / DECLARED_FPS


def _run(scene: Path, out: Path, min_s: float, max_s: float, clock: str = "auto") -> tuple[set[int], str]:
    cams = yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]
    cfg = {"cameras": [{**c, "source": str((scene / c["source"]).resolve()), "source_fps": DECLARED_FPS} for c in cams],
           "output": {"video": False},
           "matcher": {"clock": clock, "min_crops": 2,
                       "topology": {"transits": [{"cameras": ["cam01", "cam02"], "min_s": min_s, "max_s": max_s}]}}}
    out.mkdir(parents=True)
    (out / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(out / "run.yaml"), "--output-dir", str(out),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = subprocess.run([sys.executable, "-m", "pipeline", "events", "--config", str(out / "run.yaml"),
                             "--output-dir", str(out), "--from-start"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    events = [json.loads(x) for x in listed.stdout.splitlines()]
    into = {e["merged_from"]: e["identity_id"] for e in events if e["type"] == "identity.merged"}

    def final(i: int) -> int:
        while i in into:
            i = into[i]
        return i
    ended = [e for e in events if e["type"] == "track.ended" and e.get("identity_id") is not None]
    per_camera: dict[str, set[int]] = {}
    for e in ended:
        per_camera.setdefault(e["camera_id"], set()).add(final(e["identity_id"]))
    assert set(per_camera) == {"cam01", "cam02"}, f"the person must be tracked in both cameras: {ended}"
    return {i for ids in per_camera.values() for i in ids}, proc.stderr


@pytest.mark.slow
def test_transit_windows_are_read_in_video_seconds_when_files_replay(walk_scene, tmp_path):
    scene, gap_s = walk_scene
    assert 8 <= gap_s <= 25, gap_s  # the walk in declared video seconds (frames / 2 fps)
    inside, log = _run(scene, tmp_path / "inside", min_s=6.0, max_s=30.0)
    assert "matcher clock: video" in log
    assert len(inside) == 1, f"one person, walking {gap_s:.1f} video seconds between the cameras: one identity {inside}"
    too_long, _ = _run(scene, tmp_path / "too-long", min_s=gap_s + 8, max_s=90.0)
    assert len(too_long) == 2, f"a walk shorter than the window's minimum cannot be one person: {too_long}"
