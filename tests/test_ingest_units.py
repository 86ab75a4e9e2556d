"""Ingest pieces without a server: backoff, redaction, camera diff, file reader buffer, device errors,
config, metrics exposition."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest

from pipeline.config import CameraConfig, ConfigError, parse_config
from pipeline.metrics import PipelineMetrics
from pipeline.redact import redact
from pipeline.sources import END, Backoff, CameraSet, camera_changes


def test_backoff_grows_caps_jitters_and_resets():
    b = Backoff(0.5, 4.0, multiplier=2.0, jitter=0.2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    bases = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for d, base in zip(delays, bases):
        assert base * 0.8 <= d <= base * 1.2
    assert len({round(d, 6) for d in delays[3:]}) > 1, "jitter must spread retries of many cameras"
    assert b.bound() == pytest.approx(4.0 * 1.2)
    b.reset()
    assert 0.4 <= b.next_delay() <= 0.6 and b.bound(0) == pytest.approx(0.6)


def test_redaction_of_urls_in_text():
    assert redact("rtsp://admin:pw@10.0.0.1:554/s") == "rtsp://admin:***@10.0.0.1:554/s"
    assert redact("rtsp://10.0.0.1/s?user=a&password=pw") == "rtsp://10.0.0.1/s?user=a&password=***"
    assert redact("videos/a.mp4") == "videos/a.mp4"
    msg = redact("Could not open rtsp://u:topsecret@cam/x: refused; also http://h/?token=abc")
    assert "topsecret" not in msg and "abc" not in msg and "rtsp://u:***@cam/x:" in msg


def test_camera_changes_keeps_unchanged_cameras():
    a, b = CameraConfig(id="a", source="rtsp://h/a"), CameraConfig(id="b", source="rtsp://h/b")
    b2 = b.model_copy(update={"transport": "udp"})
    c = CameraConfig(id="c", source="rtsp://h/c")
    added, removed = camera_changes({"a": a, "b": b}, [a, b2, c])
    assert [x.id for x in added] == ["b", "c"] and removed == ["b"]
    assert camera_changes({"a": a}, [a]) == ([], [])
    assert camera_changes({"a": a, "b": b}, [b]) == ([], ["a"])


def test_camera_config_validation(tmp_path):
    cfg = parse_config({"cameras": [{"id": "x", "source": "rtsp://h/s", "backend": "gstreamer", "transport": "udp",
                                     "reconnect": {"initial_s": 0.2, "max_s": 5}}], "metrics": {"port": 9108}})
    assert cfg.cameras[0].reconnect.max_s == 5 and cfg.metrics.port == 9108
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.backend"):
        parse_config({"cameras": [{"id": "x", "source": "rtsp://h/s", "backend": "vlc"}]})
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.decode_threads"):
        parse_config({"cameras": [{"id": "x", "source": "rtsp://h/s", "decode_threads": -1}]})
    with pytest.raises(ConfigError, match="max_s must be at least initial_s"):
        parse_config({"cameras": [{"id": "x", "source": "rtsp://h/s", "reconnect": {"initial_s": 5, "max_s": 1}}]})


def test_file_reader_bounded_buffer_no_drops(shared_video):
    """Files: the reader decodes ahead at most FILE_BUFFER frames and never drops one, however slow the
    consumer; fps=5 on a 10 fps file keeps every other frame."""
    cs = CameraSet()
    cam = CameraConfig(id="f", source=str(shared_video["pets"]), fps=5)
    reader = cs.reader(cam, max_frames=40)
    reader.start()
    time.sleep(1.0)  # a stalled consumer
    assert reader.queue_depth <= 8 and reader.decoded <= 2 * 8 + 2
    got = []
    while True:
        cs.wait([reader], 1.0)
        item = reader.poll()
        if item is END:
            break
        if item is not None:
            got.append(item.index)
    reader.close()
    assert got == list(range(0, 40, 2)) and reader.dropped_stale == 0 and reader.state == "ended"


def _take_all(cs: CameraSet, reader) -> list:
    frames = []
    while True:
        cs.wait([reader], 1.0)
        item = reader.poll()
        if item is END:
            return frames
        if item is not None:
            frames.append(item)


def _count_retrieves(monkeypatch, capture_class) -> list[int]:
    """Counts the frames a capture class converts to pixels (`retrieve`), in a one-item list."""
    calls = [0]
    retrieve = capture_class.retrieve

    def counting(self):
        calls[0] += 1
        return retrieve(self)

    monkeypatch.setattr(capture_class, "retrieve", counting)
    return calls


@pytest.mark.parametrize("backend", ["ffmpeg", "gstreamer"])
def test_frames_nobody_looks_at_are_decoded_but_never_converted(shared_video, request, monkeypatch, backend):
    """`wants_image`: the frames at positions it refuses come without pixels, and are never converted (about
    half of a frame's decoding cost); the first frame of a connection always comes with them (its shape is
    every frame's). The frames that do come with pixels are the very frames a plain reader gives: skipping the
    conversion of one never shifts the decoding of the next."""
    from pipeline.sources import GStreamerCapture, OpenCVCapture

    if backend == "gstreamer":
        request.getfixturevalue("gstreamer_backend")
    cam = CameraConfig(id="f", source=str(shared_video["pets"]), backend=backend)
    cs = CameraSet()
    plain = cs.reader(cam, max_frames=30)
    plain.start()
    reference = _take_all(cs, plain)
    plain.close()
    assert len(reference) == 30 and all(f.image is not None for f in reference)

    retrieves = _count_retrieves(monkeypatch, GStreamerCapture if backend == "gstreamer" else OpenCVCapture)
    cs = CameraSet()
    reader = cs.reader(cam, max_frames=30)
    reader.wants_image = lambda position: position % 3 == 1
    reader.start()
    frames = _take_all(cs, reader)
    reader.close()
    with_pixels = [f.index for f in frames if f.image is not None]
    assert [f.index for f in frames] == list(range(30))
    assert with_pixels == [0] + list(range(1, 30, 3)), with_pixels
    assert retrieves[0] == len(with_pixels) and reader.imageless == 30 - len(with_pixels)
    assert all(f.shape == (576, 768, 3) for f in frames)
    for f in frames:
        if f.image is not None:
            assert np.array_equal(f.image, reference[f.index].image), f"frame {f.index} differs from a plain read"


def test_frames_above_the_rate_cap_are_never_converted(shared_video, monkeypatch):
    """`fps` below the source's rate skips frames after decoding them (a video's next frames need them), but
    never converts them: a 25 fps camera kept at 10 converts 10 frames a second, not 25."""
    from pipeline.sources import OpenCVCapture

    retrieves = _count_retrieves(monkeypatch, OpenCVCapture)
    cs = CameraSet()
    reader = cs.reader(CameraConfig(id="f", source=str(shared_video["pets"]), fps=5), max_frames=40)
    reader.start()
    frames = _take_all(cs, reader)
    reader.close()
    assert [f.index for f in frames] == list(range(0, 40, 2)) and reader.skipped == 20
    assert retrieves[0] == 20 and all(f.image is not None for f in frames)


def test_a_frame_is_converted_when_it_may_be_taken_at_a_position_that_wants_it():
    """Which position a frame about to be delivered is taken at: a file's, after those waiting in its buffer;
    a live camera's, the one waiting is replaced by it, unless taken first, so either of two: converted when
    either wants pixels (a frame due for detection never comes without them)."""
    from pipeline.sources import CameraReader, Frame

    def reader(source: str) -> CameraReader:
        r = CameraReader(CameraConfig(id="x", source=source))
        r.wants_image = lambda position: position % 2 == 0
        return r

    waiting = Frame("x", 0, 0.0, 0.0, None, (576, 768, 3))
    live = reader("rtsp://127.0.0.1:1/x")
    assert live.live
    live.taken = 0
    assert live._image_wanted()  # taken next at 0
    live.taken = 1
    assert not live._image_wanted()  # at 1
    live._buffer.append(waiting)
    assert live._image_wanted()  # at 1, or 2 if the one waiting is taken first
    live.taken = 2
    assert live._image_wanted()  # at 2 or 3

    file = reader("/videos/a.mp4")
    assert not file.live
    file.taken = 1
    assert not file._image_wanted()  # at 1
    file._buffer.append(waiting)
    assert file._image_wanted()  # at 2
    file._buffer.append(waiting)
    assert not file._image_wanted()  # at 3
    file.wants_image = None
    assert file._image_wanted()


def test_taking_one_cameras_frame_wakes_only_its_reader(shared_video):
    """File readers with full buffers wait for room: a frame taken from one camera wakes that camera's reader
    alone (with eight cameras, waking every reader on every frame taken cost CPU and GIL hand-offs beside the
    detector; README: "One wake-up a frame taken"). Nothing is lost or reordered."""
    from pipeline.sources import FILE_BUFFER

    cs = CameraSet()
    readers = [cs.reader(CameraConfig(id=k, source=str(shared_video["pets"])), max_frames=200) for k in "abc"]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 30
    while any(r.queue_depth < FILE_BUFFER for r in readers):
        assert time.monotonic() < deadline, "the readers must fill their buffers"
        time.sleep(0.01)
    a, others = readers[0], readers[1:]
    before = [r.room_waits for r in others]
    started = time.monotonic()
    taken = []
    for _ in range(40):
        taken.append(a.poll().index)
        while a.queue_depth < FILE_BUFFER:  # a refills its buffer: one wake-up of a each time
            assert time.monotonic() < deadline, "the reader must refill its buffer"
            time.sleep(0.001)
    elapsed = time.monotonic() - started
    woke = [r.room_waits - b for r, b in zip(others, before)]
    for r in readers:
        r.close()
    assert taken == list(range(40)) and a.decoded >= 40 + FILE_BUFFER
    # the others wake only at their 0.2 s timeout while the 40 frames are taken (80 wake-ups each if shared)
    assert all(w <= elapsed / 0.2 + 2 for w in woke), (woke, elapsed)


@pytest.mark.parametrize("backend", ["ffmpeg", "gstreamer"])
def test_decoders_take_the_configured_threads(shared_video, request, backend):
    """One decoder thread a camera by default (many cameras share the cores; README: "One thread a decoder"):
    FFmpeg then starts no thread beside the reader's own, for PETS's MPEG-4 (whose extra thread is not the
    codec's) and for H.264; the configured count when set; the decoder's own choice with 0. The frames are the
    same either way."""
    from pipeline.sources import GStreamerCapture, OpenCVCapture

    if backend == "gstreamer":
        request.getfixturevalue("gstreamer_backend")

    def threads_now() -> set[str]:  # thread ids: a thread of an earlier test ending meanwhile does not count
        return set(os.listdir("/proc/self/task"))

    def open_and_read(source, **extra):
        cam = CameraConfig(id="d", source=str(source), backend=backend, **extra)
        before = threads_now()
        capture = (GStreamerCapture if backend == "gstreamer" else OpenCVCapture)(cam)
        try:
            frames = [capture.read() for _ in range(3)]
            assert all(f is not None for f in frames), "the camera must still decode"
            if backend == "gstreamer":
                Gst = capture._Gst
                limits, it = [], capture._pipe.iterate_recurse()
                while True:
                    result, element = it.next()
                    if result != Gst.IteratorResult.OK:
                        break
                    if element.find_property("max-threads") is not None:
                        limits.append(element.get_property("max-threads"))
                return limits, frames
            return len(threads_now() - before), frames
        finally:
            capture.close()

    if backend == "gstreamer":
        limits, frames = open_and_read(shared_video["room_h264"])
        own_choice_limits, own_choice_frames = open_and_read(shared_video["room_h264"], decode_threads=0)
        assert limits == [1]
        assert open_and_read(shared_video["room_h264"], decode_threads=3)[0] == [3]
        assert own_choice_limits == [0]  # the decoder's own choice
        assert all(np.array_equal(a, b) for a, b in zip(frames, own_choice_frames))
        return
    for video in (shared_video["pets"], shared_video["room_h264"]):
        started, frames = open_and_read(video)
        assert started == 0, f"{video.name}: one decoder thread must start no thread beside the reader's"
        started_own, own_choice_frames = open_and_read(video, decode_threads=0)
        if (os.cpu_count() or 1) > 1:
            assert started_own > 0, f"{video.name}: FFmpeg's own choice threads on more than one core"
        assert all(np.array_equal(a, b) for a, b in zip(frames, own_choice_frames))
    assert open_and_read(shared_video["room_h264"], decode_threads=3)[0] > open_and_read(
        shared_video["room_h264"], decode_threads=2)[0]


def test_missing_device_fails_alone_with_a_clear_error():
    cs = CameraSet()
    cam = CameraConfig(id="usb", source=57, open_timeout_s=1, reconnect={"initial_s": 0.05, "max_s": 0.1,
                                                                         "max_attempts": 2})
    reader = cs.reader(cam)
    reader.start()
    reader.join(10)
    assert reader.state == "failed" and "camera usb: cannot open 57" in reader.error
    assert reader.connect_failures == 2 and reader.poll() is END


def test_metrics_exposition_lists_camera_health(shared_video):
    cs = CameraSet()
    reader = cs.reader(CameraConfig(id="f", source=str(shared_video["pets"])), max_frames=5)
    reader.start()
    while reader.poll() is not END:
        time.sleep(0.01)
    reader.close()
    m = PipelineMetrics(lambda: [reader])
    m.stage_seconds.labels("detect").observe(0.01)
    text = m.text()
    for line in ('pipeline_camera_frames_in_total{camera="f"} 5.0', 'pipeline_camera_frames_out_total{camera="f"} 5.0',
                 'pipeline_camera_state{camera="f",state="ended"} 1.0',
                 'pipeline_camera_frames_dropped_total{camera="f",reason="stale"} 0.0',
                 'pipeline_camera_reconnects_total{camera="f"} 0.0', 'pipeline_stage_seconds_count{stage="detect"} 1.0'):
        assert line in text, line
    assert str(shared_video["pets"]) not in text
