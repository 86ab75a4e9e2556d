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
