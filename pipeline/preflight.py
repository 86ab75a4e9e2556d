"""What `run` would reject beyond the config's own schema, checked before anything starts: the same
checks for `validate` and for `run`, so a config `validate` accepts does not fail at run time on
them. Each problem is a ConfigError (exit 2) naming the key path.

* model files: found by the resolver, and a model by their first bytes (ONNX, OpenVINO IR, safetensors,
  PyTorch, a TensorRT engine), not any file that happens to have the name;
* tracker parameters: each of the type of Ultralytics' default, thresholds in [0, 1], and the tracker
  built and fed one empty frame;
* metrics: the host resolves and the port can be bound;
* outputs: `--output-dir` / `output.dir` and `--mot-dir` are (or can be made) writable directories.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig
from pipeline.models import resolve_model

ONNX_SUFFIXES = (".onnx",)


def model_file_problem(path: Path) -> str | None:
    """Why `path` is not a model file the pipeline can load (None when its header looks right)."""
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))  # an Ultralytics OpenVINO export is a folder with one IR in it
        return None if xmls and not model_file_problem(xmls[0]) else f"{path} is a folder without an OpenVINO .xml"
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    suffix = path.suffix.lower()
    if size < 16:
        return f"{path} is {size} bytes: not a model file"
    if suffix == ".onnx":
        # An ONNX model is a protobuf ModelProto: its first field is ir_version (tag 0x08, a small varint)
        # or, in files without it, another low-numbered field.
        if head[0] == 0x08 and 1 <= head[1] <= 64:
            return None
        if head[0] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42):
            return None
        return f"{path} does not start like an ONNX model (a protobuf ModelProto): export it again"
    if suffix == ".xml":
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not (text.startswith(b"<?xml") or text.startswith(b"<net")):
            return f"{path} is not an OpenVINO IR (.xml)"
        if not path.with_suffix(".bin").exists():
            return f"{path.with_suffix('.bin')} is missing: an OpenVINO IR is an .xml and its .bin"
        return None
    if suffix == ".safetensors":
        (header_len,) = struct.unpack("<Q", head[:8])
        if not (0 < header_len < size and head[8:9] == b"{"):
            return f"{path} is not a safetensors file"
        return None
    if suffix in (".pt", ".pth"):
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            return None
        return f"{path} is not a PyTorch file (zip or pickle)"
    if suffix in (".engine", ".plan"):
        return None  # TensorRT engines have no stable public header; TensorRT itself checks it
    return None  # other types are refused by the backend with its own message (see resolve_backend)


def _model(file: str, key: str, name: str) -> Path:
    try:
        path = resolve_model(name)
    except FileNotFoundError as exc:
        raise ConfigError(file, key, str(exc)) from None
    problem = model_file_problem(path)
    if problem:
        raise ConfigError(file, key, problem)
    return path


def check_tracker(file: str, config: PipelineConfig) -> None:
    """Tracker params of the right types and ranges, and a tracker that can be built and run."""
    import numpy as np

    from detectors.base import Detections
    from trackers import create_tracker, default_tracker_params

    kind, params = config.tracker.type, dict(config.tracker.params)
    defaults = default_tracker_params(kind)
    for key, value in params.items():
        path = f"tracker.params.{key}"
        if key not in defaults:
            raise ConfigError(file, path, f"unknown {kind} parameter; known: {', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok and isinstance(default, int) and not isinstance(value, int):
                ok = False
        else:
            ok = value is None or isinstance(value, type(default)) or default is None
        if not ok:
            raise ConfigError(file, path, f"expected a {type(default).__name__} like the default {default!r}, "
                                          f"got {value!r}")
        if key.endswith("_thresh") and not 0 <= value <= 1:
            raise ConfigError(file, path, f"a threshold is 0-1, got {value}")
        if key in ("track_buffer", "frame_rate") and not 1 <= value <= 100_000:
            raise ConfigError(file, path, f"must be 1-100000, got {value}")
    try:
        tracker = create_tracker(kind, params)
        tracker.update(Detections.empty(), np.zeros((64, 64, 3), np.uint8))
    except Exception as exc:
        raise ConfigError(file, "tracker.params", f"the {kind} tracker cannot run with these parameters: "
                                                  f"{type(exc).__name__}: {exc}") from None


def check_metrics(file: str, config: PipelineConfig) -> None:
    m = config.metrics
    if m.port is None:
        return
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(file, "metrics.host", f"cannot resolve {m.host!r}: {exc}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise ConfigError(file, "metrics.port", f"cannot listen on {m.host}:{m.port}: "
                                                    f"{exc.strerror or exc}") from None


def check_directory(file: str, key: str, path: Path) -> None:
    """`path` is a directory this process can write, or can be created as one."""
    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(file, key, f"{probe} is a file, not a directory" + (f" (in {path})" if probe != path
                                                                                 else ""))
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(file, key, f"{probe} is not writable")


def preflight(config: PipelineConfig, file: str | Path, output_dir: Path | None = None,
              output_key: str = "output.dir", mot_dir: Path | None = None) -> None:
    """Raise ConfigError for what `run` would reject; `validate` and `run` both call it."""
    file = str(file)
    _model(file, "detector.model", config.detector.model)
    _model(file, "reid.model", config.reid.model)
    if config.reid.outfit_model is not None:
        _model(file, "reid.outfit_model", config.reid.outfit_model)
    check_tracker(file, config)
    check_metrics(file, config)
    if output_dir is not None:
        check_directory(file, output_key, output_dir)
    if mot_dir is not None:
        check_directory(file, "--mot-dir", mot_dir)
