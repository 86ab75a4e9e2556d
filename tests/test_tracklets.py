"""Which track crops get embedded: the crop gate's rate, quality rules and per-track cap."""

from __future__ import annotations

import numpy as np

from pipeline.tracklets import CameraTracklets, CropGate
from trackers.base import Tracks

FRAME = (576, 768, 3)


def _tracks(boxes: dict[int, tuple[float, float, float, float]], score: float = 0.9, guessed: bool = False) -> Tracks:
    """`guessed`: the boxes the motion model put there, matched to no detection (det_index -1)."""
    ids = sorted(boxes)
    return Tracks(np.array([boxes[i] for i in ids], np.float32).reshape(-1, 4), np.array(ids, np.int64),
                  np.full(len(ids), score, np.float32), np.zeros(len(ids), np.int32),
                  np.full(len(ids), -1) if guessed else np.arange(len(ids)))


def _crops_taken(gate: CropGate, seconds: float, fps: float = 10.0, boxes=None, score: float = 0.9) -> dict[int, int]:
    """Feed `seconds` of a steady scene; embed every requested crop; crops per track id."""
    cams = CameraTracklets("cam", "run", gate, max_lost_frames=30)
    boxes = boxes or {1: (100, 100, 160, 260), 2: (300, 120, 350, 250)}
    taken: dict[int, int] = {}
    for f in range(int(seconds * fps)):
        _, requests = cams.update(f, f, f / fps, _tracks(boxes, score), FRAME)
        for r in requests:
            r.tracklet.add_embedding(np.ones(4, np.float32), r.weight)
            taken[r.tracklet.track_id] = taken.get(r.tracklet.track_id, 0) + 1
    return taken


def test_crops_follow_the_rate_per_track():
    assert _crops_taken(CropGate(crops_per_second=2.0), seconds=10) == {1: 20, 2: 20}
    assert _crops_taken(CropGate(crops_per_second=0.5), seconds=10) == {1: 5, 2: 5}


def test_a_track_stops_taking_crops_at_its_cap():
    assert _crops_taken(CropGate(crops_per_second=2.0, max_crops_per_track=6), seconds=10) == {1: 6, 2: 6}
    # The cap is per track: a track that starts later still gets its own crops.
    cams = CameraTracklets("cam", "run", CropGate(crops_per_second=10.0, max_crops_per_track=3), max_lost_frames=30)
    counts: dict[int, int] = {}
    for f in range(20):
        boxes = {1: (100, 100, 160, 260)} | ({2: (300, 120, 350, 250)} if f >= 10 else {})
        for r in cams.update(f, f, f / 10, _tracks(boxes), FRAME)[1]:
            r.tracklet.add_embedding(np.ones(4, np.float32), r.weight)
            counts[r.tracklet.track_id] = counts.get(r.tracklet.track_id, 0) + 1
    assert counts == {1: 3, 2: 3}


def test_small_low_score_and_cut_boxes_are_not_embedded():
    gate = CropGate(min_height=64, min_confidence=0.4)
    assert _crops_taken(gate, 2, boxes={1: (100, 100, 130, 150)}) == {}  # 50 px tall
    assert _crops_taken(gate, 2, score=0.3) == {}  # below min_confidence (and a motion guess has score 0)
    assert _crops_taken(gate, 2, boxes={1: (0, 100, 60, 260)}) == {}  # touches the frame border


def test_a_guessed_box_never_gives_a_crop_whatever_its_score():
    """A frame the detector skipped (detector.every) carries the motion model's boxes: the pipeline never
    converts its pixels, so no crop may come from it, even with min_confidence 0 or a tracker that scores guesses."""
    gate = CropGate(min_confidence=0.0)
    cams = CameraTracklets("cam", "run", gate, max_lost_frames=30)
    boxes = {1: (100, 100, 160, 260), 2: (300, 120, 350, 250)}
    requests = [r for f in range(20) for r in cams.update(f, f, f / 10, _tracks(boxes, 0.9, guessed=True), FRAME)[1]]
    assert requests == [] and set(cams.live) == {1, 2}
    assert _crops_taken(gate, 2, score=0.9) == {1: 4, 2: 4}


def test_small_people_get_low_weight_crops_until_a_full_size_one_arrives():
    """reid.small_min_height: a person below min_height still gets crops (so their track gets an identity), at a
    tenth of the weight, only while the track has no full-size crop, and never more than the cap."""
    from pipeline.tracklets import SMALL_CROP_WEIGHT

    small_box = {1: (100, 100, 118, 150)}  # 50 px tall, 18 px wide: below min_height and min_width
    gate = CropGate(min_height=64, crops_per_second=2.0, small_min_height=32, max_crops_per_track=4)
    assert _crops_taken(gate, 10, boxes=small_box) == {1: 4}
    assert _crops_taken(CropGate(min_height=64, small_min_height=56), 2, boxes=small_box) == {}  # below the floor

    cams = CameraTracklets("cam", "run", gate, max_lost_frames=30)
    weights = []
    for f in range(40):  # 2 s small, then the person is near: full-size boxes
        box = small_box[1] if f < 20 else (100, 100, 160, 260)
        for r in cams.update(f, f, f / 10, _tracks({1: box}), FRAME)[1]:
            weights.append(round(r.weight / 0.9, 3))
            r.tracklet.add_embedding(np.ones(4, np.float32), r.weight)
    small_weight = round(SMALL_CROP_WEIGHT * 50 / 128, 3)
    assert weights == [small_weight] * 4 + [1.0] * 4, weights
    # Once a full-size crop exists, small ones are not taken again.
    for f in range(40, 60):
        assert not cams.update(f, f, f / 10, _tracks(small_box), FRAME)[1]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _person(rng: np.random.Generator, dim: int = 64):
    """Crops of one person: a fixed direction plus noise, cosine about 0.9 between two of them."""
    centre = _unit(rng.normal(size=dim))
    return lambda: _unit(centre + 0.3 * _unit(rng.normal(size=dim)))


def _observe(check, tl, crops) -> list[tuple[bool, bool]]:
    return [check.observe(tl, v) for v in crops]


def _tracklet():
    from pipeline.tracklets import Tracklet
    return Tracklet("cam:run:1", "cam", 1, 0, 0, np.zeros(4), 0.9)


def test_a_track_that_turns_to_another_person_is_found_at_the_second_crop():
    """reid.swap_threshold / swap_crops: two crops in a row of someone else (agreeing with each other) are a swap;
    the first of them is already kept out of the tracklet's embedding."""
    from pipeline.tracklets import SwapCheck

    rng = np.random.default_rng(0)
    a, b = _person(rng), _person(rng)
    check, tl = SwapCheck(threshold=0.3, crops=2), _tracklet()
    assert _observe(check, tl, [a() for _ in range(5)]) == [(True, False)] * 5
    assert _observe(check, tl, [b(), b()]) == [(False, False), (False, True)]
    # with crops=3 the same two are not yet enough
    check3, tl3 = SwapCheck(threshold=0.3, crops=3), _tracklet()
    _observe(check3, tl3, [a() for _ in range(5)])
    assert _observe(check3, tl3, [b(), b(), b()]) == [(False, False), (False, False), (False, True)]


def test_a_stray_crop_a_slow_drift_or_disagreeing_suspects_are_not_a_swap():
    from pipeline.tracklets import SwapCheck

    rng = np.random.default_rng(1)
    a = _person(rng)
    check, tl = SwapCheck(threshold=0.3, crops=2), _tracklet()
    _observe(check, tl, [a() for _ in range(4)])
    # one occluder's crop, then the person again: the suspect is forgotten
    assert _observe(check, tl, [_person(rng)(), a(), _person(rng)()]) == [(False, False), (True, False),
                                                                           (False, False)]
    # two suspects that are two different strangers (a crossing, an occlusion) do not agree: no swap
    assert check.observe(tl, _person(rng)()) == (False, False)
    # a person who turns slowly (each crop 0.95 from the last) ends far from the first crops, never a swap
    check, tl = SwapCheck(threshold=0.3, crops=2), _tracklet()
    start = _unit(rng.normal(size=64))
    end = _unit(rng.normal(size=64) - (rng.normal(size=64) @ start) * start)
    steps = [_unit(np.cos(t) * start + np.sin(t) * end) for t in np.linspace(0, np.pi / 2, 30)]
    assert all(not swap and agrees for agrees, swap in _observe(check, tl, steps))
    assert float(steps[0] @ steps[-1]) < 0.01


def test_crops_taken_at_a_crossing_never_become_the_reference_so_the_other_person_cannot_creep_in():
    """A crossing's crops blend the two people; had they become the reference, the next person's crops would
    agree with it step by step (the PETS dev-frame case: 0.9 -> 0.6 -> 0.35 -> 0.15 from the first person)."""
    from pipeline.tracklets import SwapCheck

    def run(near_at_crossing: bool) -> list[tuple[bool, bool]]:
        rng = np.random.default_rng(2)
        a, b = _person(rng), _person(rng)
        check, tl = SwapCheck(threshold=0.3, crops=2), _tracklet()
        _observe(check, tl, [a() for _ in range(4)])
        crossing = [_unit(w * a() + (1 - w) * b()) for w in (0.8, 0.55, 0.45)]
        out = [check.observe(tl, v, met_lately=near_at_crossing) for v in crossing]
        return out + [check.observe(tl, b()) for _ in range(3)]

    judged = run(near_at_crossing=True)
    assert [agrees for agrees, _ in judged[:2]] == [True, True]  # the blend still looks like the first person
    assert (False, True) in judged[3:]  # ... but the next person alone is found
    # the same crops had they been taken away from anyone: the blend becomes the reference and no swap is seen
    assert not any(swap for _, swap in run(near_at_crossing=False))


def test_after_the_cap_a_track_near_another_takes_check_crops_at_their_rate():
    """reid.swap_check_per_second: once a track has max_crops_per_track crops, it takes a check-only crop (the
    runner keeps it out of the embedding) every 1 / rate seconds while its box is near another track's and for
    NEAR_WINDOW_S after; a person walking alone takes none."""
    gate = CropGate(crops_per_second=2.0, max_crops_per_track=4, check_per_second=0.5)
    cams = CameraTracklets("cam", "run", gate, max_lost_frames=30)
    kinds: dict[int, list[tuple[int, bool]]] = {1: [], 2: [], 3: []}
    for f in range(140):  # 14 s at 10 fps; tracks 1 and 2 walk side by side (10 px apart) until 8 s
        boxes = {1: (100, 100, 160, 260), 3: (500, 100, 560, 260)}
        if f < 80:
            boxes[2] = (170, 100, 230, 260)
        for r in cams.update(f, f, f / 10, _tracks(boxes), FRAME)[1]:
            kinds[r.tracklet.track_id].append((f, r.check_only))
            # a crop says whether its box touched another track's then or in the 2 s before (SwapCheck keeps
            # those out of its reference): frame 79 was the last side by side
            assert r.met_lately == (r.tracklet.track_id in (1, 2) and f < 100), (f, r)
    for tid in (1, 2, 3):
        assert [f for f, check in kinds[tid] if not check] == [0, 5, 10, 15]
    # 2 s after the last full crop (frame 15), then every 2 s, until 2 s after the neighbour left (frame 79)
    assert [f for f, check in kinds[1] if check] == [35, 55, 75, 95]
    assert [f for f, check in kinds[2] if check] == [35, 55, 75]
    assert [f for f, check in kinds[3] if check] == []  # alone all along
    # without the check rate nothing comes after the cap
    assert _crops_taken(CropGate(crops_per_second=2.0, max_crops_per_track=4), seconds=10) == {1: 4, 2: 4}


def test_check_crops_can_wait_until_the_boxes_have_parted():
    """reid.swap_check_while_near false: no check crop while the box is near another track's (it would show both
    people); once they part, the track takes its check crops for NEAR_WINDOW_S, at their rate."""
    gate = CropGate(crops_per_second=2.0, max_crops_per_track=4, check_per_second=0.5, check_while_near=False)
    cams = CameraTracklets("cam", "run", gate, max_lost_frames=30)
    kinds: dict[int, list[tuple[int, bool]]] = {1: [], 2: [], 3: []}
    for f in range(140):  # as above: tracks 1 and 2 side by side until 8 s, track 3 alone
        boxes = {1: (100, 100, 160, 260), 3: (500, 100, 560, 260)}
        if f < 80:
            boxes[2] = (170, 100, 230, 260)
        elif 100 <= f < 104:
            boxes[2] = (170, 100, 230, 260)  # they meet again for 0.4 s
        for r in cams.update(f, f, f / 10, _tracks(boxes), FRAME)[1]:
            kinds[r.tracklet.track_id].append((f, r.check_only))
    assert [f for f, check in kinds[1] if not check] == [0, 5, 10, 15]
    # none while near (frames 20-79 and 100-103); the first frame apart, then 2 s on while still within 2 s of
    # the last meeting (frame 80; frame 100 is near again; frame 104 is apart, 2.4 s after the last check)
    assert [f for f, check in kinds[1] if check] == [80, 104]
    assert [f for f, check in kinds[3] if check] == []


def test_the_runner_gives_each_camera_the_configured_check_policy(shared_video, tmp_path):
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner

    for value in (True, False):
        raw = {"cameras": [{"id": "a", "source": str(shared_video["pets"])}], "store": "embedded",
               "output": {"dir": str(tmp_path)}, "reid": {"swap_check_while_near": value}}
        runner = PipelineRunner(parse_config(raw), tmp_path)
        assert runner._camera(runner.config.cameras[0]).tracklets.gate.check_while_near is value


def test_crops_say_they_were_taken_near_another_track_without_check_crops_too():
    """CropRequest.met_lately does not depend on reid.swap_check_per_second: with no check crops the swap check
    still keeps crossing crops out of its reference."""
    cams = CameraTracklets("cam", "run", CropGate(crops_per_second=2.0, check_per_second=0.0), max_lost_frames=30)
    _, requests = cams.update(0, 0, 0.0, _tracks({1: (100, 100, 160, 260), 2: (170, 100, 230, 260),
                                                   3: (500, 100, 560, 260)}), FRAME)
    assert {r.tracklet.track_id: r.met_lately for r in requests} == {1: True, 2: True, 3: False}


def test_a_split_tracklet_ends_at_the_next_expiry():
    cams = CameraTracklets("cam", "run", CropGate(), max_lost_frames=30)
    cams.update(0, 0, 0.0, _tracks({1: (100, 100, 160, 260), 2: (300, 120, 350, 250)}), FRAME)
    cams.live[1].split_off = True
    assert [t.track_id for t in cams.expire(1)] == [1]
    assert list(cams.live) == [2]


def test_swap_threshold_comes_from_the_model_unless_the_config_sets_it():
    """A cosine level belongs to one model: the model file's own `swap_threshold` is used when the config leaves
    the key unset; a value written in the config (null included: never split) always wins."""
    from pipeline.config import ReidConfig
    from pipeline.tracklets import swap_threshold_for
    from reid.inference.base import PreprocessSpec

    own = PreprocessSpec(extra={"swap_threshold": 0.4})
    assert swap_threshold_for(ReidConfig(), own) == (0.4, True)
    assert swap_threshold_for(ReidConfig(), PreprocessSpec()) == (ReidConfig().swap_threshold, False)
    assert swap_threshold_for(ReidConfig(), None) == (ReidConfig().swap_threshold, False)
    assert swap_threshold_for(ReidConfig(swap_threshold=0.3), own) == (0.3, False)
    assert swap_threshold_for(ReidConfig(swap_threshold=None), own) == (None, False)
