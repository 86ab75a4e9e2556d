"""Two ways to more cameras per CPU that were measured and not taken (README, Benchmarks: "Threads that wait").

    .venv/bin/python benchmarks/capacity_probes.py [--probe overlap detector-input] [--steps 30]

* `overlap`: one pipeline step is the detector on a batch of 8 PETS frames, the ReID embedder on 11 crops (what a
  step of the 8-camera stride-2 run embeds) and 15 ms of Python holding the GIL (tracking, tracklets, matching).
  It times the three one after another, then the next step's detection in a worker thread beside this step's
  embedding and Python (a pipelined frame loop). If the cores had room, the second would be faster.
* `detector-input`: the YOLOX session fed float32 NCHW made by NumPy from the uint8 NHWC batch (what the
  detector does) against the same graph with a uint8 NHWC input and the transpose and cast inside it.

Both use the config's detector (`detector_from_config`, so `spin_wait` as configured) and, for `overlap`, the
INT8 ReID file `make reid-int8` builds (falling back to the default model when it is absent, with a note).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mot_pets import read_frames  # noqa: E402  (benchmarks/ is this script's own folder)
from pipeline.config import parse_config  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"
GT = VIDEO.parent / "gt" / "gt_dev.txt"


def _timed(step, n: int) -> float:
    step(0)  # warm-up
    t = time.perf_counter()
    for i in range(n):
        step(i)
    return (time.perf_counter() - t) / n * 1000


def probe_overlap(config, frames: list[np.ndarray], steps: int) -> None:
    from pipeline.models import resolve_model
    from pipeline.perception import detector_from_config
    from reid.inference.factory import create_embedder

    detector = detector_from_config(config.detector)
    try:
        model = resolve_model("person-reidentification-retail-0267-int8.xml")
    except FileNotFoundError:
        print("INT8 ReID file not built (make reid-int8): the default ReID model embeds instead")
        model = resolve_model(config.reid.model)
    embedder = create_embedder(model, config.reid.backend, spin_wait=config.reid.spin_wait)
    gt = np.loadtxt(GT, delimiter=",")
    crops = [frames[int(f) - 1][max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)]
             for f, x, y, w, h in gt[(gt[:, 0] <= len(frames)) & (gt[:, 5] >= 64)][:, [0, 2, 3, 4, 5]]][::7][:11]
    batches = [[frames[(i + k) % len(frames)] for k in range(8)] for i in range(len(frames))]

    def python_work(ms: float = 15.0) -> None:
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass

    def sequential(i: int) -> None:
        detector.detect(batches[i % len(batches)])
        embedder.embed(crops)
        python_work()

    pool = ThreadPoolExecutor(1)
    pending = [pool.submit(detector.detect, batches[0])]

    def overlapped(i: int) -> None:
        pending[0].result()
        pending[0] = pool.submit(detector.detect, batches[(i + 1) % len(batches)])
        embedder.embed(crops)
        python_work()

    for _ in range(3):  # rounds: a shared host's speed drifts, so compare within a round
        seq = _timed(sequential, steps)
        ovl = _timed(overlapped, steps)
        det = _timed(lambda i: detector.detect(batches[i % len(batches)]), steps)
        emb = _timed(lambda i: embedder.embed(crops), steps)
        print(f"overlap: one step {seq:.1f} ms in sequence, {ovl:.1f} ms with the detection in a thread beside "
              f"it; parts alone: detect {det:.1f} + embed {emb:.1f} ({len(crops)} crops) + Python 15.0 = "
              f"{det + emb + 15:.1f} ms", flush=True)
    pending[0].result()


def probe_detector_input(config, frames: list[np.ndarray], steps: int) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from detectors.yolox_onnx import yield_between_runs
    from pipeline.models import resolve_model
    from pipeline.perception import detector_from_config

    detector = detector_from_config(config.detector)
    session = detector.net.session
    name = session.get_inputs()[0].name
    model = onnx.load(str(resolve_model(config.detector.model)))
    old = next(v for v in model.graph.input if v.name == name)
    model.graph.input.remove(old)
    model.graph.input.insert(0, helper.make_tensor_value_info("frames_u8", TensorProto.UINT8, ["N", "H", "W", 3]))
    model.graph.node.insert(0, helper.make_node("Cast", ["nchw_u8"], [name], to=TensorProto.FLOAT))
    model.graph.node.insert(0, helper.make_node("Transpose", ["frames_u8"], ["nchw_u8"], perm=[0, 3, 1, 2]))
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "N"
        if len(dims) == 3:
            dims[1].dim_param = "A"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    yield_between_runs(options, config.detector.spin_wait)
    in_graph = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    h, w = 480, 640  # the 640 input of a 768x576 frame
    batch = np.stack([np.ascontiguousarray(f[:h, :w]) for f in frames[:8]])
    numpy_out = session.run(None, {name: np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)})[0]
    graph_out = in_graph.run(None, {"frames_u8": batch})[0]
    assert np.array_equal(numpy_out, graph_out), "the two inputs must give the same outputs"
    for _ in range(3):  # rounds: a shared host's speed drifts, so compare within a round
        a = _timed(lambda i: session.run(None, {name: np.ascontiguousarray(batch.transpose(0, 3, 1, 2),
                                                                           dtype=np.float32)}), steps)
        b = _timed(lambda i: in_graph.run(None, {"frames_u8": batch}), steps)
        print(f"detector-input: batch of 8 at {w}x{h}: {a:.1f} ms with NumPy's float32 NCHW, {b:.1f} ms with "
              "uint8 NHWC into the graph")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", nargs="+", default=["overlap", "detector-input"], choices=["overlap", "detector-input"])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO}: video not found (../shared/data beside the checkout; see README)")
    config = parse_config({"cameras": [{"id": "a", "source": str(VIDEO)}]})
    frames = read_frames(VIDEO, 40)
    for probe in args.probe:
        {"overlap": probe_overlap, "detector-input": probe_detector_input}[probe](config, frames, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
