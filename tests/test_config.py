"""Config contract: minimal configs run with defaults; every mistake exits 2 with file, key path, problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.config import ConfigError, load_config


def _write(tmp_path, text: str):
    p = tmp_path / "cams.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path, shared_video):
    cfg = load_config(_write(tmp_path, f"cameras: [{{id: a, source: {shared_video['pets']}}}]\n"))
    assert cfg.store == "embedded"
    assert cfg.detector.backend == "yolox" and cfg.tracker.type == "bytetrack"
    assert cfg.cameras[0].kind == "file"


def test_annotated_video_by_default_for_file_cameras_only(tmp_path, shared_video):
    """`output.video: auto` (the default): a file camera gets an annotated video, a live one (stream, device) none,
    since its video would be one MP4 growing for the whole run; true gives every camera one, false none."""
    from pipeline.config import writes_video

    cameras = f"cameras: [{{id: f, source: {shared_video['pets']}}}, {{id: s, source: 'rtsp://h/s'}}, {{id: d, source: 0}}]\n"
    for setting, expected in (("", [True, False, False]), ("output: {video: auto}\n", [True, False, False]),
                              ("output: {video: true}\n", [True, True, True]),
                              ("output: {video: false}\n", [False, False, False])):
        cfg = load_config(_write(tmp_path, cameras + setting))
        assert [writes_video(cfg.output, c) for c in cfg.cameras] == expected, setting


def test_relative_source_is_relative_to_config(tmp_path, shared_video):
    (tmp_path / "v.avi").symlink_to(shared_video["pets"])
    cfg = load_config(_write(tmp_path, "cameras: [{id: a, source: v.avi}]\n"))
    assert cfg.cameras[0].source == str((tmp_path / "v.avi").resolve())


@pytest.mark.parametrize(
    "text, key_path, words",
    [
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetectr: {}\n", "detectr", "unknown key"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ntracker: {type: sort}\n", "tracker.type", "bytetrack"),
        ("cameras: [{id: a, source: rtsp://x/y, fps: fast}]\n", "cameras[0].fps", "number"),
        ("cameras: [{id: a, source: /no/such/video.mp4}]\n", "cameras[0].source", "not found"),
        ("cameras: [{id: a, source: rtsp://x/y}]\nstore: http://localhost:6379\n", "store", "redis://"),
        ("cameras: [{id: a, source: rtsp://x/y}, {id: a, source: rtsp://x/z}]\n", "", "used twice"),
        ("cameras: []\n", "cameras", "at least 1"),
        ("store: embedded\n", "cameras", "missing"),
        ("cameras: [{id: a, source: rtsp://x/y}]\nmatcher: {threshold: 2}\n", "matcher.threshold", "less than"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetector: {min_height: -5}\n", "detector.min_height",
         "greater than or equal to 0"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetector: {input_size: 16}\n", "detector.input_size",
         "greater than or equal to 32"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetector: {classes: []}\n", "detector.classes", "at least 1"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetector: {motion_gate: {area: 0}}\n", "detector.motion_gate.area",
         "greater than 0"),
        ("cameras: [{id: a, source: rtsp://x/y}]\ndetector: {motion_gate: {levle: 9}}\n",
         "detector.motion_gate.levle", "unknown key"),
        ("cameras: [{id: a, source: rtsp://x/y}]\noutput: {video: atuo}\n", "output.video",
         "must be auto, true or false, got 'atuo'"),
    ],
)
def test_bad_config_names_key_path(tmp_path, text, key_path, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key_path
    assert words in info.value.problem
    assert str(path) in str(info.value)


def test_cli_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, "cameras: [{id: a, source: rtsp://x/y}]\nreid: {modle: x.onnx}\n")
    for cmd in ("validate", "run"):
        proc = subprocess.run([sys.executable, "-m", "pipeline", cmd, str(path)], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines == [f"error: {path}: reid.modle: unknown key (check its spelling; see README 'Configuration')"]


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "cameras: [\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_missing_model_file_is_a_config_error(tmp_path, shared_video):
    path = _write(tmp_path, f"cameras: [{{id: a, source: {shared_video['pets']}}}]\nreid: {{model: nope.onnx}}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path), "--output-dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "model file 'nope.onnx' not found" in proc.stderr


def test_an_outfit_model_that_cannot_be_loaded_is_a_config_error(tmp_path, shared_video):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    path = _write(tmp_path, f"cameras: [{{id: a, source: {shared_video['pets']}}}]\nreid: {{outfit_model: bad.onnx}}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path), "--output-dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "reid.outfit_model" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_default_reid_model_says_how_to_build_it(tmp_path, monkeypatch):
    """The default ReID model is built on the machine (`make install`), not shipped: a checkout without it is told
    the command that makes it, not only where it looked."""
    from pipeline import models
    from pipeline.config import ReidConfig
    from pipeline.models import ModelNotFound, resolve_model

    monkeypatch.setattr(models, "search_dirs", lambda: [tmp_path])  # a machine where nothing was built
    with pytest.raises(ModelNotFound) as err:
        resolve_model(ReidConfig().model)
    assert "make install" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ModelNotFound) as err:
        resolve_model("nope.onnx")
    assert "make" not in str(err.value)
