"""detector.motion_gate: a camera that follows no one skips due frames while its picture has not changed since the
detector last looked; the people it tracks, and when it first finds them, stay those of a run that detects all."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.motion import MotionGate, thumbnail

# people-detection.264 (the Intel room, 10 fps): with every frame of its first 400 detected, nobody is tracked on
# frames 78-183 and 254-343 (the run's MOT file), and people are on 184-253.
EMPTY_FRAME, PERSON_FRAME = 130, 200


def _frames(path, wanted: set[int]) -> dict[int, np.ndarray]:
    cap, out, index = cv2.VideoCapture(str(path)), {}, 0
    while len(out) < len(wanted):
        ok, frame = cap.read()
        assert ok, f"{path} ended before frame {max(wanted)}"
        index += 1
        if index in wanted:
            out[index] = frame
    cap.release()
    return out


@pytest.fixture(scope="module")
def room(shared_video) -> dict[int, np.ndarray]:
    return _frames(shared_video["room_h264"], {EMPTY_FRAME, EMPTY_FRAME + 2, PERSON_FRAME})


def test_an_unchanged_empty_room_is_skipped_until_the_detector_must_look_again(room):
    gate = MotionGate(level=20, area=0.001, max_skip_s=2.0)
    empty, later = room[EMPTY_FRAME], room[EMPTY_FRAME + 2]

    def looks(image, t, position, following=False):
        needed = gate.needs_detection(image, t, following, position)
        gate.settled(position)  # the tracker has had this frame before the next is decided
        return needed

    assert looks(empty, 0.0, 0), "no reference yet: the detector looks"
    assert not looks(later, 0.2, 1), "the same empty room 0.2 s later"
    assert not looks(later, 1.9, 2)
    assert looks(later, 2.0, 3), "max_skip_s: the detector looks at least this often"
    assert not looks(empty, 2.2, 4)
    assert looks(later, 1.0, 5), "a clock that went back: look"
    assert gate.skipped == 3
    assert looks(later, 1.2, 6, following=True), "a camera that follows someone is always detected"
    assert looks(room[PERSON_FRAME], 1.4, 7), "a person walked in"
    assert looks(cv2.resize(later, (384, 216)), 1.6, 8), "another resolution"
    assert gate.skipped == 3


def test_after_a_change_the_next_frame_is_detected_while_the_changed_one_is_still_being_detected(room):
    """Detection a step ahead with every frame due: frame p+1 is decided before the tracker has frame p's
    detections. After a changed frame the next is detected too, but only that one: an empty room is still
    skipped once the changed frame's detections are in."""
    gate = MotionGate(level=20, area=0.001, max_skip_s=3600)
    empty, later, person = room[EMPTY_FRAME], room[EMPTY_FRAME + 2], room[PERSON_FRAME]
    assert gate.needs_detection(empty, 0.0, False, 0)
    gate.settled(0)
    assert not gate.needs_detection(later, 0.1, False, 1)
    assert gate.needs_detection(person, 0.2, False, 2), "changed"
    assert gate.needs_detection(person, 0.3, False, 3), "frame 2's detections are not in yet"
    gate.settled(2)
    assert not gate.needs_detection(person, 0.4, False, 4), "frame 2 found no one to follow: nothing changed since"
    gate.settled(3)
    gate.settled(4)
    assert not gate.needs_detection(person, 0.5, False, 5)
    assert gate.skipped == 3


def test_a_person_walking_in_slowly_adds_up_against_the_last_frame_the_detector_saw(room):
    """Ten frames that each move a tenth of the way from the empty room to the room with a person: no frame differs
    from the one before by the level, yet the detector is asked to look before the person is fully in (the
    reference is the frame it last saw, not the previous frame)."""
    gate = MotionGate(level=20, area=0.001, max_skip_s=3600)
    empty, person = room[EMPTY_FRAME].astype(np.float32), room[PERSON_FRAME].astype(np.float32)
    steps = [np.clip(empty + (person - empty) * k / 10, 0, 255).astype(np.uint8) for k in range(11)]
    looked = []
    for k, frame in enumerate(steps):
        if gate.needs_detection(frame, 0.1 * k, False, k):
            looked.append(k)
        gate.settled(k)  # the detector found no one: the next frame is decided on the picture alone
    assert looked[0] == 0 and len(looked) > 1 and looked[1] < 10, looked
    # what a comparison with the previous frame would have seen: no step changes enough cells
    thumbs = [thumbnail(f) for f in steps]
    assert max(gate.changed_share(b, a) for a, b in zip(thumbs, thumbs[1:])) < 0.001


def _run(tmp_path, shared_video, name: str, gate: bool, frames: int = 400):
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner

    raw = {"cameras": [{"id": "room", "source": str(shared_video["room_h264"]), "source_fps": 10}],
           "store": "embedded", "detector": {"motion_gate": {"enabled": gate}},
           "output": {"video": False, "snapshots": False, "dir": str(tmp_path / name)}}
    runner = PipelineRunner(parse_config(raw), tmp_path / name, max_frames=frames, mot_dir=tmp_path / name / "mot",
                            progress=False)
    summary = runner.run()
    return summary, (tmp_path / name / "mot" / "room.txt").read_text(), runner.metrics.text()


@pytest.mark.slow
def test_the_gate_skips_the_empty_rooms_frames_and_tracks_everyone_as_detecting_all(tmp_path, shared_video):
    """The room camera's first 400 frames at one frame in 2: with the gate, every track is the same box for box
    and frame for frame as with every due frame detected (nobody is found later), and 30 % or more of the due
    frames are skipped (the empty room between visits); the count is in the summary and the metrics."""
    gated, gated_mot, metrics = _run(tmp_path, shared_video, "gated", True)
    plain, plain_mot, _ = _run(tmp_path, shared_video, "plain", False)
    assert gated.frames == plain.frames == 400
    assert gated_mot == plain_mot and gated_mot.count("\n") > 150, "the same tracks, found on the same frames"
    assert gated.identities == plain.identities >= 3
    (g,), (p,) = gated.cameras, plain.cameras
    assert p["detected"] == 200 and p["detections_skipped_still"] == 0
    assert g["detected"] + g["detections_skipped_still"] == 200
    assert g["detections_skipped_still"] >= 60, g  # 76 with the defaults
    assert f'pipeline_camera_detections_skipped_total{{camera="room"}} {float(g["detections_skipped_still"])}' \
        in metrics


def test_a_still_person_is_detected_on_every_due_frame_and_a_still_empty_room_once_in_max_skip(tmp_path, room,
                                                                                                shared_video):
    """A clip of the empty room held still for 4 s, then of a person standing still in it for 4 s (10 fps, one
    frame in 2 due): the empty part is detected at 0, 1, 2 and 3 s only (max_skip_s 1 s, the default), the person
    from the frame they appear on and on every due frame after, as long as the tracker follows them (a still
    picture that is followed is never skipped), their track's boxes all from the detector."""
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner

    clip = tmp_path / "still.mp4"
    h, w = room[EMPTY_FRAME].shape[:2]
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for frame in [room[EMPTY_FRAME]] * 40 + [room[PERSON_FRAME]] * 40:
        out.write(frame)
    out.release()
    raw = {"cameras": [{"id": "still", "source": str(clip)}], "store": "embedded",
           "output": {"video": False, "snapshots": False, "dir": str(tmp_path / "out")}}
    runner = PipelineRunner(parse_config(raw), tmp_path / "out", mot_dir=tmp_path / "mot", progress=False)
    (cam,) = runner.run().cameras
    assert cam["frames"] == 80
    assert (cam["detected"], cam["detections_skipped_still"]) == (24, 16), cam
    rows = np.loadtxt(tmp_path / "mot" / "still.txt", delimiter=",", ndmin=2)
    assert rows.size and rows[:, 0].min() >= 41, "nobody before the person appears"
    due = (rows[:, 0].astype(int) - 1) % 2 == 0
    assert np.all(rows[due, 6] > 0), "on every due frame the person's box is the detector's, not a guess"
