"""TensorRT embedder: an engine built from the exported ONNX with the TensorRT Python API.

The engine has one optimisation profile over the dynamic batch axis (MIN:OPT:MAX) and is cached on
disk under a key made of the GPU name and compute capability, the TensorRT version, a hash of the
ONNX bytes, the precision and the profile, so a changed model, GPU or TensorRT never loads a stale
engine. Device memory and the CUDA stream come from PyTorch (no pycuda dependency); input batches
are resized into pinned host memory, uploaded asynchronously and normalised on the GPU.

Needs the `tensorrt` package and a CUDA GPU; `tensorrt_available()` says whether both are present.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reid.inference.base import (SPEC_METADATA_KEY, EmbeddingBatch, PreprocessSpec, l2_normalise,
                                 normalisation_affine, resize_crops)


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile for the batch axis."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile needs 1 <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        parts = text.split(":")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--batch expects MIN:OPT:MAX (e.g. 1:16:64), got {text!r}")
        return cls(*(int(p) for p in parts))

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT needs its Python package and a visible CUDA GPU."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        # PyPI holds only a source package whose libraries come from NVIDIA's own index at install time, so an
        # offline or PyPI-only machine cannot get it from pip (seen on a lent H200, README "GPU figures").
        return False, ("the tensorrt Python package is not installed (pip install tensorrt-cu12 or tensorrt-cu13, "
                       "matching the CUDA of the driver; it downloads its libraries from pypi.nvidia.com)")
    try:
        import torch
    except ImportError:
        return False, "the TensorRT embedder uses PyTorch for CUDA memory and streams; torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    return True, "ok"


def default_cache_dir() -> Path:
    base = os.environ.get("CCREID_TRT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ccreid", "tensorrt")
    return Path(base)


def engine_key(onnx_bytes: bytes, fp16: bool, profile: BatchProfile) -> dict[str, str]:
    """The fields an engine depends on; the cache file name is derived from all of them."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "sm": f"{major}{minor}", "tensorrt": trt.__version__,
            "model_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "precision": "fp16" if fp16 else "fp32",
            "profile": str(profile)}


def engine_file_name(key: dict[str, str]) -> str:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", key["gpu"]).strip("-")
    profile = key["profile"].replace(":", "-")
    return (f"{key['model_sha256'][:16]}_{gpu}_sm{key['sm']}_trt{key['tensorrt']}_{key['precision']}_b{profile}"
            f".engine")


def build_engine(onnx_bytes: bytes, spec_hw: tuple[int, int], fp16: bool, profile: BatchProfile,
                 workspace_gib: float = 4.0) -> bytes:
    """ONNX bytes -> serialised TensorRT engine with one optimisation profile on the batch axis."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10; older versions need the flag.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        # Deprecated (and always true on supported GPUs) in recent TensorRT; absent -> assume FP16 works.
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise RuntimeError("this GPU has no fast FP16; build the TensorRT engine without --fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = spec_hw
    trt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        trt_profile.set_shape(name, (profile.min, 3, h, w), (profile.opt, 3, h, w), (profile.max, 3, h, w))
    config.add_optimization_profile(trt_profile)
    serialised = builder.build_serialized_network(network, config)
    if serialised is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(serialised)


def cached_engine(onnx_path: Path, spec: PreprocessSpec, fp16: bool, profile: BatchProfile,
                  cache_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    """Path of the engine for this ONNX/GPU/TensorRT/precision/profile, building it on a cache miss."""
    onnx_bytes = onnx_path.read_bytes()
    key = engine_key(onnx_bytes, fp16, profile)
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / engine_file_name(key)
    if not path.is_file():
        data = build_engine(onnx_bytes, (spec.height, spec.width), fp16, profile)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        path.with_name(path.name + ".json").write_text(json.dumps({"key": key, SPEC_METADATA_KEY: asdict(spec)},
                                                                  indent=2))
    return path, key


class TensorRTEmbedder:
    """Runs a cached TensorRT engine; batches above the profile's MAX are split."""

    def __init__(self, onnx_path: str | Path, fp16: bool = True, profile: BatchProfile | None = None,
                 cache_dir: str | Path | None = None) -> None:
        ok, reason = tensorrt_available()
        if not ok:
            raise RuntimeError(f"TensorRT embedder unavailable: {reason}")
        import onnx
        import tensorrt as trt
        import torch

        from reid.inference.onnx_backend import read_spec

        path = Path(onnx_path)
        if path.suffix != ".onnx":
            raise ValueError(f"{path}: the TensorRT embedder builds its engine from the exported .onnx file")
        self.spec = read_spec(path, onnx.load(str(path), load_external_data=False))
        self.profile = profile or BatchProfile()
        self.engine_path, self.key = cached_engine(path, self.spec, fp16, self.profile,
                                                   Path(cache_dir) if cache_dir else None)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # kept: the engine must not outlive its runtime
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {self.engine_path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one image input, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.identity_output = "identity" if "identity" in self.output_names else self.output_names[0]
        self.appearance_output = "appearance" if "appearance" in self.output_names else None
        self.device = torch.device("cuda")
        self.stream = torch.cuda.Stream()
        gain, offset, self._flip = normalisation_affine(self.spec)
        self._gain = torch.from_numpy(gain).to(self.device).view(1, 3, 1, 1)
        self._offset = torch.from_numpy(offset).to(self.device).view(1, 3, 1, 1)
        self._pinned = torch.empty((self.profile.max, self.spec.height, self.spec.width, 3),
                                   dtype=torch.uint8).pin_memory()
        self._input = torch.empty((self.profile.max, 3, self.spec.height, self.spec.width), dtype=torch.float32,
                                  device=self.device)
        self._outputs: dict[str, torch.Tensor] = {}

    def _run_chunk(self, crops: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(crops)
        resize_crops(crops, self.spec, out=self._pinned.numpy())
        with torch.cuda.stream(self.stream):
            x = self._pinned[:n].to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            if self._flip:
                x = x.flip(1)
            self._input[:n].copy_(x.float() * self._gain + self._offset)
            self.context.set_input_shape(self.input_name, (n, 3, self.spec.height, self.spec.width))
            self.context.set_tensor_address(self.input_name, self._input.data_ptr())
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                buf = self._outputs.get(name)
                if buf is None or buf.numel() < int(np.prod(shape)):
                    per_row = int(np.prod(shape[1:]))
                    buf = torch.empty((self.profile.max * per_row,), dtype=torch.float32, device=self.device)
                    self._outputs[name] = buf
                self.context.set_tensor_address(name, buf.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            result = {name: self._outputs[name][: int(np.prod(self.context.get_tensor_shape(name)))]
                      .view(n, -1).cpu().numpy() for name in self.output_names}
        self.stream.synchronize()
        return result

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        identity_parts, appearance_parts = [], []
        for start in range(0, len(crops), self.profile.max):
            out = self._run_chunk(crops[start:start + self.profile.max])
            identity_parts.append(out[self.identity_output])
            if self.appearance_output:
                appearance_parts.append(out[self.appearance_output])
        if not identity_parts:
            return EmbeddingBatch(np.zeros((0, self.spec.identity_dim), np.float32), None)
        identity = l2_normalise(np.concatenate(identity_parts))
        appearance = l2_normalise(np.concatenate(appearance_parts)) if appearance_parts else None
        return EmbeddingBatch(identity, appearance)
