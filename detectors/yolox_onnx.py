"""YOLOX (Megvii) exported to ONNX, run with ONNX Runtime: the offline default detector.

The official export has a fixed 1×3×416×416 input; its graph computes reshapes from `Shape`, so we relabel
the batch and spatial axes as symbolic at load time. That lets every camera's frame run in one call, and
lets the network see a frame at any scale: the input is the frame resized so its longer side is
`input_size`, the shorter side padded up to a multiple of the largest stride (32), not a padded square.
On PETS09-S2L1 (people 40-90 px tall in 768×576) the file's own 416 shrinks people below what
YOLOX-nano finds reliably; see benchmarks/mot_pets.py for the measured trade-off.

Two runtimes run the same ONNX file: ONNX Runtime, and OpenVINO (`runtime="openvino"`), which on CPUs with
AMX or AVX-512 BF16 runs the network in bfloat16 by default (`precision="auto"`; "f32" forces float32). OpenVINO
compiles one model per input shape (batch, height, width): with a dynamic batch axis its CPU plugin ran YOLOX
at half the speed (measured, 8 cameras). Shapes are few (cameras keep their size; the batch is the cameras with
a frame in the step), so compiled models are kept, the least recently used dropped past `MAX_OPENVINO_SHAPES`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from detectors.base import Detections

PERSON_CLASS = 0
_STRIDES = (8, 16, 32)


def yield_between_runs(options: ort.SessionOptions, spin_wait: bool) -> None:
    """`spin_wait=False`: the session's worker threads sleep when a run ends instead of spinning for the next.

    ONNX Runtime's default (spinning) suits one model called in a tight loop. In the pipeline a detector run is
    followed by tracking, by another model (the ReID embedder, OpenVINO or ONNX Runtime) and by decoder threads:
    spinning threads then take the cores those need (PETS capacity, 8 cameras, 2 cores: embedding 3.5 -> 2.6 ms
    a camera-frame with the default config; README, Benchmarks, "Threads that wait")."""
    if not spin_wait:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")


def onnx_session_with_dynamic_batch(
    path: str | Path, threads: int = 0, dynamic_spatial: bool = False, spin_wait: bool = True
) -> ort.InferenceSession:
    """Load an ONNX model with its first input/output axis relabelled as a dynamic batch axis (and, with
    `dynamic_spatial`, the input's height/width and the output's anchor axis as dynamic too). `spin_wait`: see
    `yield_between_runs`."""
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    if dynamic_spatial:
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[2].dim_param, dims[3].dim_param = "H", "W"
        for value in model.graph.output:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3:
                dims[1].dim_param = "A"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the official exports carry unused initialisers that warn on every load
    if threads:
        options.intra_op_num_threads = threads
    yield_between_runs(options, spin_wait)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _grids(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres and strides in the order YOLOX's head flattens them (stride 8, 16, 32; row-major)."""
    grids, strides = [], []
    for stride in _STRIDES:
        ny, nx = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((ny * nx, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def input_shape(frame_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """Network input (height, width) for a frame: longer side `long_side`, each side rounded up to 32."""
    h, w = frame_hw
    ratio = long_side / max(h, w)
    align = _STRIDES[-1]
    return (-(-round(h * ratio) // align) * align, -(-round(w * ratio) // align) * align)


RUNTIMES = ("onnxruntime", "openvino")
MAX_OPENVINO_SHAPES = 16
PRECISIONS = ("auto", "f32", "bf16")


def nchw_float32(batch: np.ndarray) -> np.ndarray:
    """(B, H, W, C) uint8 frames as the network's (B, C, H, W) float32 input. OpenCV splits each frame's channels
    and each plane is widened on its own: 0.33 ms a 640x480 frame on one core, where NumPy's transposing cast of
    the whole batch (a strided read of every byte) took 0.77 (2-core AMD EPYC, 2026-12-07); the same values."""
    b, h, w, c = batch.shape
    out = np.empty((b, c, h, w), np.float32)
    for i in range(b):
        for k, plane in enumerate(cv2.split(batch[i])):
            np.copyto(out[i, k], plane)
    return out


def decode_candidates(raw: np.ndarray, grid: np.ndarray, stride: np.ndarray, class_columns, classes: np.ndarray,
                      confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's raw YOLOX output (A, 5 + C) as the boxes (x1, y1, x2, y2 in network-input pixels), scores
    (objectness x class score, the best of `classes`) and classes of the anchors scoring `confidence` or more.

    Only the score is computed for every anchor; the boxes are decoded for the few that pass (a small share of
    the 6,300 anchors of a 640x480 input, even at a confidence of 0.01): the detector's work beside
    the network fell from 1.14-1.22 to 0.89-0.94 ms a PETS frame on one core (README, Benchmarks: "Boxes for
    the anchors that pass"). Each kept anchor gets the same arithmetic as before, so the same values."""
    class_scores = raw[:, class_columns] * raw[:, 4:5]  # (A, K)
    if class_scores.shape[1] == 1:
        keep = np.flatnonzero(class_scores[:, 0] >= confidence)
        score = class_scores[keep, 0]
        cls = np.full(keep.size, classes[0], np.int32)
    else:
        best = class_scores.argmax(-1)
        best_score = np.take_along_axis(class_scores, best[:, None], -1)[:, 0]
        keep = np.flatnonzero(best_score >= confidence)
        score = best_score[keep]
        cls = classes[best[keep]].astype(np.int32)
    kept = raw[keep]
    xy = (kept[:, 0:2] + grid[keep]) * stride[keep]
    half = np.exp(kept[:, 2:4]) * stride[keep] / 2
    return np.concatenate([xy - half, xy + half], 1), score, cls


class _OnnxRuntimeNet:
    def __init__(self, model_path: str | Path, threads: int, spin_wait: bool) -> None:
        self.session = onnx_session_with_dynamic_batch(model_path, threads, dynamic_spatial=True, spin_wait=spin_wait)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class _OpenVinoNet:
    def __init__(self, model_path: str | Path, threads: int, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeError("detector.runtime openvino: the openvino package is not installed "
                               "(pip install openvino, or use detector.runtime: onnxruntime)") from exc
        self._ov = ov
        self.core = ov.Core()
        self.path = str(model_path)
        self.config: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        if precision != "auto":
            self.config["INFERENCE_PRECISION_HINT"] = precision
        self.model = self.core.read_model(self.path)  # a broken file fails here, at start, not on the first frame
        self.compiled: OrderedDict[tuple[int, int, int], object] = OrderedDict()

    def _request(self, shape: tuple[int, int, int]):
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
            return self.compiled[shape]
        model = self.model.clone()
        model.reshape({model.inputs[0].any_name: self._ov.PartialShape([shape[0], 3, shape[1], shape[2]])})
        self.compiled[shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        if len(self.compiled) > MAX_OPENVINO_SHAPES:
            self.compiled.popitem(last=False)
        return self.compiled[shape]

    @property
    def precision(self) -> str:
        request = next(iter(self.compiled.values()))
        return str(request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = self._request((x.shape[0], x.shape[2], x.shape[3]))
        request.infer({0: x}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data)


class FrameBatch:
    """Frames submitted together to `YoloxOnnxDetector.submit`, and their boxes as the threads finish them."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.results: list[Detections | None] = [None] * len(frames)
        self.error: BaseException | None = None  # the first frame's failure; later frames are then skipped
        self.done = threading.Event()
        self._left = len(frames)
        self._lock = threading.Lock()
        if not frames:
            self.done.set()

    def frame_ended(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.done.set()


class YoloxOnnxDetector:
    """YOLOX ONNX detector (input BGR 0–255, top-left letterbox padded with 114, no normalisation)."""

    def __init__(
        self,
        model_path: str | Path,
        input_size: int = 640,
        confidence: float = 0.1,
        nms_iou: float = 0.45,
        classes: Sequence[int] = (PERSON_CLASS,),
        threads: int = 0,
        runtime: str = "onnxruntime",
        precision: str = "auto",
        spin_wait: bool = True,
        workers: int = 1,
    ) -> None:
        """`spin_wait`: ONNX Runtime's threads spin between runs (its default); False lets other work have the
        cores (`yield_between_runs`). OpenVINO schedules its own threads and ignores it.

        `workers` (ONNX Runtime only): the frames of a batch are run by this many threads side by side, each
        taking the next frame until none is left, each run on its share of the cores (`threads`, or all cores,
        divided by `workers`; at least one thread each). YOLOX-nano's layers are small: ONNX Runtime's threads
        inside one run wait for one another at every layer, and on 2 cores two single-threaded runs side by side
        took 6-36 % less time than one run of the whole batch on two threads, for the same boxes; frame by frame
        rather than in fixed halves, the 8-camera pipeline carried 6 % more frames/s on average (README,
        Benchmarks: "Runs side by side", "Frame by frame, and detection a step ahead"). `detect` of a single frame
        runs it whole, on all the threads; `submit`ted frames always go to the threads side by side."""
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown YOLOX runtime {runtime!r}; choose one of {RUNTIMES}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown YOLOX precision {precision!r}; choose one of {PRECISIONS}")
        if runtime == "onnxruntime" and precision == "bf16":
            raise ValueError("YOLOX precision bf16 needs runtime openvino (ONNX Runtime runs the file in float32)")
        if workers < 1:
            raise ValueError(f"YOLOX workers must be at least 1, got {workers}")
        if not len(classes):
            raise ValueError("YOLOX classes: name at least one class id to keep (COCO: 0 is a person)")
        self.runtime = runtime
        self.net = _OnnxRuntimeNet(model_path, threads, spin_wait) if runtime == "onnxruntime" else \
            _OpenVinoNet(model_path, threads, precision)
        # Runs side by side share one session (ONNX Runtime's run is thread-safe) with its share of the threads;
        # the caller's thread and the pool's take the frames.
        self.workers = workers if runtime == "onnxruntime" else 1
        self._part_net = None
        self._pool = None
        self.frame_threads: int | None = None  # threads of one frame's run side by side (workers > 1)
        if self.workers > 1:
            usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
            cores = threads or len(usable)
            self.frame_threads = max(1, cores // self.workers)
            self._part_net = _OnnxRuntimeNet(model_path, self.frame_threads, spin_wait)
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="yolox-part")
        self._tasks: deque[tuple[FrameBatch, int]] = deque()  # frames queued for the threads side by side
        self._tasks_lock = threading.Lock()
        self.input_size = input_size
        self.confidence = confidence
        self.nms_iou = nms_iou
        self.classes = np.asarray(list(classes), dtype=np.int64)
        # The classes' score columns of the raw output: a slice (a view, no copy) when they are consecutive, as
        # the default's one class is.
        first, count = int(self.classes[0]), len(self.classes)
        consecutive = np.array_equal(self.classes, np.arange(first, first + count))
        self._class_columns = slice(5 + first, 5 + first + count) if consecutive else 5 + self.classes
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _letterbox(self, frame: np.ndarray, out: np.ndarray) -> float:
        h, w = frame.shape[:2]
        ratio = min(self.input_size / max(h, w), min(out.shape[0] / h, out.shape[1] / w))
        nh, nw = min(int(round(h * ratio)), out.shape[0]), min(int(round(w * ratio)), out.shape[1])
        # Resized straight into the batch and only the margins padded: a fresh camera frame is not in the CPU's
        # cache, and a resize into a temporary plus a copy and a whole-image fill cost more than the resize itself.
        cv2.resize(frame, (nw, nh), dst=out[:nh, :nw], interpolation=cv2.INTER_LINEAR)
        out[nh:] = 114
        out[:nh, nw:] = 114
        return ratio

    @property
    def queued(self) -> bool:
        """`submit` / `collect` run frames on the threads side by side (detector.workers > 1)."""
        return self._pool is not None

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        if self._pool is None or len(frames) < 2:
            return self._detect(frames, self.net)
        return self.collect(self.submit(frames))

    def submit(self, frames: Sequence[np.ndarray]) -> "FrameBatch":
        """Queues the frames (one task each) for the threads side by side and returns at once; `collect` gives
        their boxes. The frames are shared out one at a time, not as fixed parts: a thread held up (by the
        decoders, the ReID model, the store) takes fewer frames instead of holding up the step while the others
        wait, and one frame at a time on one thread ran faster a frame than two or four (README: "Runs side by
        side"). Batches submitted one after another are run in that order."""
        if self._pool is None:
            raise RuntimeError("submit needs detector.workers > 1 (ONNX Runtime)")
        batch = FrameBatch(list(frames))
        with self._tasks_lock:
            self._tasks.extend((batch, i) for i in range(len(batch.frames)))
        for _ in range(min(self.workers - 1, len(batch.frames))):
            self._pool.submit(self._run_queued)
        return batch

    def collect(self, batch: "FrameBatch") -> list[Detections]:
        """The boxes of a submitted batch, in its frames' order. The calling thread runs queued frames too, the
        oldest first (so a later batch's once its own are all under way), until every frame of the batch has
        ended; a frame that failed fails the call then, and the batch's frames not yet started are not run."""
        while not batch.done.is_set():
            if not self._run_next():
                batch.done.wait(0.05)
        if batch.error is not None:
            raise batch.error
        return batch.results  # type: ignore[return-value]

    def _run_queued(self) -> None:
        while self._run_next():
            pass

    def _run_next(self) -> bool:
        """Runs the oldest queued frame, if any (False: the queue was empty)."""
        with self._tasks_lock:
            if not self._tasks:
                return False
            batch, i = self._tasks.popleft()
        if batch.error is None:
            try:
                batch.results[i] = self._detect([batch.frames[i]], self._part_net)[0]
            except BaseException as exc:  # handed to the batch's collect, which raises it
                batch.error = batch.error or exc
        batch.frame_ended()
        return True

    def _detect(self, frames: Sequence[np.ndarray], net) -> list[Detections]:
        if not frames:
            return []
        # One input shape per batch: frames of other shapes (cameras differ) are padded into the largest.
        shapes = [input_shape(f.shape[:2], self.input_size) for f in frames]
        hw = (max(s[0] for s in shapes), max(s[1] for s in shapes))
        if hw not in self._grids:
            self._grids[hw] = _grids(*hw)
        grid, stride = self._grids[hw]
        batch = np.empty((len(frames), hw[0], hw[1], 3), np.uint8)
        ratios = np.array([self._letterbox(f, batch[i]) for i, f in enumerate(frames)], np.float32)
        x = nchw_float32(batch)
        raw = net(x)  # (B, A, 5 + C)
        if raw.shape[1] != grid.shape[0]:
            raise RuntimeError(f"{raw.shape[1]} anchors from a {hw} input; expected {grid.shape[0]} "
                               "(is this a YOLOX export with strides 8/16/32 and decoding left out?)")
        results = []
        for i in range(len(frames)):
            xyxy, score, cls = decode_candidates(raw[i], grid, stride, self._class_columns, self.classes,
                                                 self.confidence)
            if score.size == 0:
                results.append(Detections.empty())
                continue
            h, w = frames[i].shape[:2]
            boxes = np.clip(xyxy / ratios[i], 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            # Class-aware NMS in OpenCV's C++ (no torch on the detector path).
            kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), score.tolist(), cls.tolist(), self.confidence, self.nms_iou)
            kept = np.asarray(kept, dtype=np.int64).reshape(-1)
            results.append(Detections(boxes[kept], score[kept].astype(np.float32), cls[kept]))
        return results
