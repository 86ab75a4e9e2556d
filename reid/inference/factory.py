"""Pick an embedder backend for a model file.

`backend: auto` picks, for an exported `.onnx`: TensorRT when the tensorrt package and a CUDA GPU are
present; else ONNX Runtime when its build has a CUDA/TensorRT execution provider and a GPU is visible;
else OpenVINO on CPU (fastest CPU backend in benchmarks/embed.py on Intel CPUs); else ONNX Runtime on
CPU. A `.xml` is an OpenVINO IR, a `.safetensors` a training checkpoint (torch).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from reid.inference.base import Embedder

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
SUFFIXES = {
    "torch": (".safetensors",),
    "onnxruntime": (".onnx",),
    "openvino": (".onnx", ".xml"),
    "tensorrt": (".onnx",),
}

log = logging.getLogger(__name__)


def _onnxruntime_gpu() -> bool:
    import onnxruntime as ort

    from reid.inference.onnx_backend import GPU_PROVIDERS

    if not any(p in ort.get_available_providers() for p in GPU_PROVIDERS):
        return False
    # A GPU build of onnxruntime lists its providers even on a machine without a GPU.
    try:
        import torch
    except ImportError:
        return True
    return torch.cuda.is_available()


def resolve_backend(model_path: str | Path, backend: str = "auto") -> tuple[str, str]:
    """-> (backend name, why it was chosen)."""
    path = Path(model_path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedder backend {backend!r}; choose one of {BACKENDS}")
    suffix = path.suffix.lower()
    if backend != "auto":
        if suffix not in SUFFIXES[backend]:
            raise ValueError(f"{path}: the {backend} embedder reads {' or '.join(SUFFIXES[backend])} files; "
                             f"export the model with `python -m reid export --format onnx|openvino`")
        return backend, "requested"
    if suffix == ".safetensors":
        return "torch", "a training checkpoint runs in PyTorch"
    if suffix == ".xml":
        return "openvino", "an OpenVINO IR"
    if suffix != ".onnx":
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected .onnx, .xml (OpenVINO) or "
                         f".safetensors (checkpoint); export with `python -m reid export`")
    from reid.inference.tensorrt_backend import tensorrt_available

    ok, reason = tensorrt_available()
    if ok:
        return "tensorrt", "tensorrt package and a CUDA GPU present"
    if _onnxruntime_gpu():
        return "onnxruntime", f"GPU execution provider present (TensorRT engine not possible: {reason})"
    if importlib.util.find_spec("openvino") is not None:
        return "openvino", f"CPU; openvino installed (TensorRT not possible: {reason})"
    return "onnxruntime", f"CPU; openvino not installed (TensorRT not possible: {reason})"


def create_embedder(model_path: str | Path, backend: str = "auto", threads: int = 0, *, max_batch: int = 64,
                    device: str = "auto", precision: str = "auto", batch_wait_ms: float | None = None,
                    spin_wait: bool = True, flip_sum: bool = False, fixed_batches: int = 0) -> Embedder:
    """Build the embedder; with `batch_wait_ms` it is wrapped in a `BatchingEmbedder` (see batching.py).

    `precision`: "auto" is the fastest precision that `reid export` parity-checks: OpenVINO's plugin default
    (bfloat16 on AMX/AVX512-BF16 CPUs, checked at cosine >= 0.995), FP16 for TensorRT, FP32 for torch and
    ONNX Runtime (an INT8 or FP16 file runs as exported). "f32" pins exact FP32 everywhere; "f16" runs torch
    on CUDA in half precision. `spin_wait=False`: ONNX Runtime's threads sleep between runs (the other backends
    schedule their own). `flip_sum`: each crop's features summed with its mirror image's (reid/inference/flip.py;
    the embedding work doubles). `fixed_batches`: OpenVINO only, batch sizes up to this get their own fixed-shape
    copy of the model once asked for often (openvino_backend.FixedBatchCopies; 0: none).
    """
    if precision not in ("auto", "f32", "bf16", "f16"):
        raise ValueError(f"precision must be auto, f32, bf16 or f16, got {precision!r}")
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"ReID model file {path} not found")
    name, why = resolve_backend(path, backend)
    log.info("reid embedder: %s for %s (%s)", name, path.name, why)
    embedder: Embedder
    if name == "torch":
        from reid.inference.torch_backend import TorchEmbedder

        embedder = TorchEmbedder(path, device=device, threads=threads, max_batch=max_batch, half=precision == "f16")
    elif name == "openvino":
        from reid.inference.openvino_backend import OpenVinoEmbedder

        embedder = OpenVinoEmbedder(path, threads=threads, precision=precision, max_batch=max_batch,
                                    fixed_batches=fixed_batches)
    elif name == "tensorrt":
        from reid.inference.tensorrt_backend import BatchProfile, TensorRTEmbedder

        embedder = TensorRTEmbedder(path, fp16=precision in ("auto", "f16"), profile=BatchProfile(1, min(16, max_batch),
                                                                                        max_batch))
    else:
        from reid.inference.onnx_backend import OnnxRuntimeEmbedder

        embedder = OnnxRuntimeEmbedder(path, threads=threads, max_batch=max_batch,
                                       providers="auto" if device != "cpu" else "CPUExecutionProvider",
                                       spin_wait=spin_wait)
    if flip_sum:
        from reid.inference.flip import FlipSumEmbedder

        embedder = FlipSumEmbedder(embedder)
    if batch_wait_ms is not None:
        from reid.inference.batching import BatchingEmbedder

        embedder = BatchingEmbedder(embedder, max_batch=max_batch, max_wait_ms=batch_wait_ms)
    return embedder
