"""`validate` = `run` (issue 13): every input `run` would reject is rejected by `validate` too, with the same one
line (file, key path, problem) and exit 2, never a traceback or a hang; SIGHUP with a broken config never
stops a running pipeline; user text is printed as it is (no rich markup)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CONFIG, main
from tests.rtsp_server import RtspServer

PROJECT = Path(__file__).resolve().parent.parent


def _main(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip()


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


CASES = {  # name: (config after the camera line, camera options, key path in the error)
    "infinite fps": ("", ", fps: .inf", "cameras[0].fps"),
    "tiny fps": ("", ", fps: 1.0e-300", "cameras[0].fps"),
    "nan timeout": ("", ", read_timeout_s: .nan", "cameras[0].read_timeout_s"),
    "store port 99999": ("store: redis://127.0.0.1:99999/0\n", "", "store"),
    "store db not a number": ("store: redis://127.0.0.1:6379/zero\n", "", "store"),
    "huge events.maxlen": ("events: {maxlen: 100000000000000000000}\n", "", "events.maxlen"),
    "infinite retention": ("matcher: {retention_s: .inf}\n", "", "matcher.retention_s"),
    "huge top_k": ("matcher: {top_k: 1000000000000}\n", "", "matcher.top_k"),
    "unresolvable metrics host": ("metrics: {port: 0, host: no-such-host.invalid}\n", "", "metrics.host"),
    "tracker param of the wrong type": ("tracker: {params: {track_buffer: many}}\n", "", "tracker.params.track_buffer"),
    "tracker threshold above 1": ("tracker: {params: {track_high_thresh: 7}}\n", "", "tracker.params.track_high_thresh"),
    "a text file as the reid model": ("reid: {model: NOTES}\n", "", "reid.model"),
    "a text file as the detector": ("detector: {model: NOTES}\n", "", "detector.model"),
    "output.dir is a file": ("output: {dir: AFILE, video: false}\n", "", "output.dir"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validate_rejects_what_run_rejects_with_the_same_line(tmp_path, capsys, shared_video, shared_models, name):
    extra, cam, key = CASES[name]
    notes = tmp_path / "notes.onnx"
    notes.write_text("a text file, not a model\n")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}{cam}}}]\n"
                   + extra.replace("NOTES", str(notes)).replace("AFILE", str(afile)))
    code_v, err_v = _main(capsys, "validate", cfg)
    code_r, err_r = _main(capsys, "run", cfg, "--max-frames", 2, "--no-progress")
    assert code_v == code_r == EXIT_CONFIG, (err_v, err_r)
    assert err_v == err_r and len(err_v.splitlines()) == 1, (err_v, err_r)
    assert err_v.startswith(f"error: {cfg}: {key}: "), err_v


def test_metrics_port_in_use_is_a_config_error(tmp_path, capsys, shared_video, shared_models, busy_port):
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\nmetrics: {{port: {busy_port}}}\n")
    for command in ("validate", "run"):
        code, err = _main(capsys, command, cfg)
        assert code == EXIT_CONFIG and err.startswith(f"error: {cfg}: metrics.port: cannot listen on"), err


def test_non_utf8_config_and_output_dir_a_file(tmp_path, capsys, shared_video, shared_models):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(f"# caf\xe9\ncameras: [{{id: pets, source: {shared_video['pets']}}}]\n".encode("latin-1"))
    for command in ("validate", "run"):
        code, err = _main(capsys, command, cfg)
        assert code == EXIT_CONFIG and err.startswith(f"error: {cfg}: line 1: not UTF-8 text (byte 0xe9"), err
    good = tmp_path / "good.yaml"
    good.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\n")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code, err = _main(capsys, "run", good, "--output-dir", afile / "sub")
    assert code == EXIT_CONFIG and err == f"error: {good}: --output-dir: {afile} is a file, not a directory " \
                                          f"(in {afile / 'sub'})", err
    code, err = _main(capsys, "run", good, "--mot-dir", afile)
    assert code == EXIT_CONFIG and "--mot-dir" in err, err


@pytest.mark.parametrize("url, words", [("redis://127.0.0.1:99999/0", "port"), ("redis://[::1/0", "Invalid IPv6"),
                                        ("redis://127.0.0.1:6379/zero", "database number"), ("http://127.0.0.1:6379", "redis://"),
                                        ("redis://:s3cr3t@host:70000/0", "port")])
def test_bad_store_urls_on_the_command_line(capsys, url, words):
    for command in ("events", "identities"):
        code, err = _main(capsys, command, "--store", url)
        assert code == EXIT_CONFIG and err.startswith("error: <command line>: --store: "), err
        assert words.lower() in err.lower() and "s3cr3t" not in err, err


def test_bad_mqtt_url_is_a_config_error(capsys, redis_server):
    code, err = _main(capsys, "events", "--store", redis_server.url, "--group", "g", "--consumer", "c",
                      "--mqtt", "mqtt://user:s3cr3t@broker:99999")
    assert code == EXIT_CONFIG and "--mqtt" in err and "s3cr3t" not in err, err


@pytest.mark.slow
@pytest.mark.usefixtures("gst_rtsp_server")
def test_sighup_with_a_broken_config_keeps_the_run_going(tmp_path, shared_video, shared_models, redis_server):
    # A live camera, so the run is still going whatever the machine's speed; SIGTERM ends it at the end.
    camera = RtspServer(shared_video["pets"], fps=10).start()
    cfg = tmp_path / "cams.yaml"
    text = f"cameras: [{{id: pets, source: '{camera.url}'}}]\nstore: {redis_server.url}\noutput: {{video: false}}\n"
    cfg.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg),
                             "--output-dir", str(tmp_path / "out"), "--no-progress"], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _reload_broken_configs(proc, cfg, text, redis_server)
    finally:
        if proc.poll() is None:
            proc.kill()
        camera.stop()


def _reload_broken_configs(proc, cfg, text, redis_server):
    client = redis_server.client()
    deadline = time.monotonic() + 120
    while client.xlen("pipeline:events") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    for broken in (f"# caf\xe9\n{text}".encode("latin-1"), b"cameras: [\n", text.replace("pets", "p e t s").encode()):
        cfg.write_bytes(broken)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)  # drains, flushes and exits 0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert err.count("config reload refused, cameras unchanged") == 3, err[-3000:]
    assert "not UTF-8" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.timeout(1500)  # whole runs under load; the suite's default is 600 s
def test_user_text_is_printed_as_it_is(tmp_path, shared_video, shared_models):
    """`[/x]` in the output dir and `[gstreamer]` in a failed camera's path are text, not rich markup: the run
    ends with its summary (exit 1: a camera failed), both printed as they are."""
    broken = tmp_path / "bad[gstreamer].mp4"
    broken.write_bytes(b"this is not a video" * 100)
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - {{id: good, source: {shared_video['pets']}}}\n  - {{id: bad, source: '{broken}'}}\n"
                   "output: {video: false}\n")
    out_dir = tmp_path / "runs" / "[/x]"
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", str(cfg), "--max-frames", "5", "--output-dir",
                          str(out_dir), "--no-progress"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "bad[gstreamer].mp4" in res.stdout and f"output {out_dir}" in res.stdout, res.stdout
