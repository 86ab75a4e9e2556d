"""Which track crops get embedded: the crop gate's rate, quality rules and per-track cap."""

from __future__ import annotations

import numpy as np

from pipeline.tracklets import CameraTracklets, CropGate
from trackers.base import Tracks

FRAME = (576, 768, 3)


def _tracks(boxes: dict[int, tuple[float, float, float, float]], score: float = 0.9) -> Tracks:
    ids = sorted(boxes)
    return Tracks(np.array([boxes[i] for i in ids], np.float32).reshape(-1, 4), np.array(ids, np.int64),
                  np.full(len(ids), score, np.float32), np.zeros(len(ids), np.int32), np.arange(len(ids)))


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
