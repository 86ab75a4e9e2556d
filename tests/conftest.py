"""Shared fixtures: real video from ../shared/data, real model files, a private real Redis server, GStreamer's
RTSP server. A missing part fails the tests that need it, naming it: only GPU tests may skip (skip_policy)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.skip_policy import (  # noqa: F401 (pytest hooks)
    pytest_make_collect_report, pytest_runtest_makereport, pytest_terminal_summary)

# Property tests draw the same examples on every run, so the suite passes or fails the same way in CI and
# here; HYPOTHESIS_PROFILE=explore draws new examples on each run (and keeps the failures found) when
# changing the code under them.
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CCREID_SHARED", PROJECT.parent / "shared"))
DATA = SHARED / "data"
MODELS = SHARED / "models"
PETS_VIDEO = DATA / "pets09-s2l1" / "vtest.avi"
PETS_GT = DATA / "pets09-s2l1" / "gt" / "gt_dev.txt"
ROOM_MP4 = DATA / "videos" / "one-by-one-person-detection.mp4"
ROOM_H264 = DATA / "videos" / "people-detection.264"
YOLOX = MODELS / "detectors" / "yolox_nano.onnx"
REID_0267 = MODELS / "reid" / "person-reidentification-retail-0267.ort.onnx"
REID_0288 = MODELS / "reid" / "person-reidentification-retail-0288" / "FP32" / "person-reidentification-retail-0288.xml"
# The default ReID model: built from REID_0288 by `make install` / `make install-test` (Makefile, DEFAULT_REID).
REID_DEFAULT = PROJECT / "models" / "reid" / "person-reidentification-retail-0288-224x112-int8.xml"


def _need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"shared test data missing: {missing}: put the shared folder beside the checkout (../shared) "
                    "or point CCREID_SHARED at it", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory):
    """Runs record their output dir (pipeline.last_run) in a folder of the test session, not the user's home."""
    os.environ["PIPELINE_STATE_DIR"] = str(tmp_path_factory.mktemp("pipeline-state"))


@pytest.fixture(scope="session")
def shared_video() -> dict[str, Path]:
    _need(PETS_VIDEO, PETS_GT, ROOM_MP4, ROOM_H264)
    return {"pets": PETS_VIDEO, "pets_gt": PETS_GT, "room_mp4": ROOM_MP4, "room_h264": ROOM_H264}


@pytest.fixture(scope="session")
def shared_models() -> dict[str, Path]:
    _need(YOLOX, REID_0267, REID_0288)
    if not REID_DEFAULT.is_file():
        pytest.fail(f"the default ReID model {REID_DEFAULT} is missing: `make install-test` builds it from "
                    f"{REID_0288} (or run `make {REID_DEFAULT.relative_to(PROJECT)}`)", pytrace=False)
    return {"yolox": YOLOX, "reid": REID_0267, "reid_0288": REID_0288, "reid_default": REID_DEFAULT}


@pytest.fixture(scope="session")
def gst_rtsp_server() -> None:
    """GStreamer's RTSP server for the system Python (tests/rtsp_server.py): the live-camera tests need it."""
    from tests.rtsp_server import server_unavailable

    why = server_unavailable()
    if why is not None:
        pytest.fail(why, pytrace=False)


@pytest.fixture(scope="session")
def gstreamer_backend() -> None:
    """The pipeline's gstreamer camera backend in this venv (`gi` + Debian's GStreamer)."""
    from pipeline.sources import gstreamer_available

    why = gstreamer_available()
    if why is not None:
        pytest.fail(f"{why} (`make install-test` builds it into the venv)", pytrace=False)


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free loopback port, torn down after the test."""
    from pipeline.redis_server import RedisServer, free_port

    server = RedisServer(tmp_path / "redis", port=free_port(), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def restore_torch_globals():
    """Put back torch's thread count and deterministic-algorithms switch after a test that trains."""
    import torch

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
