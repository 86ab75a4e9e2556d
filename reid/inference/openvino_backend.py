"""OpenVINO embedder (CPU plugin; any OpenVINO device name works).

Reads an OpenVINO IR (`.xml` + `.bin`, written by `python -m reid export --format openvino`) or an
ONNX file directly. The preprocessing spec comes from the IR's runtime info (`ccreid.spec`) or the
ONNX metadata, so no constant is duplicated here.

Precision: on CPUs with AMX/AVX512-BF16 the CPU plugin runs FP32 models in bfloat16 unless told
otherwise; `precision="f32"` pins exact FP32 (what the FP32 parity check needs), `"auto"` keeps the
plugin's choice (bf16 where the CPU has it: faster, parity checked at the FP16 threshold). INT8 IRs
(NNCF post-training quantisation) run their INT8 kernels in either case.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
from openvino.preprocess import ColorFormat, PrePostProcessor

from reid.inference.base import (SPEC_METADATA_KEY, EmbeddingBatch, PreprocessSpec, l2_normalise, normalisation_affine,
                                 resize_crops)

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "f16", "auto")
HINTS = ("latency", "throughput")


def read_openvino_spec(model: ov.Model, path: Path) -> PreprocessSpec:
    if model.has_rt_info([SPEC_METADATA_KEY]):
        return PreprocessSpec.from_json(model.get_rt_info([SPEC_METADATA_KEY]).astype(str))
    if path.suffix == ".onnx":
        import onnx

        from reid.inference.onnx_backend import read_spec

        return read_spec(path, onnx.load(str(path), load_external_data=False))
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        return PreprocessSpec.from_json(sidecar.read_text())
    from reid.inference.onnx_backend import known_spec

    known = known_spec(path)
    if known is not None:
        return known
    raise ValueError(f"{path}: no '{SPEC_METADATA_KEY}' runtime info and no sidecar {sidecar.name}; export the model "
                     f"with `python -m reid export --format openvino`")


def spec_with_input_size(model: ov.Model, spec: PreprocessSpec) -> PreprocessSpec:
    """`spec` with the height and width the IR's input fixes, where it fixes them (a file resized by
    `reid export --input-size` is read at its own size, whatever its name's entry in the known files says)."""
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() == 4 and shape[2].is_static and shape[3].is_static:
        return PreprocessSpec(**{**spec.__dict__, "height": shape[2].get_length(), "width": shape[3].get_length()})
    return spec


def dynamic_batch(model: ov.Model) -> ov.Model:
    """The model with a dynamic batch axis (files exported with a fixed batch still take any batch)."""
    shape = model.inputs[0].get_partial_shape()
    if shape[0].is_static:
        shape[0] = ov.Dimension()
        model.reshape({model.inputs[0].any_name: shape})
    return model


def fold_normalisation(model: ov.Model, spec: PreprocessSpec) -> ov.Model:
    """The model with uint8 BGR NHWC input: the cast to float, the colour order, the layout and the spec's
    normalisation (`normalisation_affine`) run in the plugin, fused with the first layers, instead of as a float32
    copy of every batch in NumPy (that copy was about a seventh of the embedder's time on 2 cores; README capacity)."""
    gain, offset, flip = normalisation_affine(spec)
    ppp = PrePostProcessor(model)
    tensor = ppp.input(0).tensor()
    tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input(0).preprocess()
    steps.convert_element_type(ov.Type.f32)
    if flip:
        steps.convert_color(ColorFormat.RGB)
    # pixel * gain + offset == (pixel - mean) / scale with mean = -offset / gain, scale = 1 / gain (per channel)
    steps.mean((-offset / gain).astype(float).tolist()).scale((1.0 / gain).astype(float).tolist())
    return ppp.build()


_LIVE_COPIES: "weakref.WeakSet[FixedBatchCopies]" = weakref.WeakSet()


@atexit.register
def _close_live_copies() -> None:
    """A compile still running at interpreter exit would outlive the objects it uses: stop and join first."""
    for copies in list(_LIVE_COPIES):
        copies.close()


class FixedBatchCopies:
    """Copies of a model compiled for one batch size each, made in a background thread for the sizes asked for
    often, so that a caller whose batch size changes from call to call does not pay for the change.

    The CPU plugin re-plans a dynamic-shape model on every change of input shape: about 3.5 ms a call for the
    ReID models here on 2 cores, against 1.3 ms a crop for the INT8 0288 (README, Benchmarks: "A lighter
    default ReID model"). The pipeline's batches change on nearly every call (the crops of one step). A copy
    compiled for one size pays nothing; compiling one costs 0.3-0.9 s of CPU, so a size gets its copy only after
    `after_calls` calls of that size (a short run compiles few), sizes up to `max_size`, one at a time. Until
    its copy is ready a size runs on the dynamic model, which gives the same features. In the 8-camera capacity
    run the compiling cost as much as the copies saved over 80 s of video, so the pipeline leaves them off
    unless `reid.fixed_batches` asks (long runs)."""

    def __init__(self, core: ov.Core, model: ov.Model, device: str, config: dict, max_size: int,
                 after_calls: int = 4) -> None:
        self.core, self.model, self.device, self.config = core, model, device, config
        self.max_size, self.after_calls = max_size, after_calls
        self.requests: dict[int, ov.InferRequest] = {}
        self.calls: dict[int, int] = {}
        self.queued: list[int] = []
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stopping = False
        _LIVE_COPIES.add(self)

    def request(self, size: int) -> ov.InferRequest | None:
        """The copy for `size` if it is ready (else None: run the dynamic model); counts the call."""
        ready = self.requests.get(size)
        if ready is not None or size > self.max_size:
            return ready
        calls = self.calls[size] = self.calls.get(size, 0) + 1
        if calls == self.after_calls:
            with self._lock:
                if self._stopping:
                    return None
                self.queued.append(size)
                if self._worker is None:
                    self._worker = threading.Thread(target=self._compile_queued, name="openvino-fixed-batch",
                                                    daemon=True)
                    self._worker.start()
        return None

    def _compile_queued(self) -> None:
        while True:
            with self._lock:
                if self._stopping or not self.queued:
                    self._worker = None
                    return
                size = self.queued.pop(0)
            try:
                model = self.model.clone()
                shape = model.inputs[0].get_partial_shape()
                shape[0] = ov.Dimension(size)
                model.reshape({model.inputs[0].any_name: shape})
                self.requests[size] = self.core.compile_model(model, self.device, self.config).create_infer_request()
            except Exception as exc:  # noqa: BLE001 - the dynamic model serves this size; say why once
                self.failed[size] = str(exc)
                log.warning("OpenVINO: no fixed-batch copy for batch %d (%s); that size keeps the dynamic model",
                            size, exc)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            worker = self._worker
        if worker is not None:
            worker.join()


class OpenVinoEmbedder:
    """Batched OpenVINO embedder with a dynamic batch axis.

    With the throughput hint the plugin makes several streams; a large batch is then split into one
    sub-batch per infer request and run concurrently through an `AsyncInferQueue`.
    """

    def __init__(self, model_path: str | Path, threads: int = 0, device: str = "CPU", hint: str = "latency",
                 precision: str = "f32", max_batch: int = 64, fixed_batches: int = 0) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO embedder: model file {path} not found")
        if hint not in HINTS:
            raise ValueError(f"OpenVINO hint must be one of {HINTS}, got {hint!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        core = ov.Core()
        model = core.read_model(str(path))
        spec = read_openvino_spec(model, path)
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.get_length() != 4:
            raise ValueError(f"{path}: expected a 4-D NCHW input, got {shape}")
        model = dynamic_batch(model)
        spec = spec_with_input_size(model, spec)
        model = fold_normalisation(model, spec)
        config: dict = {hints.performance_mode: hints.PerformanceMode.THROUGHPUT if hint == "throughput"
                        else hints.PerformanceMode.LATENCY}
        if threads:
            config[props.inference_num_threads] = threads
        if precision != "auto":
            config[hints.inference_precision] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[precision]
        self.compiled = core.compile_model(model, device, config)
        # Fixed-batch copies for the sizes the caller keeps asking for (see FixedBatchCopies); the throughput
        # hint splits batches over its requests, which the copies would not follow.
        self.fixed = FixedBatchCopies(core, model, device, config, fixed_batches) \
            if fixed_batches and hint == "latency" else None
        names = [o.any_name for o in self.compiled.outputs]
        self.identity_index = names.index("identity") if "identity" in names else 0
        self.appearance_index = names.index("appearance") if "appearance" in names else None
        self.requests = max(1, int(self.compiled.get_property(props.optimal_number_of_infer_requests)))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests) if self.requests > 1 else None
        self.request = self.compiled.create_infer_request()
        self.spec = spec
        self.max_batch = max_batch
        self.device = device
        self.hint = hint
        self.precision = precision

    def _run_sync(self, x: np.ndarray) -> list[np.ndarray]:
        request = self.fixed.request(len(x)) if self.fixed is not None else None
        result = (request or self.request).infer({0: x}, share_inputs=True)
        return [np.array(result[i]) for i in self._output_indices()]

    def _output_indices(self) -> list[int]:
        return [self.identity_index] + ([self.appearance_index] if self.appearance_index is not None else [])

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.queue is None or len(x) < 2 * self.requests:
            return self._run_sync(x)
        chunks = np.array_split(x, self.requests)
        results: list[list[np.ndarray] | None] = [None] * len(chunks)
        indices = self._output_indices()

        def done(request: ov.InferRequest, slot: int) -> None:
            results[slot] = [np.array(request.get_output_tensor(i).data) for i in indices]

        self.queue.set_callback(done)
        # The requests read the chunks in place (kept alive here until wait_all): OpenVINO 2026.4's copying
        # start_async corrupted the heap within ~100 calls of varying batch sizes (a crash, not an error).
        chunks = [np.ascontiguousarray(chunk) for chunk in chunks]
        for slot, chunk in enumerate(chunks):
            self.queue.start_async({0: chunk}, userdata=slot, share_inputs=True)
        self.queue.wait_all()
        return [np.concatenate([r[k] for r in results]) for k in range(len(indices))]  # type: ignore[index]

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        identity_parts, appearance_parts = [], []
        for start in range(0, len(crops), self.max_batch):
            x = resize_crops(crops[start:start + self.max_batch], self.spec)  # uint8: fold_normalisation
            outs = self._run(x)
            identity_parts.append(outs[0].reshape(len(x), -1))
            if self.appearance_index is not None:
                appearance_parts.append(outs[1].reshape(len(x), -1))
        if not identity_parts:
            return EmbeddingBatch(np.zeros((0, self.spec.identity_dim), np.float32),
                                  np.zeros((0, self.spec.appearance_dim), np.float32) if self.appearance_index
                                  is not None else None)
        identity = l2_normalise(np.concatenate(identity_parts))
        appearance = l2_normalise(np.concatenate(appearance_parts)) if appearance_parts else None
        return EmbeddingBatch(identity, appearance)
