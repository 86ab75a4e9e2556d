"""`python -m reid export`: checkpoint -> ONNX / OpenVINO IR / TensorRT engine, each checked for parity.

`--weights` may also be an ONNX ReID file the runtime already reads (a third party's, such as Intel's 0267,
whose preprocessing comes from its metadata, a sidecar or the runtime's table of known files): ONNX Runtime in
FP32 then stands where PyTorch stands for a checkpoint, so the same gates judge an INT8 or OpenVINO copy of it.

Exported graphs hold only what inference needs: the identity feature (and the appearance feature when
the model has one), named outputs `identity` / `appearance`, a dynamic batch axis, simplified with
onnxslim, and the `ccreid.spec` metadata block every embedder reads (ONNX metadata_props; OpenVINO
runtime info). After every export the new file is run by its embedder on real person crops (boxes
cut from PETS09-S2L1 with its ground truth) and compared with PyTorch: cosine >= 0.999 (FP32),
>= 0.995 (FP16 / bfloat16); INT8 files must also lose at most 1 rank-1 point on SynthCC.

The check runs the file as the runtime will: its embedder reads the preprocessing the file declares, while
the PyTorch reference uses the checkpoint's. So the declared preprocessing must equal the checkpoint's, and
the INT8 retrieval check scores the export's features both alone and as queries against a gallery of the
reference's features: a file whose features are self-consistent but not those of the model (a wrong colour
order or mean/std barely moves rank-1 within its own features) fails the second.

`--input-size HxW` gives a float OpenVINO IR another input size (`resize_ir_input`); the resized float model is
then the reference of the gates above, and is itself gated on SynthCC rank-1 against the file as published.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from reid.inference.base import SPEC_METADATA_KEY, Embedder, PreprocessSpec, preprocess_crops
from reid.inference.tensorrt_backend import BatchProfile
from reid.inference.torch_backend import spec_with_dims, split_outputs

FORMATS = ("onnx", "openvino", "tensorrt")
COSINE_FP32 = 0.999
COSINE_FP16 = 0.995
# INT8 features move further from the float ones, and retrieval is their main gate; the mean cosine catches a
# file the CPU runs wrongly: on a 2-core AVX2 CPU, 0.86 for an INT8 0288 whose 8-bit products saturated (0.98
# fixed), where 0267 in INT8 from the tests' small calibration sets gives 0.93.
COSINE_INT8_MEAN = 0.9
RANK1_DROP_INT8 = 1.0
OPSET = 17
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ExportError(RuntimeError):
    """The export could not be made or failed its parity check; the message says what and how to fix."""


# ----------------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class ParityResult:
    name: str  # what was compared, e.g. "openvino f32 vs torch"
    crops: int
    cosine_min: float
    cosine_mean: float
    threshold: float | None  # floor of cosine_min; None: not gated on it (INT8: retrieval and the mean)
    mean_threshold: float | None = None  # floor of cosine_mean (INT8 files)

    @property
    def passed(self) -> bool:
        return ((self.threshold is None or self.cosine_min >= self.threshold)
                and (self.mean_threshold is None or self.cosine_mean >= self.mean_threshold))


@dataclass(frozen=True)
class RetrievalResult:
    dataset: str
    protocol: str
    rank1_reference: float
    rank1_candidate: float
    map_reference: float
    map_candidate: float
    max_drop: float = RANK1_DROP_INT8
    # "export": query and gallery embedded by the exported file; "export vs reference": queries by the file
    # against a gallery embedded by the PyTorch model (the file's features must be the model's features)
    features: str = "export"

    @property
    def drop(self) -> float:
        return self.rank1_reference - self.rank1_candidate

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop


@dataclass
class ExportReport:
    weights: str
    format: str
    precision: str
    artefact: str
    onnx: str
    simplifier: str
    spec: dict
    seconds: float = 0.0
    parity: list[ParityResult] = field(default_factory=list)
    retrieval: list[RetrievalResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # where the preprocessing the exported file declares differs from the checkpoint's
    spec_mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (not self.spec_mismatches and all(p.passed for p in self.parity)
                and all(r.passed for r in self.retrieval))

    def to_json(self) -> str:
        raw = asdict(self)
        raw["parity"] = [{**asdict(p), "passed": p.passed} for p in self.parity]
        raw["retrieval"] = [{**asdict(r), "drop": r.drop, "passed": r.passed} for r in self.retrieval]
        raw["passed"] = self.passed
        return json.dumps(raw, indent=2)

    def format_text(self) -> str:
        lines = [f"export {self.format} ({self.precision}) -> {self.artefact}  [{self.seconds:.1f} s, graph "
                 f"simplified by {self.simplifier}]"]
        for p in self.parity:
            gate = f"min >= {p.threshold}" if p.threshold is not None else \
                f"mean >= {p.mean_threshold}" if p.mean_threshold is not None else "(reported)"
            lines.append(f"  parity {p.name:<34} {p.crops:4d} crops  cosine min {p.cosine_min:.5f} "
                         f"mean {p.cosine_mean:.5f}  {gate}  {'ok' if p.passed else 'FAIL'}")
        for m in self.spec_mismatches:
            lines.append(f"  declared preprocessing differs from the checkpoint's: {m}  FAIL")
        for r in self.retrieval:
            lines.append(f"  retrieval {r.dataset}/{r.protocol:<16} {r.features:<19} "
                         f"rank-1 {r.rank1_reference:5.1f} -> "
                         f"{r.rank1_candidate:5.1f} (drop {r.drop:+.1f}, max {r.max_drop})  mAP {r.map_reference:5.1f} "
                         f"-> {r.map_candidate:5.1f}  {'ok' if r.passed else 'FAIL'}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- real crops

def default_pets_paths() -> tuple[Path, Path]:
    """PETS09-S2L1 video and ground truth under the shared data folder (CCREID_SHARED or ../shared)."""
    shared = Path(os.environ.get("CCREID_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
    root = shared / "data" / "pets09-s2l1"
    return root / "vtest.avi", root / "gt" / "gt_dev.txt"


def pets_crops(video: str | Path, gt: str | Path, max_crops: int = 64, min_height: int = 40) -> list[np.ndarray]:
    """Person boxes cut from the video with its MOT ground truth, spread evenly over the annotated boxes."""
    video, gt = Path(video), Path(gt)
    for p in (video, gt):
        if not p.is_file():
            raise ExportError(f"parity crops: {p} not found; pass --parity-video/--parity-gt (PETS09-S2L1 vtest.avi "
                              f"and gt/gt_dev.txt) or set CCREID_SHARED to the shared data folder")
    rows = np.loadtxt(gt, delimiter=",", ndmin=2)
    rows = rows[rows[:, 5] >= min_height]
    if len(rows) == 0:
        raise ExportError(f"parity crops: {gt} has no boxes at least {min_height} px tall")
    pick = rows[np.unique(np.linspace(0, len(rows) - 1, min(max_crops, len(rows))).round().astype(int))]
    wanted: dict[int, list[np.ndarray]] = {}
    for r in pick:
        wanted.setdefault(int(r[0]), []).append(r)
    cap = cv2.VideoCapture(str(video))
    crops: list[np.ndarray] = []
    frame_no = 0
    try:
        while wanted and frame_no < max(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            frame_no += 1  # MOT frames are 1-based
            for r in wanted.pop(frame_no, []):
                x, y, w, h = r[2:6]
                x1, y1 = max(0, int(round(x))), max(0, int(round(y)))
                x2, y2 = min(frame.shape[1], int(round(x + w))), min(frame.shape[0], int(round(y + h)))
                if x2 - x1 >= 8 and y2 - y1 >= 8:
                    crops.append(frame[y1:y2, x1:x2].copy())
    finally:
        cap.release()
    if not crops:
        raise ExportError(f"parity crops: could not decode any annotated frame of {video}")
    return crops


def image_files(folder: str | Path, limit: int) -> list[Path]:
    """Up to `limit` images spread evenly over the sorted files of a folder (SynthCC root: its train/)."""
    base = Path(folder)
    if (base / "train").is_dir():
        base = base / "train"
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "masks" not in p.parts)
    if not files:
        raise ExportError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    idx = np.unique(np.linspace(0, len(files) - 1, min(limit, len(files))).round().astype(int))
    return [files[i] for i in idx]


def read_images(paths: list[Path]) -> list[np.ndarray]:
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ExportError(f"cannot read image {p}")
        out.append(img)
    return out


# ----------------------------------------------------------------------------------------------- ONNX

class InferenceGraph(nn.Module):
    """Only the inference outputs of a model, as a flat tuple (identity[, appearance])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        identity, appearance = split_outputs(self.model(images))
        return identity if appearance is None else (identity, appearance)


class OnnxFileReference(nn.Module):
    """An ONNX ReID file as the reference of its own export: ONNX Runtime, FP32, CPU, with the batch axis made
    dynamic and the preprocessing read exactly as the runtime's ONNX Runtime embedder reads it. It returns
    the file's raw outputs (the checks compare cosines), as a checkpoint's forward does."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from reid.inference.onnx_backend import OnnxRuntimeEmbedder

        self.runner = OnnxRuntimeEmbedder(path, providers="CPUExecutionProvider")
        self.spec = self.runner.spec
        self.path = path
        # what _prepare and spec_with_dims read of a checkpoint's model
        self.arch = type("OnnxFileArch", (), {"feature": "identity"})()
        self.register_parameter("anchor", nn.Parameter(torch.zeros(1), requires_grad=False))

    def forward(self, x: torch.Tensor):
        r = self.runner
        names = [r.identity_output] + ([r.appearance_output] if r.appearance_output else [])
        outs = [torch.from_numpy(o.reshape(len(x), -1))
                for o in r.session.run(names, {r.input_name: x.detach().cpu().numpy().astype(np.float32)})]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def write_fp32(self, out: Path, spec: PreprocessSpec, source_sha256: str) -> str:
        """The file itself with a dynamic batch axis and the spec metadata (what `export_onnx` writes for a
        checkpoint); its graph is left as its publisher made it."""
        from reid.inference.onnx_backend import make_batch_dynamic

        proto = onnx.load(str(self.path))
        make_batch_dynamic(proto, "batch")
        set_metadata(proto, spec, {"ccreid.source_sha256": source_sha256, "ccreid.precision": "fp32",
                                   "ccreid.source_file": self.path.name})
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(out))
        return "none (an ONNX source is kept as published)"


def _overlap(old: int, new: int) -> np.ndarray:
    """(new, old): the share of each old cell that each new cell covers when a row of `old` cells is spread over
    `new` cells of equal length (each column sums to 1)."""
    edges_old, edges_new = np.arange(old + 1, dtype=np.float64), np.linspace(0, old, new + 1)
    lo = np.maximum(edges_new[:-1, None], edges_old[None, :-1])
    hi = np.minimum(edges_new[1:, None], edges_old[None, 1:])
    return np.clip(hi - lo, 0, None)


def resize_ir_input(model, height: int, width: int):
    """An OpenVINO ReID graph taking `height` x `width` crops instead of its own size.

    Convolutions and global means follow any input size; what does not is a last convolution whose kernel
    covers its whole input map (a learned weighted pooling: Intel's 0288 ends in a 16x8 depthwise one). Its
    kernel is resampled to the new map, each new cell taking the summed weights of the old cells it covers, so
    the same features over a smaller map pool to about the same value. Whether the resized model is still as
    good is measured, not assumed: `reid export --input-size` gates it on SynthCC rank-1 against the file as
    published. ExportError where the graph is not one this can resize."""
    import openvino as ov
    from openvino import opset13 as ops

    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or shape[2].is_dynamic or shape[3].is_dynamic:
        raise ExportError(f"--input-size: the model's input must be NCHW with a fixed height and width, got {shape}")
    old_h, old_w = shape[2].get_length(), shape[3].get_length()
    if height <= 0 or width <= 0:
        raise ExportError(f"--input-size must be positive, got {height}x{width}")
    pools = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        src, kernel = op.input(0).get_partial_shape(), op.input(1).get_partial_shape()
        if src.is_dynamic or kernel.is_dynamic:
            continue
        map_hw, kernel_hw = tuple(src.to_shape())[2:], tuple(kernel.to_shape())[-2:]
        if map_hw != kernel_hw or map_hw == (1, 1):
            continue
        weights = op.input_value(1).get_node()
        if weights.get_type_name() == "Convert":  # a compressed (FP16) file: the float weights behind it
            weights = weights.input_value(0).get_node()
        if weights.get_type_name() != "Constant":
            raise ExportError(f"--input-size: the pooling convolution {op.get_friendly_name()} takes its kernel from "
                              f"a {weights.get_type_name()}, not a constant; this graph cannot be resized")
        if old_h % map_hw[0] or old_w % map_hw[1]:
            raise ExportError(f"--input-size: {op.get_friendly_name()} pools a {map_hw[0]}x{map_hw[1]} map of a "
                              f"{old_h}x{old_w} input, not a whole fraction of it; this graph cannot be resized")
        stride_h, stride_w = old_h // map_hw[0], old_w // map_hw[1]
        if height % stride_h or width % stride_w:
            raise ExportError(f"--input-size {height}x{width}: the model reduces its {old_h}x{old_w} input "
                              f"{stride_h}x{stride_w}-fold before {op.get_friendly_name()}; give a height that is a "
                              f"multiple of {stride_h} and a width that is a multiple of {stride_w}")
        pools.append((op, weights, map_hw, (height // stride_h, width // stride_w)))
    for op, weights, (mh, mw), (nh, nw) in pools:
        k = weights.get_data().astype(np.float32)
        resampled = np.einsum("ih,...hw,jw->...ij", _overlap(mh, nh), k, _overlap(mw, nw))
        op.input(1).replace_source_output(ops.constant(np.ascontiguousarray(resampled, np.float32)).output(0))
    before = [o.get_partial_shape() for o in model.outputs]
    new_shape = ov.PartialShape([shape[0], shape[1], height, width])
    try:
        model.reshape({model.inputs[0].any_name: new_shape})
    except RuntimeError as exc:
        why = (str(exc).strip().splitlines() or ["no reason given"])[-1]
        raise ExportError(f"--input-size {height}x{width}: OpenVINO cannot reshape the graph ({why})") from exc
    after = [o.get_partial_shape() for o in model.outputs]
    if [list(s)[1:] for s in before] != [list(s)[1:] for s in after]:
        raise ExportError(f"--input-size {height}x{width}: the outputs change shape ({before} -> {after}); the graph "
                          f"pools in a way this cannot resize")
    return model


class OpenVinoFileReference(nn.Module):
    """An OpenVINO IR ReID file (a third party's float IR, as Intel's 0288) as the reference of its own export:
    the file as published, in exact FP32 on the CPU plugin, batch axis dynamic, preprocessing as the runtime's
    OpenVINO embedder reads it (its runtime info, a sidecar or the table of known files). An IR source exports
    only to OpenVINO (an INT8 or FP16 IR); there is no ONNX file to give ONNX Runtime or TensorRT."""

    def __init__(self, path: Path, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        import openvino as ov
        import openvino.properties.hint as hints

        from reid.inference.openvino_backend import dynamic_batch, read_openvino_spec, spec_with_input_size

        core = ov.Core()
        model = core.read_model(str(path))
        spec = read_openvino_spec(model, path)
        if input_size is not None:
            model = resize_ir_input(model, *input_size)
        self.spec = spec_with_input_size(model, spec)
        model = dynamic_batch(model)
        self.compiled = core.compile_model(model, "CPU", {hints.inference_precision: ov.Type.f32})
        names = [o.any_name for o in self.compiled.outputs]
        self.outputs = [names.index("identity") if "identity" in names else 0] + \
            ([names.index("appearance")] if "appearance" in names else [])
        self.path = path
        self.arch = type("OpenVinoFileArch", (), {"feature": "identity"})()
        self.register_parameter("anchor", nn.Parameter(torch.zeros(1), requires_grad=False))

    def forward(self, x: torch.Tensor):
        result = self.compiled({0: x.detach().cpu().numpy().astype(np.float32)})
        outs = [torch.from_numpy(np.array(result[i]).reshape(len(x), -1)) for i in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


# suffix -> (reference class, what the file is): files a runtime reads as published, the reference of their export
FILE_REFERENCES = {".onnx": (OnnxFileReference, "an ONNX ReID file"),
                   ".xml": (OpenVinoFileReference, "an OpenVINO ReID file (IR)")}


def load_model(weights: str | Path, feature: str | None = None,
               input_size: tuple[int, int] | None = None) -> tuple[nn.Module, PreprocessSpec]:
    """The reference an export is checked against, and its preprocessing; `input_size` (OpenVINO IR files only)
    resizes the file's input (`resize_ir_input`)."""
    from reid.models import load_checkpoint

    kind = FILE_REFERENCES.get(Path(weights).suffix.lower())
    if input_size is not None and kind is not FILE_REFERENCES[".xml"]:
        raise ExportError(f"--input-size resizes an OpenVINO IR (.xml); {weights} is not one (a model trained here "
                          f"takes the size it was trained at: data.height / data.width in its recipe)")
    if kind is not None:  # a third party's file, run as published
        reference, what = kind
        if feature is not None:
            raise ExportError(f"--feature applies to .safetensors checkpoints; {weights} is {what} with the outputs "
                              "its publisher gave it")
        if not Path(weights).is_file():
            raise ExportError(f"--weights: {weights} not found")
        try:
            model = reference(Path(weights)) if input_size is None else reference(Path(weights), input_size)
        except ExportError:
            raise
        except Exception as exc:  # unreadable file, a graph the runtime refuses, no preprocessing spec
            raise ExportError(f"--weights {weights}: cannot be run as {what}: {exc}") from exc
        return model.eval(), spec_with_dims(model, model.spec)

    try:
        model, spec = load_checkpoint(weights, "cpu", feature)
    except FileNotFoundError as exc:
        raise ExportError(f"--weights: {exc}") from exc
    except ValueError as exc:
        raise ExportError(f"--weights {weights}: {exc}") from exc
    return model.eval(), spec_with_dims(model, spec)


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Constant folding / fusion with onnxslim; ONNX Runtime's own optimiser covers the rest at load."""
    try:
        import onnxslim
    except ImportError:
        return model, "none (onnxslim not installed; ONNX Runtime optimises at load)"
    return onnxslim.slim(model), f"onnxslim {onnxslim.__version__}"


def zero_denormal_initializers(model: onnx.ModelProto) -> int:
    """Set denormal float32 weights of the graph to zero in place; returns how many.

    A checkpoint without denormals (`reid.checkpoint.zero_denormals`) still gains them here: folding a batch norm
    into its convolution multiplies weights by a scale that can be tiny. ONNX Runtime runs a graph holding them
    several times slower (a CRE + BSGA export with 125,742: 196 against 22 ms a batch of 8, 2026-12-05)."""
    from onnx import numpy_helper

    from reid.checkpoint import zero_denormals

    count = 0
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = torch.from_numpy(numpy_helper.to_array(init).copy())
        n = zero_denormals([values])
        if n:
            init.CopyFrom(numpy_helper.from_array(values.numpy(), init.name))
            count += n
    return count


def set_metadata(model: onnx.ModelProto, spec: PreprocessSpec, extra: dict[str, str]) -> None:
    entries = {SPEC_METADATA_KEY: spec.to_json(), **extra}
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def export_onnx(model: nn.Module, spec: PreprocessSpec, out: Path, source_sha256: str) -> str:
    """FP32 ONNX with a dynamic batch axis and the spec metadata; returns the simplifier used."""
    graph = InferenceGraph(model).eval()
    outputs = ["identity"] + (["appearance"] if spec.appearance_dim else [])
    dummy = torch.zeros((2, 3, spec.height, spec.width), dtype=torch.float32)
    axes = {name: {0: "batch"} for name in ["images", *outputs]}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript;
        # the TorchScript path handles these plain CNNs exactly, so its notice is silenced here.
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(graph, (dummy,), str(raw), input_names=["images"], output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(raw))
    proto, simplifier = simplify(proto)
    zero_denormal_initializers(proto)
    set_metadata(proto, spec, {"ccreid.source_sha256": source_sha256, "ccreid.precision": "fp32"})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return simplifier


def onnx_to_fp16(src: Path, dst: Path, spec: PreprocessSpec, source_sha256: str) -> None:
    """FP16 weights and compute; inputs/outputs stay float32 so callers feed the same tensors."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    set_metadata(proto, spec, {"ccreid.source_sha256": source_sha256, "ccreid.precision": "fp16"})
    onnx.save(proto, str(dst))


def onnx_to_int8(src: Path, dst: Path, spec: PreprocessSpec, calib: list[np.ndarray], source_sha256: str) -> None:
    """ONNX Runtime static INT8 quantisation (QDQ, per-channel weights) calibrated on real images."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([preprocess_crops(calib[i:i + 16], spec) for i in range(0, len(calib), 16)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # The BN neck after pooling has no conv to fold into and runs on a (N, C) tensor: keep it in
        # float (quantising it per-channel is unsupported and saves nothing).
        skip = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "BatchNormalization"]
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=skip)
    proto = onnx.load(str(dst))
    set_metadata(proto, spec, {"ccreid.source_sha256": source_sha256, "ccreid.precision": "int8"})
    onnx.save(proto, str(dst))


# ----------------------------------------------------------------------------------------------- OpenVINO

def quantise_openvino(model, calib: list[np.ndarray], spec: PreprocessSpec, overflow_fix: str = "enable"):
    """An OpenVINO model quantised to INT8 by NNCF post-training quantisation, calibrated on `calib` crops.

    `overflow_fix` (NNCF's OverflowFix): CPUs without int8 dot-product instructions (AVX2 without VNNI) multiply
    in 16-bit sums that saturate at full 8-bit weight ranges; NNCF's default guards the first layer only, and on a
    2-core AVX2 EPYC Intel's 0288 then gave features at cosine 0.86 on average to its FP32 ones (0.98 with every
    layer guarded) and missed a swap on PETS that the float model finds. A file may run on any CPU, so every
    layer is guarded (`benchmarks/int8_parity.py` measures the other modes)."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError as exc:
        raise ExportError("--int8 for OpenVINO needs NNCF: pip install nncf") from exc
    batches = [preprocess_crops(calib[i:i + 8], spec) for i in range(0, len(calib), 8)]
    return nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
                         subset_size=len(batches),
                         advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix)))


def export_openvino(onnx_path: Path, out_xml: Path, spec: PreprocessSpec, fp16: bool,
                    calib: list[np.ndarray] | None, overflow_fix: str = "enable",
                    input_size: tuple[int, int] | None = None) -> None:
    """ONNX (or a float OpenVINO IR) -> OpenVINO IR with the spec in its runtime info; INT8 via NNCF
    post-training quantisation (`quantise_openvino`; `overflow_fix` other than its default only for
    benchmarks/int8_parity.py); an IR source at `input_size` if given (`resize_ir_input`)."""
    import openvino as ov

    if onnx_path.suffix.lower() == ".xml":  # an IR source (OpenVinoFileReference): read as published
        from reid.inference.openvino_backend import dynamic_batch

        model = ov.Core().read_model(str(onnx_path))
        if input_size is not None:
            model = resize_ir_input(model, *input_size)
        model = dynamic_batch(model)
    else:
        model = ov.convert_model(str(onnx_path))
    if calib is not None:
        model = quantise_openvino(model, calib, spec, overflow_fix)
    model.set_rt_info(spec.to_json(), [SPEC_METADATA_KEY])
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=fp16)


# ----------------------------------------------------------------------------------------------- checks

def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def torch_features(model: nn.Module, crops: list[np.ndarray], spec: PreprocessSpec,
                   batch: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    ids, apps = [], []
    with torch.inference_mode():
        for s in range(0, len(crops), batch):
            identity, appearance = split_outputs(model(torch.from_numpy(preprocess_crops(crops[s:s + batch], spec))))
            ids.append(identity.numpy())
            if appearance is not None:
                apps.append(appearance.numpy())
    return np.concatenate(ids), (np.concatenate(apps) if apps else None)


def parity(name: str, reference: tuple[np.ndarray, np.ndarray | None], embedder: Embedder,
           crops: list[np.ndarray], threshold: float | None, mean_threshold: float | None = None
           ) -> list[ParityResult]:
    out = embedder.embed(crops)
    results = []
    for label, ref, got in (("identity", reference[0], out.identity), ("appearance", reference[1], out.appearance)):
        if ref is None and got is None:
            continue
        if ref is None or got is None or ref.shape != got.shape:
            raise ExportError(f"parity {name}: {label} output shapes differ: torch "
                              f"{None if ref is None else ref.shape} vs exported {None if got is None else got.shape}")
        cos = cosine_rows(ref, got)
        results.append(ParityResult(f"{name} {label}", len(crops), float(cos.min()), float(cos.mean()), threshold,
                                    mean_threshold))
    return results


PREPROCESSING_FIELDS = ("height", "width", "colour", "scale", "mean", "std")


def spec_mismatches(checkpoint: PreprocessSpec, declared: PreprocessSpec) -> list[str]:
    """The preprocessing fields where what an exported file declares (and its embedder applies) is not what
    the checkpoint was trained with."""
    out = []
    for name in PREPROCESSING_FIELDS:
        want, got = getattr(checkpoint, name), getattr(declared, name)
        same = want == got if isinstance(want, str) else np.allclose(np.asarray(want, float), np.asarray(got, float),
                                                                       rtol=0, atol=1e-7)
        if not same:
            out.append(f"{name}: checkpoint {want!r}, exported file {got!r}")
    return out


class _ReferenceFeatures:
    """A reference model (and its preprocessing) in the embedder's place, for `retrieval_check`."""

    def __init__(self, model: nn.Module, spec: PreprocessSpec) -> None:
        self.model, self.spec = model, spec

    def embed(self, crops: list[np.ndarray]) -> SimpleNamespace:
        return SimpleNamespace(identity=torch_features(self.model, crops, self.spec)[0])


def retrieval_check(model: nn.Module, spec: PreprocessSpec, embedder: Embedder, root: Path,
                    batch: int = 64, label: str = "export", cross: bool = True) -> list[RetrievalResult]:
    """Rank-1 / mAP of the PyTorch model and of the exported file on the same SynthCC query/gallery: the
    file's features alone (`label`), and (`cross`) the file's query features against the model's gallery
    features."""
    from reid.datasets.levelling import load_for_model
    from reid.evaluation import cosine_distance, evaluate
    from reid.transforms import read_record

    dataset = load_for_model("synthcc", root, spec)  # levelled as the model's training cameras were
    results = []
    for split in dataset.eval_splits:
        records = list(split.query) + list(split.gallery)
        ref_parts, cand_parts = [], []
        for s in range(0, len(records), batch):
            crops = [read_record(r) for r in records[s:s + batch]]
            ref_parts.append(torch_features(model, crops, spec)[0])
            cand_parts.append(embedder.embed(crops).identity)
        nq = len(split.query)
        q, g = split.query, split.gallery

        def ids(recs, attr):
            return np.asarray([getattr(r, attr) for r in recs], np.int64)

        ref, cand = np.concatenate(ref_parts), np.concatenate(cand_parts)
        pairs = {"reference": (ref[:nq], ref[nq:]), label: (cand[:nq], cand[nq:])}
        if cross:
            pairs["export vs reference"] = (cand[:nq], ref[nq:])
        scores = {}
        for features, (query, gallery) in pairs.items():
            dist = cosine_distance(query, gallery)
            scores[features] = {proto: evaluate(dist, ids(q, "pid"), ids(g, "pid"), ids(q, "camid"),
                                                ids(g, "camid"), ids(q, "clothes"), ids(g, "clothes"), mode=mode)
                                for proto, mode in split.protocols.items()}
        for features in pairs:
            if features == "reference":
                continue
            for proto in split.protocols:
                r, c = scores["reference"][proto], scores[features][proto]
                results.append(RetrievalResult(f"synthcc:{split.name}", proto, float(r["rank1"]), float(c["rank1"]),
                                               float(r["mAP"]), float(c["mAP"]), features=features))
    return results


# ----------------------------------------------------------------------------------------------- driver

@dataclass(frozen=True)
class ExportOptions:
    weights: Path
    format: str = "onnx"
    out: Path | None = None
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None
    calib_size: int = 300
    eval_root: Path | None = None
    batch: BatchProfile = BatchProfile()
    parity_video: Path | None = None
    parity_gt: Path | None = None
    parity_crops: int = 64
    threads: int = 0
    feature: str | None = None  # override of the checkpoint's retrieval vector (ArchConfig.feature)
    input_size: tuple[int, int] | None = None  # (height, width): an OpenVINO IR source resized (resize_ir_input)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.fp16 and self.int8:
            raise ExportError("choose one of --fp16 and --int8")
        if self.int8 and self.calib is None:
            raise ExportError("--int8 needs --calib DIR: a folder of person crops (a SynthCC root uses its train/)")
        if self.int8 and self.format == "tensorrt":
            raise ExportError("INT8 TensorRT engines are not supported; use --fp16 for TensorRT, or --int8 with "
                              "--format openvino|onnx for CPUs")

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def artefact_path(self) -> Path:
        if self.out is not None:
            return self.out
        stem = self.weights.with_suffix("")
        tag = "" if self.precision == "fp32" else f"_{self.precision}"
        if self.format == "openvino":
            return stem.parent / f"{stem.name}{tag}_openvino" / f"{stem.name}{tag}.xml"
        return stem.parent / f"{stem.name}{tag}.onnx"


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class _Checked:
    """What the check of an export compares against: the PyTorch model, its preprocessing, its features on
    real crops, and where the files are."""

    model: nn.Module
    spec: PreprocessSpec
    crops: list[np.ndarray]
    reference: tuple[np.ndarray, np.ndarray | None]
    eval_root: Path | None
    out: Path
    fp32_onnx: Path
    source_sha: str
    # with --input-size: the file as published, at its own size (the resize is gated against it)
    published: tuple[nn.Module, PreprocessSpec] | None = None


def _prepare(opts: ExportOptions) -> _Checked:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model, spec = load_model(opts.weights, opts.feature, opts.input_size)
    spec = PreprocessSpec(**{**spec.__dict__, "extra": {**spec.extra, "batch_profile": str(opts.batch),
                                                        "retrieval_feature": model.arch.feature}})
    out = opts.artefact_path()
    expected = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".onnx"}[opts.format]
    if out.resolve() == Path(opts.weights).resolve():
        raise ExportError(f"--out {out} is the ONNX file being exported; name another file")
    if out.suffix != expected:
        raise ExportError(f"--out {out}: a {opts.format} export writes a {expected} file"
                          + (" (the engine is cached beside it)" if opts.format == "tensorrt" else ""))
    video, gt = default_pets_paths()
    crops = pets_crops(opts.parity_video or video, opts.parity_gt or gt, opts.parity_crops)
    eval_root = opts.eval_root
    gated = opts.int8 or opts.input_size is not None  # both are checked on SynthCC retrieval
    if gated and eval_root is None and opts.calib and (opts.calib / "query").is_dir():
        eval_root = opts.calib
    if opts.input_size is not None and eval_root is None:
        raise ExportError("--input-size exports are gated on SynthCC rank-1 against the file as published: pass "
                          "--eval-root SYNTHCC_DIR (or a SynthCC root as --calib)")
    if opts.int8 and eval_root is None:
        raise ExportError("--int8 exports are gated on a SynthCC retrieval check: pass --eval-root SYNTHCC_DIR "
                          "(or a SynthCC root as --calib)")
    if isinstance(model, OpenVinoFileReference):
        if opts.format != "openvino":
            raise ExportError(f"--weights {opts.weights} is an OpenVINO IR: it exports only with --format openvino "
                              "(an INT8 or FP16 IR)")
        fp32_onnx = Path(opts.weights)  # the float source is the IR itself; nothing is written beside the export
    elif opts.format == "openvino":
        fp32_onnx = out.with_suffix(".onnx")  # kept beside the IR: the TensorRT / ORT source of the same model
    elif opts.format == "onnx" and opts.precision != "fp32":
        fp32_onnx = out.with_name(out.stem + ".fp32.onnx")
    else:
        fp32_onnx = out
    return _Checked(model, spec, crops, torch_features(model, crops, spec), eval_root, out, fp32_onnx,
                    sha256_file(opts.weights),
                    load_model(opts.weights) if opts.input_size is not None else None)


def level_calibration(images: list[np.ndarray], spec: PreprocessSpec) -> list[np.ndarray]:
    """Calibration images as a colour-levelled model sees them: levelled to its reference as one camera.

    A folder of crops says nothing of their cameras, so the folder's mean is levelled as a whole, over the box
    centres (a folder need not have masks); INT8 calibration needs the value ranges the model will meet, which a
    whole-folder gain gives closely enough, and raw images would not for a camera with a strong cast."""
    from reid.inference.levelling import apply_lut, centre_mean, gain_lut, gains_for, reference_of

    reference = reference_of(spec)
    if reference is None or not images:
        return images
    lut = gain_lut(gains_for(reference, np.mean([centre_mean(img) for img in images], axis=0)))
    return [apply_lut(img, lut) for img in images]


def calibration_images(folder: str | Path, limit: int, spec: PreprocessSpec) -> list[np.ndarray]:
    """The INT8 calibration images of `folder`, as the model will see such crops (levelled if it is levelled)."""
    return level_calibration(read_images(image_files(folder, limit)), spec)


def run_export(opts: ExportOptions, log=print) -> ExportReport:
    """Write the export `opts` asks for, then check it (`check_export`); the report says whether it passed."""
    t0 = time.perf_counter()
    c = _prepare(opts)
    calib = calibration_images(opts.calib, opts.calib_size, c.spec) if opts.int8 else None
    if isinstance(c.model, OpenVinoFileReference):
        simplifier = "none (an OpenVINO IR source is read as published)"
    elif isinstance(c.model, OnnxFileReference):
        simplifier = c.model.write_fp32(c.fp32_onnx, c.spec, c.source_sha)
    else:
        simplifier = export_onnx(c.model, c.spec, c.fp32_onnx, c.source_sha)
    if not isinstance(c.model, OpenVinoFileReference):
        log(f"wrote {c.fp32_onnx} ({c.fp32_onnx.stat().st_size / 1e6:.1f} MB, simplified by {simplifier})")
    if opts.format == "onnx" and opts.fp16:
        onnx_to_fp16(c.fp32_onnx, c.out, c.spec, c.source_sha)
    elif opts.format == "onnx" and opts.int8:
        onnx_to_int8(c.fp32_onnx, c.out, c.spec, calib, c.source_sha)
    elif opts.format == "openvino":
        export_openvino(c.fp32_onnx, c.out, c.spec, opts.fp16, calib, input_size=opts.input_size)
    report = ExportReport(str(opts.weights), opts.format, opts.precision, str(c.out), str(c.fp32_onnx), simplifier,
                          json.loads(c.spec.to_json()))
    _check(opts, c, report, log)
    report.seconds = time.perf_counter() - t0
    Path(str(c.out) + ".export.json").write_text(report.to_json())
    return report


def check_export(opts: ExportOptions, log=print) -> ExportReport:
    """Check an export that is already on disk (`opts.artefact_path()`) against its checkpoint, exactly as
    `run_export` checks a file it has just written (nothing is written)."""
    t0 = time.perf_counter()
    c = _prepare(opts)
    for path in (c.out, c.fp32_onnx):
        if not path.is_file():
            raise ExportError(f"{path} not found: nothing to check (run the export first)")
    report = ExportReport(str(opts.weights), opts.format, opts.precision, str(c.out), str(c.fp32_onnx),
                          "n/a (an existing file was checked)", json.loads(c.spec.to_json()))
    _check(opts, c, report, log)
    report.seconds = time.perf_counter() - t0
    return report


def _check(opts: ExportOptions, c: _Checked, report: ExportReport, log) -> None:
    """Run the exported file through the embedder the runtime uses, with the preprocessing the file declares,
    and compare with the PyTorch model: declared preprocessing, parity on real crops, INT8 retrieval."""
    threshold = COSINE_FP16 if opts.fp16 else COSINE_FP32 if opts.precision == "fp32" else None
    mean_threshold = COSINE_INT8_MEAN if opts.int8 else None
    ref = "onnxruntime fp32 (source file)" if isinstance(c.model, OnnxFileReference) else \
        "openvino fp32 (source file)" if isinstance(c.model, OpenVinoFileReference) else "torch"
    if opts.format == "onnx":
        from reid.inference.onnx_backend import OnnxRuntimeEmbedder

        embedder = OnnxRuntimeEmbedder(c.out, threads=opts.threads)
        report.parity += parity(f"onnxruntime {opts.precision} vs {ref}", c.reference, embedder, c.crops, threshold,
                                mean_threshold)
    elif opts.format == "openvino":
        from reid.inference.openvino_backend import OpenVinoEmbedder

        # INT8 is checked as the runtime runs it (`precision: auto`: the float remainder in the plugin's
        # default, bfloat16 on AMX CPUs); float files are checked in exact FP32 and, below, in that default.
        embedder = OpenVinoEmbedder(c.out, threads=opts.threads, precision="auto" if opts.int8 else "f32")
        report.parity += parity(f"openvino {opts.precision} vs {ref}", c.reference, embedder, c.crops, threshold,
                                mean_threshold)
        if opts.precision != "int8":
            # The CPU plugin's default precision (bfloat16 on AMX CPUs) is what `precision: auto` runs.
            fast = OpenVinoEmbedder(c.out, threads=opts.threads, precision="auto")
            report.parity += parity(f"openvino {opts.precision} plugin-default vs {ref}", c.reference, fast, c.crops,
                                    COSINE_FP16)
    else:
        from reid.inference.tensorrt_backend import TensorRTEmbedder, tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise ExportError(f"--format tensorrt: {why}. The ONNX file {c.fp32_onnx} was written; build the engine "
                              f"on the GPU machine with `python -m reid export --format tensorrt` there")
        embedder = TensorRTEmbedder(c.fp32_onnx, fp16=opts.fp16, profile=opts.batch, cache_dir=c.out.parent)
        report.artefact = str(embedder.engine_path)
        report.parity += parity(f"tensorrt {opts.precision} vs {ref}", c.reference, embedder, c.crops, threshold,
                                mean_threshold)
    report.spec_mismatches = spec_mismatches(c.spec, embedder.spec)
    if c.published is not None:
        # the resize's own cost: the resized float model against the file as published, both in exact FP32
        log(f"input-size retrieval check on {c.eval_root} ...")
        report.retrieval += retrieval_check(*c.published, _ReferenceFeatures(c.model, c.spec), Path(c.eval_root),
                                            label=f"{c.spec.height}x{c.spec.width} float", cross=False)
    if opts.int8:
        log(f"INT8 retrieval check on {c.eval_root} ...")
        report.retrieval += retrieval_check(c.model, c.spec, embedder, Path(c.eval_root))
    if c.fp32_onnx != c.out and opts.format == "onnx":
        report.notes.append(f"FP32 ONNX kept at {c.fp32_onnx}")
