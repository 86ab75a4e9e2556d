"""The OpenVINO embedder's throughput path (several infer requests, a batch split between them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Batches of 1-18 crops of random sizes, the throughput embedder beside the latency one (what benchmarks/embed.py's
# "-tput" rows run). Before its inputs were shared, OpenVINO 2026.4's copying start_async corrupted the heap and
# this sequence killed the process (SIGSEGV / SIGABRT) between its 50th and 100th call, on every try.
_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from reid.inference.openvino_backend import OpenVinoEmbedder

    model = sys.argv[1]
    throughput = OpenVinoEmbedder(model, hint="throughput")
    latency = OpenVinoEmbedder(model, hint="latency")
    if throughput.requests < 2:
        sys.exit(f"the throughput hint gave {throughput.requests} infer request: the split path is not exercised")
    rng = np.random.default_rng(0)
    worst, split = 1.0, 0
    for _ in range(120):
        n = int(rng.integers(1, 19))
        crops = [rng.integers(0, 255, (int(rng.integers(64, 200)), int(rng.integers(20, 90)), 3), dtype=np.uint8)
                 for _ in range(n)]
        a, b = throughput.embed(crops).identity, latency.embed(crops).identity
        worst = min(worst, float((a * b).sum(1).min()))
        split += n >= 2 * throughput.requests
    print(worst, split)
""")


def test_throughput_embedder_survives_many_batches_and_matches_latency(shared_models):
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(shared_models["reid"])], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode} (negative: killed by that signal)\n{run.stderr[-2000:]}"
    worst, split = run.stdout.split()
    assert float(worst) >= 0.9999, "split batches must give the rows the whole batch gives"
    assert int(split) >= 80, "most calls must take the split path"


class _CountingRequest:
    """Stands in for the embedder's dynamic-shape infer request and counts the batch sizes it is given."""

    def __init__(self, request) -> None:
        self.request, self.sizes = request, []

    def infer(self, inputs, share_inputs=False):
        self.sizes.append(len(inputs[0]))
        return self.request.infer(inputs, share_inputs=share_inputs)


def _wait_for_copies(embedder, sizes, timeout_s: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not set(sizes) <= set(embedder.fixed.requests):
        assert not embedder.fixed.failed, embedder.fixed.failed
        assert time.monotonic() < deadline, f"copies for {sizes} not compiled in {timeout_s} s"
        time.sleep(0.05)


def test_repeated_batch_sizes_get_fixed_shape_copies_with_the_same_features(shared_models):
    """A batch size asked for `after_calls` times gets its own fixed-shape copy of the model (the dynamic model
    pays ~3.5 ms for every change of shape); the copy gives the dynamic model's features, sizes asked for less
    often and sizes above the limit stay on the dynamic model, and nothing is compiled after close()."""
    import numpy as np

    from reid.inference.openvino_backend import OpenVinoEmbedder

    model = shared_models["reid_default"]
    embedder = OpenVinoEmbedder(model, fixed_batches=6)
    reference = OpenVinoEmbedder(model, fixed_batches=0)
    assert reference.fixed is None
    after = embedder.fixed.after_calls
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (int(rng.integers(64, 200)), int(rng.integers(20, 90)), 3), dtype=np.uint8)
             for _ in range(9)]
    for _ in range(after):
        for n in (3, 5, 8):  # 8 is above fixed_batches
            embedder.embed(crops[:n])
    for _ in range(after - 2):
        embedder.embed(crops[:2])  # two calls short of a copy (the loop below makes one)
    _wait_for_copies(embedder, (3, 5))
    assert set(embedder.fixed.requests) == {3, 5}
    counting = embedder.request = _CountingRequest(embedder.request)
    for n in (3, 5, 2, 8, 3):
        features = embedder.embed(crops[:n]).identity
        expected = reference.embed(crops[:n]).identity
        assert float((features * expected).sum(1).min()) >= 0.9999, n
    assert counting.sizes == [2, 8], "sizes with a copy must not reach the dynamic model; the others must"
    embedder.fixed.close()
    embedder.embed(crops[:2])  # its `after`-th call: a copy would be queued, but the copies are closed
    assert not embedder.fixed.queued and embedder.fixed._worker is None and 2 not in embedder.fixed.requests


def test_exit_while_a_copy_compiles_is_clean(shared_models):
    """The copies compile in a background thread: a process that ends while one compiles must exit normally."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from reid.inference.openvino_backend import OpenVinoEmbedder

        embedder = OpenVinoEmbedder(sys.argv[1], fixed_batches=8)
        crops = [np.zeros((120, 50, 3), np.uint8)] * 4
        for n in range(1, 5):
            for _ in range(embedder.fixed.after_calls):
                embedder.embed(crops[:n])
        print(len(embedder.fixed.queued) + (embedder.fixed._worker is not None))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(shared_models["reid_default"])], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-2000:]}"
    assert int(run.stdout.split()[-1]) >= 1, "the script must end while copies are still queued or compiling"


def test_reid_fixed_batches_reaches_the_pipelines_embedder(shared_video, shared_models, tmp_path):
    """`reid.fixed_batches` is the limit the runner's OpenVINO embedder gets; the default, 0, leaves it one dynamic
    model (the copies' compiling costs a short run more than they save; README)."""
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner

    def embedder(**reid):
        raw = {"cameras": [{"id": "a", "source": str(shared_video["pets"])}], "reid": reid,
               "output": {"dir": str(tmp_path)}}
        return PipelineRunner(parse_config(raw), tmp_path)._build_models()[1]

    default = embedder()
    assert type(default).__name__ == "OpenVinoEmbedder" and default.fixed is None  # off unless asked for
    assert embedder(fixed_batches=5).fixed.max_size == 5
