"""Annotated output (issue 18): H.264 a browser plays, labels that never overlap, a legend for undecided tracks."""

from __future__ import annotations

import av
import numpy as np

from pipeline.annotate import UNDECIDED, VideoOut, _overlaps, _place_label, draw_tracks
from trackers.base import Tracks


def _tracks(boxes) -> Tracks:
    n = len(boxes)
    return Tracks(np.array(boxes, np.float32), np.arange(1, n + 1), np.ones(n), np.zeros(n), np.arange(n))


def test_labels_of_crowded_boxes_never_overlap():
    boxes = [(100, 100, 150, 250), (104, 102, 158, 255), (98, 99, 149, 248), (110, 110, 170, 240), (0, 0, 40, 90)]
    taken = [(0, 0, 120, 30)]  # the header
    for b in boxes:
        rect = _place_label(b, (60, 20), taken, (768, 576))
        assert not any(_overlaps(rect, t) for t in taken), (rect, taken)
        assert 0 <= rect[0] and rect[2] <= 768 and 0 <= rect[1] and rect[3] <= 576
        taken.append(rect)


def test_undecided_tracks_are_grey_and_explained():
    frame = np.full((240, 320, 3), 30, np.uint8)
    out = draw_tracks(frame, _tracks([(200, 40, 260, 200)]), {1: None}, "cam", 0)
    assert tuple(out[120, 200]) == UNDECIDED, "an undecided track's box is grey"
    legend = out[-45:, :200]
    assert (legend == UNDECIDED).all(axis=-1).any(), "the legend shows the grey swatch"


def test_video_is_browser_playable_h264(tmp_path):
    path = tmp_path / "cam.mp4"
    out = VideoOut(path, 7.0)
    rng = np.random.default_rng(0)
    for _ in range(12):
        out.write(rng.integers(0, 255, (121, 161, 3), dtype=np.uint8))  # odd sides: yuv420p needs even ones
    out.close()
    assert out.codec == "h264"
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.width, s.codec_context.height) == (160, 120)
        assert sum(1 for _ in c.decode(s)) == 12
    data = path.read_bytes()
    assert -1 < data.find(b"moov") < data.find(b"mdat"), \
        "faststart: the index comes first, so a browser starts playing before the whole file is read"
