"""A trunk taken from a pretrained ONNX ReID model (e.g. Intel's person-reidentification-retail-0267).

No clothes-changing model trained here from scratch on synthetic people carries its cue to cameras it never saw
(README, "Why still-crop figures do not carry to the scenes"). A same-clothes model trained on real people has
what those lack: features that hold across real cameras. This module turns such a file's graph, cut at a named
feature map, into a trainable torch module (onnx2torch), so the clothes-changing methods fine-tune it.

The checkpoint carries the graph's structure (without its weights, zlib + base64, a few tens of kB) in its
ArchConfig, so it rebuilds without the original file; the weights come from the checkpoint as for any trunk.
"""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from reid.models.clip import sha256_of  # the one file-hash helper of reid.models


def _with_batch_dim_free(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the batch dimension symbolic and infer every shape (onnx2torch needs the ranks of BatchNorm inputs).

    onnx's own inference stops at a Reshape whose target comes from a Shape node (the 0267 file's rewritten
    normalisations); onnxruntime's symbolic inference follows it.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    if len(model.graph.input) != 1:
        raise ValueError(f"an ONNX trunk needs a model with one input, this one has {len(model.graph.input)}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims:
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "N"
    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def cut_graph(path: str | Path, feature: str | None, sha256: str | None = None) -> onnx.ModelProto:
    """The graph of ``path`` from its input to the tensor ``feature`` (None: its first output), shapes inferred."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model.pretrained {file} not found: an `onnx` backbone starts from a local ONNX "
                                "ReID model (e.g. ../shared/models/reid/person-reidentification-retail-0267.ort.onnx)")
    if sha256 and (got := sha256_of(file)) != sha256.lower():
        raise ValueError(f"model.pretrained {file}: SHA-256 {got} is not the recipe's {sha256}")
    model = _with_batch_dim_free(onnx.load(str(file)))
    names = {o for n in model.graph.node for o in n.output}
    target = feature or model.graph.output[0].name
    if target not in names:
        raise ValueError(f"model.onnx_feature {target!r} is not a tensor of {file.name}; the node outputs include "
                         f"{sorted(names)[-8:]} (pick the last feature map before the model's pooling)")
    from onnx.utils import Extractor

    return Extractor(model).extract_model([model.graph.input[0].name], [target])


def _is_weight(init: onnx.TensorProto) -> bool:
    """Float tensors of more than 16 values are weights (the checkpoint holds them); integer tensors (shapes,
    axes) and small float constants (epsilons, scales) may not be module parameters, so they stay in the structure."""
    floating = init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    return floating and int(np.prod(init.dims)) > 16


def pack_structure(model: onnx.ModelProto) -> str:
    """The graph without its weights, as zlib + base64 text."""
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    for init in bare.graph.initializer:
        if _is_weight(init):
            for field in ("raw_data", "float_data", "double_data", "int32_data"):  # float16 may sit in int32_data
                init.ClearField(field)
    return base64.b64encode(zlib.compress(bare.SerializeToString(), 9)).decode("ascii")


def unpack_structure(text: str) -> onnx.ModelProto:
    """The packed graph with zeros where the weights were (the checkpoint's weights replace them)."""
    model = onnx.ModelProto.FromString(zlib.decompress(base64.b64decode(text)))
    for init in model.graph.initializer:
        if _is_weight(init):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
            init.CopyFrom(numpy_helper.from_array(np.zeros(tuple(init.dims), dtype), init.name))
    return model


def _patch_onnx2torch_opset_lookup() -> None:
    """onnx2torch 1.5 reads the export opset from ``torch.onnx.symbolic_helper``, which torch >= 2.9 no longer
    keeps up to date during an export (its converted Reshape/ReduceMean/Shape modules then fail in
    ``reid export``); read it where the TorchScript exporter keeps it."""
    import importlib

    try:
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # older torch: onnx2torch's own lookup works there
        return

    def opset() -> int:
        return GLOBALS.export_onnx_opset_version

    for name in ("utils.common", "node_converters.reduce", "node_converters.shape", "node_converters.squeeze"):
        module = importlib.import_module(f"onnx2torch.{name}")
        if hasattr(module, "get_onnx_version"):
            module.get_onnx_version = opset


class OnnxTrunk(nn.Module):
    """``forward(x) -> feature map`` of the cut graph; ``out_dim`` its channels."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        from onnx2torch import convert

        _patch_onnx2torch_opset_lookup()
        self.net = convert(model)
        out = model.graph.output[0].type.tensor_type.shape.dim
        if len(out) != 4:
            raise ValueError(f"model.onnx_feature must be a feature map (N, C, H, W); {model.graph.output[0].name} "
                             f"has rank {len(out)}")
        self.out_dim = int(out[1].dim_value)
        # The checkpoint restores only what the state dict holds: every tensor the structure leaves out must be
        # in it, or a rebuilt trunk would compute with zeros.
        stripped = sum(int(np.prod(i.dims)) for i in model.graph.initializer if _is_weight(i))
        held = sum(t.numel() for t in self.net.state_dict().values() if t.is_floating_point())
        if held < stripped:
            raise ValueError(f"this ONNX graph keeps {stripped - held} weight values outside torch parameters and "
                             "buffers after conversion, so a checkpoint could not restore them; cut it elsewhere "
                             "(model.onnx_feature) or use another file")
        self.structure = pack_structure(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_onnx_trunk(pretrained: str | None, feature: str | None, structure: str | None,
                     sha256: str | None = None) -> OnnxTrunk:
    """From the packed structure of a checkpoint when given, else from the pretrained file (its weights)."""
    if structure:
        return OnnxTrunk(unpack_structure(structure))
    if not pretrained:
        raise ValueError("model.backbone onnx needs model.pretrained: the ONNX ReID file to start from")
    return OnnxTrunk(cut_graph(pretrained, feature, sha256))
