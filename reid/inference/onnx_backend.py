"""ONNX Runtime embedder.

The preprocessing spec is read, in order, from the model's own metadata (`ccreid.spec`, written by
`python -m reid export`), from a sidecar `<model>.json`, or from the small table of known third-party
files below (whose publishers document their input conventions but ship no metadata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from detectors.yolox_onnx import yield_between_runs
from reid.inference.base import SPEC_METADATA_KEY, EmbeddingBatch, PreprocessSpec, l2_normalise, preprocess_crops

# Third-party ReID files documented by their publishers (see ../shared/models/README.md).
KNOWN_SPECS: dict[str, PreprocessSpec] = {
    # Intel OMZ person-reidentification-retail-0267: RGB 0–255, normalisation is inside the graph.
    "person-reidentification-retail-0267": PreprocessSpec(
        colour="rgb", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), identity_dim=256,
        method="omz-0267 (same-clothes)", train_dataset="Intel internal",
    ),
    # Intel OMZ person-reidentification-retail-0288 (OpenVINO IR): BGR 0–255, no normalisation; about a third of
    # 0267's multiply-adds (OMZ model card: 0.174 against 0.564 GFLOPs). It puts different people about 0.06
    # higher than 0267 does, so its levels are 0267's moved to the same error rates on SynthCC seed-1 test people
    # (stills, never the scenes or PETS it is scored on): the link threshold that accepts as few different-people
    # sightings as 0267's 0.55 (0.32 %) is 0.597 -> 0.6; the swap check's 0.3 becomes 0.355, and PETS dev frames
    # find the same swaps anywhere in 0.35-0.5 (0.3 misses one), so 0.4, the middle (README, "A lighter default
    # ReID model").
    "person-reidentification-retail-0288": PreprocessSpec(
        colour="bgr", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), identity_dim=256,
        method="omz-0288 (same-clothes)", train_dataset="Intel internal",
        extra={"swap_threshold": 0.4,
               "matcher": {"threshold": 0.6, "calibrated_on": "0267's error rate at 0.55, SynthCC seed-1 test people"}},
    ),
    # torchreid OSNet exports (BoxMOT): RGB / 255 with ImageNet mean/std.
    "osnet_x0_25_msmt17": PreprocessSpec(identity_dim=512, method="osnet_x0_25 (same-clothes)", train_dataset="MSMT17"),
}


def make_batch_dynamic(model: onnx.ModelProto, name: str = "N") -> None:
    """Relabel the first axis of every graph input and output as a symbolic batch axis (files fixing batch 1)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = name


def known_spec(model_path: Path) -> PreprocessSpec | None:
    """The documented spec of a third-party file named after a known model, else None."""
    for stem, spec in KNOWN_SPECS.items():
        if model_path.name.startswith(stem):
            return spec
    return None


def read_spec(model_path: Path, model: onnx.ModelProto) -> PreprocessSpec:
    meta = {p.key: p.value for p in model.metadata_props}
    if SPEC_METADATA_KEY in meta:
        return PreprocessSpec.from_json(meta[SPEC_METADATA_KEY])
    sidecar = model_path.with_name(model_path.name + ".json")
    if sidecar.exists():
        return PreprocessSpec.from_json(sidecar.read_text())
    known = known_spec(model_path)
    if known is not None:
        return known
    raise ValueError(
        f"{model_path}: no preprocessing spec: the file has no '{SPEC_METADATA_KEY}' metadata, there is no "
        f"sidecar {sidecar.name}, and it is not a known model. Export it with `python -m reid export` or write "
        f"the sidecar JSON (fields of reid.inference.PreprocessSpec: height, width, colour, scale, mean, std)."
    )


# Best first; only those present in the installed onnxruntime build are used.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(requested: list[str] | str | None) -> list[str]:
    """"auto" (or None): TensorRT / CUDA execution providers when this onnxruntime build has them, then CPU."""
    available = ort.get_available_providers()
    if requested is None or requested == "auto":
        chosen = [p for p in (*GPU_PROVIDERS, "CPUExecutionProvider") if p in available]
    else:
        wanted = [requested] if isinstance(requested, str) else list(requested)
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ValueError(f"onnxruntime execution providers {missing} are not in this build "
                             f"(available: {available})")
        chosen = wanted
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # fallback for any node a GPU provider rejects
    return chosen


class OnnxRuntimeEmbedder:
    """Batched ONNX Runtime embedder; the batch axis is made dynamic at load if the file fixed it."""

    def __init__(self, model_path: str | Path, threads: int = 0, max_batch: int = 64,
                 providers: list[str] | str | None = "CPUExecutionProvider", spin_wait: bool = True) -> None:
        """`spin_wait=False`: worker threads sleep between runs (detectors.yolox_onnx.yield_between_runs)."""
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX Runtime embedder: model file {path} not found")
        model = onnx.load(str(path))
        spec = read_spec(path, model)
        make_batch_dynamic(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        yield_between_runs(options, spin_wait)
        chosen = choose_providers(providers)
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=chosen)
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            spec = PreprocessSpec(**{**spec.__dict__, "height": shape[2], "width": shape[3]})
        outputs = [o.name for o in self.session.get_outputs()]
        # Exported CC-ReID models name their outputs; third-party files have a single identity output.
        self.identity_output = "identity" if "identity" in outputs else outputs[0]
        self.appearance_output = "appearance" if "appearance" in outputs else None
        self.spec = spec
        self.max_batch = max_batch

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        names = [self.identity_output] + ([self.appearance_output] if self.appearance_output else [])
        identity_parts, appearance_parts = [], []
        for start in range(0, len(crops), self.max_batch):
            x = preprocess_crops(crops[start : start + self.max_batch], self.spec)
            outs = self.session.run(names, {self.input_name: x})
            identity_parts.append(outs[0].reshape(len(x), -1))
            if self.appearance_output:
                appearance_parts.append(outs[1].reshape(len(x), -1))
        if not identity_parts:
            dim = self.spec.identity_dim or 0
            return EmbeddingBatch(np.zeros((0, dim), np.float32), None)
        identity = l2_normalise(np.concatenate(identity_parts))
        appearance = l2_normalise(np.concatenate(appearance_parts)) if appearance_parts else None
        return EmbeddingBatch(identity, appearance)
