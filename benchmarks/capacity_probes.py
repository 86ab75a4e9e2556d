"""Where the time of the capacity run goes, and two ways to more cameras per CPU that were measured and not taken
(README, Benchmarks: "Threads that wait", "Where the stride's time goes").

    .venv/bin/python benchmarks/capacity_probes.py [--probe overlap detector-input inside] [--steps 30]
        [--batch 8] [--crops 11] [--python-ms 15] [--cameras 8] [--frames 300] [--set KEY=VALUE ...] [--calls 300]

* `overlap`: one pipeline step is the detector on a batch of `--batch` PETS frames, the ReID embedder on `--crops`
  crops and `--python-ms` of Python holding the GIL (tracking, tracklets, matching); the defaults are a step of
  the 8-camera run detecting every frame, `--batch 4 --crops 5 --python-ms 5` one of the staggered stride of 2.
  It times the three one after another, then the next step's detection in a worker thread beside this step's
  embedding and Python (a pipelined frame loop). If the cores had room, the second would be faster.
* `inside`: the capacity run of capacity.py (default config and `--set` keys, `--cameras` copies of PETS, `--frames` each) with
  clocks on the detector's parts (letterbox a frame, the network a batch, the whole call) and on the ReID
  model's calls, then the same detector alone as capacity.py times it: what the run costs each part beyond what
  it costs alone. Also the process's CPU use over the run, the reader (decoder) threads' share of it, and the CPU
  seconds of every thread by kind (the frame loop, the detector's threads, the readers, the ReID model's native
  threads, the store worker), read from /proc: which thread is busy and which waits.
* `batch-sizes`: the config's ReID model (OpenVINO) on batches of 1-9 crops of random size, as a run's steps make
  them: one dynamic-shape model, the same batches sorted by size, and fixed-shape copies for every size
  (`reid.fixed_batches`; README "A lighter default ReID model").
* `detector-parts`: the config's detector on batches of `--batch` PETS frames as one ONNX Runtime run on all
  cores (`detector.workers` 1) and frame by frame on threads side by side, each run single-threaded on 2 cores
  (the default `detector.workers` 2; README "Runs side by side").
* `cpu`: the capacity run's CPU over its frame loop, per camera-frame, by part (the detector's runs on every
  thread, the ReID model's calls, the tracker, the decoders, the rest), for each `--variant` (as capacity.py's)
  in each of `--repeat` rounds: what all but the detector costs, as a share of the detector's own CPU, and the
  detector's CPU a detected frame in the run against alone. Unlike
  frames/s this share hardly moves with a shared host's speed (README: "The ReID model on its share of the cores").
* `reid-threads`: the config's ReID model alone on one thread and on every core, `--calls` calls of 4 and of 12
  PETS crops: wall and CPU ms a crop (README: "... the ReID model on its share of the cores").
* `detector-schedule`: capacity.py's detector-only timing (`--cameras`, `--frames`, `--set`) step by step and a
  step ahead (as the run feeds it), alternating over `--repeat` rounds: frames/s and cores busy (README: "The
  detector alone, fed as the run feeds it").
* `decode`: `--cameras` FFmpeg readers side by side (the pipeline's capture class) on PETS and the two room
  videos, `decode_threads` 0 against 1 over `--repeat` rounds: CPU and wall ms a frame (README: "One thread a
  decoder").
* `convert`: `--cameras` FFmpeg readers side by side, every frame decoded and all, one in 2 or none of them
  converted to BGR pixels, over `--repeat` rounds: CPU ms a frame (README: "Frames nobody looks at").
* `detector-input`: the YOLOX session fed float32 NCHW made by NumPy from the uint8 NHWC batch (what the
  detector does) against the same graph with a uint8 NHWC input and the transpose and cast inside it.

Both use the config's detector (`detector_from_config`, so `spin_wait` as configured) and, for `overlap`, the
INT8 ReID file `make reid-int8` builds (falling back to the default model when it is absent, with a note).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mot_pets import read_frames  # noqa: E402  (benchmarks/ is this script's own folder)
from detectors.base import queued  # noqa: E402
from pipeline.config import parse_config  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"
GT = VIDEO.parent / "gt" / "gt_dev.txt"


def _timed(step, n: int) -> float:
    step(0)  # warm-up
    t = time.perf_counter()
    for i in range(n):
        step(i)
    return (time.perf_counter() - t) / n * 1000


def probe_overlap(config, frames: list[np.ndarray], steps: int, batch: int = 8, n_crops: int = 11,
                  python_ms: float = 15.0) -> None:
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
             for f, x, y, w, h in gt[(gt[:, 0] <= len(frames)) & (gt[:, 5] >= 64)][:, [0, 2, 3, 4, 5]]][::7][:n_crops]
    batches = [[frames[(i + k) % len(frames)] for k in range(batch)] for i in range(len(frames))]

    def python_work(ms: float = python_ms) -> None:
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
              f"it; parts alone: detect {det:.1f} (batch of {batch}) + embed {emb:.1f} ({len(crops)} crops) + "
              f"Python {python_ms:.1f} = {det + emb + python_ms:.1f} ms", flush=True)
    pending[0].result()


def probe_batch_sizes(config, frames: list[np.ndarray], calls: int) -> None:
    """The ReID model (the config's, OpenVINO) on `calls` batches of 1-9 real PETS crops, sizes drawn at random as
    the run's steps make them: with one dynamic-shape model (fixed_batches 0), the same batches sorted by size (one
    change of shape per size), and with a fixed-shape copy for every size (compiled first, not timed)."""
    import random

    from pipeline.models import resolve_model
    from reid.inference.openvino_backend import OpenVinoEmbedder

    model = resolve_model(config.reid.model)
    gt = np.loadtxt(GT, delimiter=",")
    crops = [frames[int(f) - 1][max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)]
             for f, x, y, w, h in gt[(gt[:, 0] <= len(frames)) & (gt[:, 5] >= 64)][:, [0, 2, 3, 4, 5]]]
    rng = random.Random(0)
    sizes = [rng.randint(1, 9) for _ in range(calls)]
    batches = [[crops[(i * 9 + k) % len(crops)] for k in range(n)] for i, n in enumerate(sizes)]
    dynamic = OpenVinoEmbedder(model, fixed_batches=0)
    fixed = OpenVinoEmbedder(model, fixed_batches=9)
    for n in range(1, 10):  # every size past after_calls: its copy is queued
        for _ in range(fixed.fixed.after_calls):
            fixed.embed(crops[:n])
    while len(fixed.fixed.requests) < 9:
        if fixed.fixed.failed:
            raise SystemExit(f"fixed-shape copies failed: {fixed.fixed.failed}")
        time.sleep(0.1)
    for b in batches[:20]:
        dynamic.embed(b)
    n_crops = sum(sizes)
    for _ in range(3):  # rounds: a shared host's speed drifts, so compare within a round
        t = time.perf_counter()
        for b in batches:
            dynamic.embed(b)
        varying = time.perf_counter() - t
        t = time.perf_counter()
        for b in sorted(batches, key=len):
            dynamic.embed(b)
        ordered = time.perf_counter() - t
        t = time.perf_counter()
        for b in batches:
            fixed.embed(b)
        copies = time.perf_counter() - t
        print(f"batch-sizes: {model.name}, {calls} calls of 1-9 crops ({n_crops} crops): dynamic model "
              f"{1000 * varying / n_crops:.2f} ms a crop, the same sorted by size {1000 * ordered / n_crops:.2f}, "
              f"fixed-shape copies {1000 * copies / n_crops:.2f}", flush=True)


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


def probe_detector_parts(config, frames: list[np.ndarray], steps: int, batch: int) -> None:
    """The config's detector on batches of `batch` PETS frames (each slot its own frame) as one run on all cores
    (detector.workers 1) and frame by frame on `detector.workers` threads side by side (at least 2), in rounds."""
    from pipeline.perception import detector_from_config

    workers = max(2, config.detector.workers)
    whole = detector_from_config(config.detector.model_copy(update={"workers": 1}))
    parts = detector_from_config(config.detector.model_copy(update={"workers": workers}))
    batches = [[frames[(i + 7 * k) % len(frames)] for k in range(batch)] for i in range(len(frames))]
    for a, b in zip(whole.detect(batches[0]), parts.detect(batches[0])):
        assert len(a) == len(b) and np.allclose(a.xyxy, b.xyxy, atol=0.05), "the threads side by side must find the same boxes"
    for _ in range(3):  # rounds: a shared host's speed drifts, so compare within a round
        one = _timed(lambda i: whole.detect(batches[i % len(batches)]), steps)
        side = _timed(lambda i: parts.detect(batches[i % len(batches)]), steps)
        print(f"detector-parts: batch of {batch}: {one:.1f} ms as one run on all cores, {side:.1f} ms frame by frame "
              f"on {workers} threads side by side ({100 * (1 - side / one):.0f} % less)", flush=True)


class _Clock:
    """Seconds, calls and (where given) batch sizes per part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.sizes: dict[str, list[int]] = {}
        self.durations: dict[str, list[float]] = {}  # seconds of each call, where sizes are kept
        self._lock = threading.Lock()

    def call(self, part: str, fn, *args, size: int | None = None):
        t = time.perf_counter()
        out = fn(*args)
        took = time.perf_counter() - t
        with self._lock:  # the detector's parts call from two threads at once
            self.seconds[part] = self.seconds.get(part, 0.0) + took
            self.calls[part] = self.calls.get(part, 0) + 1
            if size is not None:
                self.sizes.setdefault(part, []).append(size)
                self.durations.setdefault(part, []).append(took)
        return out

    def per_call_and_crop(self, part: str) -> tuple[float, float]:
        """Least-squares (ms a call, ms a crop) of the calls' durations against their batch sizes."""
        sizes = np.asarray(self.sizes[part], np.float64)
        ms = 1000 * np.asarray(self.durations[part])
        slope, intercept = np.polyfit(sizes, ms, 1)
        return float(intercept), float(slope)

    def ms(self, part: str) -> float:
        return 1000 * self.seconds[part] / self.calls[part]


def _timed_detector(detector, clock: _Clock):
    """The detector with its letterbox, network and whole call behind `clock` (instance attributes, so only this
    detector is timed). With `detector.workers` > 1 "network" is each frame's run on the threads side by side."""
    letterbox, net, part_net, detect = detector._letterbox, detector.net, detector._part_net, detector.detect
    detector._letterbox = lambda frame, out: clock.call("letterbox", letterbox, frame, out)
    detector.net = lambda x: clock.call("network", net, x)
    if part_net is not None:
        detector._part_net = lambda x: clock.call("network", part_net, x)
    if queued(detector):  # detect() is collect(submit()); the run calls them itself
        collect = detector.collect
        detector.collect = lambda batch: clock.call("detect", collect, batch)
    else:
        detector.detect = lambda frames: clock.call("detect", detect, frames)
    return detector


def _thread_cpu_named() -> dict[int, tuple[str, float]]:
    """(kernel thread name, CPU seconds) of each thread of this process, by native thread id (Linux /proc).
    Native threads (ONNX Runtime's, OpenVINO's) have no Python name; their kernel name says whose they are."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended between listing and reading
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def _thread_group(name: str) -> str:
    """Threads of one kind under one name: reader-cam01 and reader-cam02 are both readers."""
    for sep in ("-", "_"):
        head = name.split(sep)[0]
        if head != name:
            return head
    return name.rstrip("0123456789") or name


class _ThreadCpu:
    """CPU seconds of every thread of this process over a window, by kind (`_thread_group`), read from /proc: a
    watcher thread ("probe-watch") keeps each thread's last reading every `every_s` s (threads such as the readers
    end within the window). Threads go by their Python name where they have one, else by the kernel's (native
    threads of ONNX Runtime and OpenVINO); the thread that opened the window by `main`."""

    def __init__(self, main: str, every_s: float = 0.5) -> None:
        self.main, self.every_s, self.main_tid = main, every_s, threading.get_native_id()
        self.before = _thread_cpu_named()  # threads from before the window (their CPU so far is not its)
        self.last: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="probe-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while True:
            names = {t.native_id: t.name for t in threading.enumerate()}
            for tid, (kernel_name, seconds) in _thread_cpu_named().items():
                self.last[tid] = (self.main if tid == self.main_tid else names.get(tid, kernel_name), seconds)
            if self._done.wait(self.every_s):  # reading /proc costs CPU too: the watcher's own, under "probe"
                return

    def stop(self) -> dict[str, list]:
        """{kind: [threads, CPU seconds in the window]}; the watcher's own CPU under "probe"."""
        self._done.set()
        self._watcher.join()
        groups: dict[str, list] = {}
        for tid, (name, seconds) in self.last.items():
            group = groups.setdefault(name if name == self.main else _thread_group(name), [0, 0.0])
            group[0] += 1
            group[1] += seconds - self.before.get(tid, (name, 0.0))[1]
        return groups


def probe_inside(cameras: int, frames: int, overrides: list[str]) -> None:
    import tempfile

    import capacity
    import pipeline.runner as runner

    clocks = {"run": _Clock(), "alone": _Clock()}
    build_detector, build_embedder = runner.detector_from_config, runner.create_embedder

    def timed_detector(*args, **kwargs):
        return _timed_detector(build_detector(*args, **kwargs), clocks["run"])

    def timed_embedder(*args, **kwargs):
        embedder = build_embedder(*args, **kwargs)
        embed, part = embedder.embed, f"ReID {Path(args[0]).name}"
        embedder.embed = lambda crops: clocks["run"].call(part, embed, crops, size=len(crops))
        return embedder

    runner.detector_from_config, runner.create_embedder = timed_detector, timed_embedder
    threads_cpu = _ThreadCpu("frame loop (main)")
    try:
        with tempfile.TemporaryDirectory(prefix="capacity-probe-") as tmp:
            config = capacity.build_config(cameras, VIDEO, Path(tmp) / "out", overrides)
            cpu0 = time.process_time()
            run = capacity.run_pipeline(config, Path(tmp) / "out", frames)
            cpu_s = time.process_time() - cpu0
    finally:
        groups = threads_cpu.stop()
        groups.pop("probe", None)
        runner.detector_from_config, runner.create_embedder = build_detector, build_embedder
    from pipeline.perception import detector_from_config

    alone_fps = capacity.detector_only(config, VIDEO, cameras, frames,
                                       detector=_timed_detector(detector_from_config(config.detector), clocks["alone"]))
    run_clock, alone = clocks["run"], clocks["alone"]
    # cpu_s spans model loading and the drain too (wall_s does not): an upper bound on the run's CPU use
    print(f"inside: {cameras} cameras x {frames} frames, pipeline {run['fps']:.1f} frames/s, detector alone "
          f"{alone_fps:.1f} frames/s (1 in {config.detector.every} detected); process CPU {cpu_s:.1f} s over the "
          f"run's {run['wall_s']:.1f} s of wall ({100 * cpu_s / run['wall_s']:.0f} % of one core, with loading), "
          f"reader threads {groups.get('reader', [0, 0.0])[1]:.1f} s")
    print("  CPU by thread over the run (loading included; last reading every 0.5 s): " + ", ".join(
        f"{name} {seconds:.1f} s ({n} thread{'s' if n > 1 else ''})"
        for name, (n, seconds) in sorted(groups.items(), key=lambda kv: -kv[1][1])))
    for part in ("letterbox", "network", "detect"):  # with detector.ahead, "detect" is the loop's wait for a step
        print(f"  {part}: {run_clock.ms(part):.2f} ms a call in the run ({run_clock.calls.get(part, 0)} calls), "
              f"{alone.ms(part):.2f} alone")
    for part, sizes in run_clock.sizes.items():  # the ReID model, and the outfit model where one is configured
        crops = sum(sizes)
        print(f"  {part}: {run_clock.calls[part]} calls, {crops} crops, {1000 * run_clock.seconds[part] / crops:.2f} "
              f"ms a crop in the run (batches of {min(sizes)}-{max(sizes)}, median {int(np.median(sizes))}); "
              "fitted to the calls: {:.2f} ms a call + {:.2f} ms a crop".format(*run_clock.per_call_and_crop(part)))


def _decode_videos() -> list[Path]:
    """PETS (MPEG-4 part 2) and the two room videos (H.264) of ../shared/data."""
    room = ROOT.parent / "shared" / "data" / "videos"
    return [VIDEO, room / "people-detection.264", room / "one-by-one-person-detection.mp4"]


def _readers_side_by_side(cameras: int, read_one) -> tuple[float, float]:
    """`read_one(k)` (returns the frames it read) on `cameras` threads at once, as the run's readers: the process's
    ms of CPU and wall ms a frame. A reader's error is raised here, not left to a thread's traceback."""
    counts, errors = [0] * cameras, []

    def run(k: int) -> None:
        try:
            counts[k] = read_one(k)
        except Exception as exc:
            errors.append(exc)
    readers = [threading.Thread(target=run, args=(k,)) for k in range(cameras)]
    cpu, wall = time.process_time(), time.perf_counter()
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    if errors:
        raise errors[0]
    n = sum(counts)
    return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def probe_decode(cameras: int, frames: int, repeat: int) -> None:
    """The pipeline's FFmpeg capture (`OpenCVCapture`) on `cameras` readers side by side, one thread each as the
    run has them, with `decode_threads` 0 (FFmpeg's choice: a thread per core) and 1 (the default), alternated
    over `repeat` rounds: the process's CPU and wall time a frame, for PETS (MPEG-4 part 2) and the two room
    videos (H.264)."""
    from pipeline.config import CameraConfig
    from pipeline.sources import OpenCVCapture

    for video in _decode_videos():
        got: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
        for _ in range(repeat):
            for threads in (0, 1):
                def read(k: int) -> int:
                    capture = OpenCVCapture(CameraConfig(id=f"d{k}", source=str(video), decode_threads=threads))
                    n = 0
                    try:
                        while n < frames and capture.read() is not None:
                            n += 1
                    finally:
                        capture.close()
                    return n
                got[threads].append(_readers_side_by_side(cameras, read))
        print(f"decode {video.name}, {cameras} readers x {frames} frames: ms of CPU a frame (wall) with "
              + "; ".join(f"decode_threads {t}: " + ", ".join(f"{c:.3f} ({w:.3f})" for c, w in got[t]) for t in got))


def probe_convert(cameras: int, frames: int, repeat: int) -> None:
    """The pipeline's FFmpeg capture on `cameras` readers side by side (one decoder thread each, the default),
    every frame decoded (`grab`) and converted to BGR pixels (`retrieve`) on all, one in 2 (the frames a stride
    of 2 detects) or none, alternated over `repeat` rounds: the process's CPU ms a frame, for PETS (MPEG-4 part
    2) and the two room videos (H.264)."""
    from pipeline.config import CameraConfig
    from pipeline.sources import OpenCVCapture

    shares = {"all": 1, "one in 2": 2, "none": 0}
    for video in _decode_videos():
        got: dict[str, list[float]] = {name: [] for name in shares}
        for _ in range(repeat):
            for name, every in shares.items():
                def read(k: int) -> int:
                    capture = OpenCVCapture(CameraConfig(id=f"d{k}", source=str(video)))
                    n = 0
                    try:
                        while n < frames and capture.grab():
                            if every and n % every == 0 and capture.retrieve() is None:
                                raise RuntimeError(f"{video.name}: frame {n} could not be converted")
                            n += 1
                    finally:
                        capture.close()
                    return n
                got[name].append(_readers_side_by_side(cameras, read)[0])
        print(f"convert {video.name}, {cameras} readers x {frames} frames: ms of CPU a frame with frames converted "
              + "; ".join(f"{name}: " + ", ".join(f"{c:.3f}" for c in got[name]) for name in got))


def probe_reid_threads(config, frames: list[np.ndarray], calls: int) -> None:
    """The config's ReID model alone on one thread and on every core, calls of 4 and of 12 crops cut from PETS
    frames: wall and CPU ms a crop (the CPU the process spent, so a second thread's share counts)."""
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder

    rng = np.random.default_rng(0)
    crops = []
    for k in range(48):
        h, w = int(rng.integers(64, 220)), int(rng.integers(28, 90))
        y, x = int(rng.integers(0, frames[0].shape[0] - h)), int(rng.integers(0, frames[0].shape[1] - w))
        crops.append(frames[k % len(frames)][y:y + h, x:x + w])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for threads in (1, cores):
        embedder = create_embedder(resolve_model(config.reid.model), config.reid.backend, threads=threads)
        for size in (4, 12):
            batches = [crops[(i * size) % 48:(i * size) % 48 + size] for i in range(calls)]  # 48: whole calls
            embedder.embed(batches[0])
            cpu, wall = time.process_time(), time.perf_counter()
            for b in batches:
                embedder.embed(b)
            n = len(batches) * size
            print(f"reid-threads {Path(config.reid.model).name}, {threads} thread{'s' if threads > 1 else ''}, "
                  f"calls of {size}: {(time.perf_counter() - wall) / n * 1000:.2f} ms a crop, "
                  f"{(time.process_time() - cpu) / n * 1000:.2f} ms of CPU a crop")


def probe_cpu(cameras: int, frames: int, variants: list[str], repeat: int) -> None:
    """CPU seconds of the frame loop's window (models loaded, store drained after), per camera-frame, by part:
    the detector's runs on every thread (thread CPU inside each run), the ReID model's calls (the calling
    thread's CPU; threads of its own count under "rest"), the tracker, the reader (decoder) threads, and the
    rest of the process. The rest over the detector's share is what the ratio of capacity.py pays; unlike
    frames/s it hardly moves when a shared host speeds up or slows down, since both scale with it. Then the
    detector alone as capacity.py times it: its CPU a detected frame there against in the run (what the rest
    costs the detector through caches and cores)."""
    import tempfile

    import capacity
    import detectors.yolox_onnx as yolox
    import pipeline.runner as runner
    import trackers.ultralytics_trackers as ultralytics_trackers
    from reid.inference import factory

    spent: dict[str, float] = {}
    detected = [0]  # frames the detector ran since the last reset (counted, so any stride or batching holds)
    lock = threading.Lock()

    def clocked(owner, name: str, part: str) -> None:
        inner = getattr(owner, name)

        def call(*args, **kwargs):
            t = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with lock:
                    spent[part] = spent.get(part, 0.0) + time.thread_time() - t
                    if part == "detector":
                        detected[0] += len(args[1])  # _detect(self, frames, net)
        setattr(owner, name, call)

    clocked(yolox.YoloxOnnxDetector, "_detect", "detector")
    clocked(ultralytics_trackers.UltralyticsTracker, "update", "tracker")
    clocked(ultralytics_trackers.UltralyticsTracker, "predict", "tracker")
    build_embedder = factory.create_embedder

    def clocked_embedder(*args, **kwargs):
        embedder = build_embedder(*args, **kwargs)
        clocked(embedder, "embed", "ReID calls")
        return embedder
    runner.create_embedder = clocked_embedder

    loop, window = runner.PipelineRunner._loop, {}

    def watched_loop(self, *args, **kwargs):
        spent.clear()
        detected[0] = 0
        threads_cpu = _ThreadCpu("frame loop")
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return loop(self, *args, **kwargs)
        finally:
            window.update(cpu=time.process_time() - cpu, wall=time.perf_counter() - wall, parts=dict(spent),
                          detected=detected[0])
            by_thread = {kind: seconds for kind, (_, seconds) in threads_cpu.stop().items()}
            window["probe"] = by_thread.pop("probe", 0.0)  # the pipeline's CPU is counted without the watcher's
            window["by_thread"] = by_thread
            window["readers"] = by_thread.get("reader", 0.0)
    runner.PipelineRunner._loop = watched_loop

    parsed = [capacity.parse_variant(v) for v in variants] or [("config", [])]
    rows: dict[str, list[dict]] = {name: [] for name, _ in parsed}
    for round_ in range(1, repeat + 1):
        for name, overrides in parsed:
            with tempfile.TemporaryDirectory() as tmp:
                config = capacity.build_config(cameras, VIDEO, Path(tmp) / "store", overrides)
                run = capacity.run_pipeline(config, Path(tmp) / "out", frames)
            n, parts = run["frames"], window["parts"]
            ms = {k: v / n * 1000 for k, v in parts.items()}
            ms["readers"] = window["readers"] / n * 1000
            total = (window["cpu"] - window["probe"]) / n * 1000  # the pipeline's, not the probe's watcher
            ms["rest"] = total - sum(ms.values())
            beyond = (total - ms["detector"]) / ms["detector"] * 100
            in_run = parts["detector"] / window["detected"] * 1000
            # the same detector alone on the same frames, batched as the run batches them (capacity.py's timing)
            spent.clear()
            detected[0] = 0
            alone_fps = capacity.detector_only(config, VIDEO, cameras, frames)
            alone = spent["detector"] / detected[0] * 1000
            alone_cores = alone * alone_fps / 1000  # the detector alone keeps this many cores busy
            rows[name].append({"beyond": beyond, "total": total, "ms": ms, "cores": window["cpu"] / window["wall"],
                               "in_run": in_run, "alone": alone, "alone_cores": alone_cores})
            print(f"cpu round {round_}, {name}: {n / window['wall']:.1f} frames/s, process {total:.2f} ms of CPU a "
                  f"camera-frame ({window['cpu'] / window['wall']:.2f} cores busy): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
                  + f"; all but the detector {beyond:.1f} % of the detector's; the detector {in_run:.2f} ms of CPU a "
                  f"detected frame in the run, {alone:.2f} alone (keeping {alone_cores:.2f} cores busy)", flush=True)
            # where each thread's CPU went (the parts above cut across threads: the frame loop runs detector frames
            # and the ReID calls too); what the parts leave over ("rest") is in the frame loop and the helpers
            print("  by thread, ms of CPU a camera-frame: " + ", ".join(
                f"{k} {v / n * 1000:.2f}" for k, v in sorted(window["by_thread"].items(), key=lambda kv: -kv[1])
                if v / n * 1000 >= 0.01), flush=True)
    print("| variant | CPU beyond the detector, % of its own (runs) | ms of CPU a camera-frame: all / detector / "
          "ReID calls / tracker / readers / rest | cores busy: run / detector alone | detector, ms of CPU a detected "
          "frame: run / alone |")
    print("|---|---|---|---|---|")
    for name, got in rows.items():
        def span(key, fmt="{:.2f}"):
            vals = [g["ms"][key] if key in g["ms"] else g[key] for g in got]
            lo, hi = min(vals), max(vals)
            return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else fmt.format(lo) + "–" + fmt.format(hi)
        runs = ", ".join(f"{g['beyond']:.1f}" for g in got)
        print(f"| {name} | {runs} | {span('total')} / {span('detector')} / "
              f"{span('ReID calls')} / {span('tracker')} / {span('readers')} / {span('rest')} | {span('cores')} / "
              f"{span('alone_cores')} | "
              f"{span('in_run')} / {span('alone')} |")


def probe_detector_schedule(config, cameras: int, frames: int, repeat: int) -> None:
    """capacity.py's detector-only timing fed step by step (each step's boxes taken before the next step is
    queued: the baseline until 2026-12-06) and a step ahead (as the run feeds it with `detector.ahead`), in
    alternation for `repeat` rounds: frames/s and the cores the detector keeps busy (README: "The detector alone,
    fed as the run feeds it")."""
    import capacity
    from pipeline.perception import detector_from_config

    detector = detector_from_config(config.detector)
    got: dict[str, list[tuple[float, float]]] = {"step by step": [], "a step ahead": []}
    for round_ in range(1, repeat + 1):
        for name, ahead in (("step by step", False), ("a step ahead", True)):
            stats: dict = {}
            fps = capacity.detector_only(config, VIDEO, cameras, frames, detector=detector, ahead=ahead, stats=stats)
            got[name].append((fps, stats["cores"]))
        (sync, sync_cores), (ahead_fps, ahead_cores) = got["step by step"][-1], got["a step ahead"][-1]
        print(f"detector-schedule round {round_}: step by step {sync:.1f} frames/s ({sync_cores:.2f} cores busy), "
              f"a step ahead {ahead_fps:.1f} ({ahead_cores:.2f}); ahead / step by step {ahead_fps / sync:.3f}",
              flush=True)
    ratios = [a[0] / s[0] for s, a in zip(got["step by step"], got["a step ahead"])]
    print(f"detector-schedule: a step ahead / step by step over {repeat} rounds: "
          + ", ".join(f"{r:.3f}" for r in ratios) + f" (mean {np.mean(ratios):.3f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", nargs="+", default=["overlap", "detector-input"],
                    choices=["overlap", "detector-input", "inside", "batch-sizes", "detector-parts", "cpu", "decode",
                             "convert", "reid-threads", "detector-schedule"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300, help="batch-sizes: embedder calls a round")
    ap.add_argument("--batch", type=int, default=8, help="overlap, detector-parts: frames the detector takes a step")
    ap.add_argument("--crops", type=int, default=11, help="overlap: crops the embedder takes a step")
    ap.add_argument("--python-ms", type=float, default=15.0, help="overlap: ms of Python holding the GIL a step")
    ap.add_argument("--cameras", type=int, default=8, help="inside: cameras of the capacity run")
    ap.add_argument("--frames", type=int, default=300, help="inside: frames per camera")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="inside, batch-sizes: a config key (of the capacity run), as capacity.py --set "
                         "(repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                    help="cpu: configs compared in each round, as capacity.py --variant (repeatable)")
    ap.add_argument("--repeat", type=int, default=1, help="cpu: rounds of all variants")
    args = ap.parse_args()
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO}: video not found (../shared/data beside the checkout; see README)")
    import capacity

    config = capacity.build_config(1, VIDEO, Path("unused"), args.set) if args.set else \
        parse_config({"cameras": [{"id": "a", "source": str(VIDEO)}]})
    frames = read_frames(VIDEO, 40)
    for probe in args.probe:
        if probe == "overlap":
            probe_overlap(config, frames, args.steps, args.batch, args.crops, args.python_ms)
        elif probe == "detector-input":
            probe_detector_input(config, frames, args.steps)
        elif probe == "batch-sizes":
            probe_batch_sizes(config, frames, args.calls)
        elif probe == "detector-parts":
            probe_detector_parts(config, frames, args.steps, args.batch)
        elif probe == "reid-threads":
            probe_reid_threads(config, frames, args.calls)
        elif probe == "decode":
            probe_decode(args.cameras, args.frames, args.repeat)
        elif probe == "convert":
            probe_convert(args.cameras, args.frames, args.repeat)
        elif probe == "cpu":
            probe_cpu(args.cameras, args.frames, args.variant, args.repeat)
        elif probe == "detector-schedule":
            probe_detector_schedule(capacity.build_config(args.cameras, VIDEO, Path("unused"), args.set),
                                    args.cameras, args.frames, args.repeat)
        else:
            probe_inside(args.cameras, args.frames, args.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
