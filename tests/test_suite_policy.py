"""The suite's own rules (tests/skip_policy.py): only GPU tests may skip; anything else that would skip fails,
naming what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# `make test` runs the suite in pytest-xdist workers, where the hooks run in the workers and only the reports
# reach the process that prints the summary: the policy is checked both ways.
IN_ONE_PROCESS_AND_IN_WORKERS = pytest.mark.parametrize("workers", [[], ["-n", "2"]],
                                                        ids=["one-process", "xdist-workers"])


def _sample_suite(folder: Path, name: str, text: str) -> None:
    """A sample test file `name` in `folder`, under the suite's skip-policy hooks and its `gpu` marker."""
    (folder / "conftest.py").write_text(
        "from tests.skip_policy import pytest_make_collect_report, pytest_runtest_makereport, "
        "pytest_terminal_summary  # noqa: F401\n")
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    (folder / name).write_text(text)


@IN_ONE_PROCESS_AND_IN_WORKERS
def test_a_skip_outside_the_gpu_tests_fails_and_says_why(tmp_path, workers):
    _sample_suite(tmp_path, "test_sample.py",
        "import pytest\n\n"
        "@pytest.fixture\n"
        "def server():\n"
        "    pytest.skip('mosquitto-for-the-sample is not installed')\n\n"
        "def test_skips_in_its_body():\n"
        "    pytest.skip('shared-data-for-the-sample missing')\n\n"
        "@pytest.mark.skipif(True, reason='GstRtspServer-for-the-sample missing')\n"
        "def test_skipif_marker():\n"
        "    pass\n\n"
        "def test_fixture_skips(server):\n"
        "    pass\n\n"
        "@pytest.mark.xfail(reason='known-broken-sample')\n"
        "def test_expected_to_fail():\n"
        "    assert False\n\n"
        "@pytest.mark.gpu\n"
        "def test_needs_cuda():\n"
        "    pytest.skip('no-CUDA-GPU-for-the-sample')\n\n"
        "def test_passes():\n"
        "    assert True\n")
    proc = _pytest([*workers, "test_sample.py"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for name, reason in (("test_skips_in_its_body", "shared-data-for-the-sample missing"),
                         ("test_skipif_marker", "GstRtspServer-for-the-sample missing"),
                         ("test_fixture_skips", "mosquitto-for-the-sample is not installed"),
                         ("test_expected_to_fail", "known-broken-sample")):
        assert f"{name} would have been skipped" in out, out
        assert reason in out, out
    assert "1 passed" in out and "1 skipped" in out, out
    assert "skipped: 1 GPU tests" in out and "no-CUDA-GPU-for-the-sample" in out, out


@IN_ONE_PROCESS_AND_IN_WORKERS
def test_a_module_skipped_at_import_fails_the_run_and_says_why(tmp_path, workers):
    """A whole file skipped at import (`allow_module_level`, `importorskip`) never reaches the per-test hook: it
    fails the run, naming what it lacks, and is not counted among the GPU skips."""
    _sample_suite(tmp_path, "test_whole_module.py",
        "import pytest\n\n"
        "pytest.importorskip('a_module_for_the_sample_that_is_not_installed')\n\n"
        "def test_never_run():\n"
        "    pass\n")
    proc = _pytest([*workers, "test_whole_module.py"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "test_whole_module.py would have been skipped as a whole" in out, out
    assert "a_module_for_the_sample_that_is_not_installed" in out, out
    assert "GPU tests" not in out and "skipped" not in out.splitlines()[-1], out


@pytest.mark.slow
def test_the_only_tests_that_skip_here_are_the_gpu_tests():
    """Every test marked gpu, run on this machine: without a CUDA GPU each one skips and says so; the rest of
    the suite cannot skip at all (the hook above turns a skip into a failure)."""
    import torch

    listed = _pytest(["--collect-only", "-q", "-m", "gpu", "tests"], PROJECT)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    gpu_tests = [line for line in listed.stdout.splitlines() if "::" in line]
    assert gpu_tests, "no test is marked gpu: the TensorRT and CUDA embedder tests should be"
    # The files whose tests need a GPU; a gpu mark anywhere else would let an ordinary test skip.
    gpu_files = ("tests/test_deploy_tensorrt.py::", "tests/test_deploy_torch_cuda.py::")
    assert all(t.startswith(gpu_files) for t in gpu_tests), gpu_tests
    assert {f for f in gpu_files if any(t.startswith(f) for t in gpu_tests)} == set(gpu_files), gpu_tests
    proc = _pytest(["-q", "-m", "gpu", "tests"], PROJECT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    if not torch.cuda.is_available():
        assert f"{len(gpu_tests)} skipped" in out and "passed" not in out, out
        assert f"skipped: {len(gpu_tests)} GPU tests" in out, out
