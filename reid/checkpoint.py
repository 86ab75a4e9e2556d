"""Checkpoints in safetensors: tensors under `model.` (and `heads.` / `optim.<name>.` for resuming); JSON metadata.

`heads.` holds the training method's own heads (reid.methods), only in training checkpoints.

Metadata keys: ``ccreid.spec`` (PreprocessSpec JSON), ``ccreid.arch`` (ArchConfig JSON), and for
training checkpoints ``ccreid.train`` (epoch, seed, metrics, optimiser hyper-parameters). A model is
rebuilt from the file alone with `load_checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reid.inference.base import SPEC_METADATA_KEY, PreprocessSpec
from reid.models import ArchConfig, ReIDModel, build_model

ARCH_KEY = "ccreid.arch"
TRAIN_KEY = "ccreid.train"


def _optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{name}.{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


# (integer view, exponent bits, mantissa bits) of each float type: a denormal has a zero exponent and a non-zero
# mantissa. Read from the bits, as comparing floats is itself flushed where flush-to-zero is on.
_FLOAT_BITS = {torch.float32: (torch.int32, 0x7F800000, 0x007FFFFF),
               torch.float64: (torch.int64, 0x7FF << 52, (1 << 52) - 1),
               torch.float16: (torch.int16, 0x7C00, 0x03FF),
               torch.bfloat16: (torch.int16, 0x7F80, 0x007F)}


def zero_denormals(tensors: Iterable[torch.Tensor]) -> int:
    """Set denormal floats (below the type's smallest normal, not zero) to zero in place; returns how many.

    Tiny gradients and weight decay leave weights and optimiser moments as denormals, and CPUs compute with
    those at a fraction of their speed: ONNX Runtime ran a SynthCC CRE + BSGA model 5x slower a batch (70
    against 14 ms, 2026-12-05), PyTorch's backward pass 7.7x. Zero is what those values mean."""
    count = 0
    for t in tensors:
        bits = _FLOAT_BITS.get(t.dtype)
        if bits is None or t.numel() == 0:
            continue
        itype, exponent, mantissa = bits
        raw = t.detach().view(itype)
        tiny = ((raw & exponent) == 0) & ((raw & mantissa) != 0)
        n = int(tiny.sum())
        if n:
            raw.masked_fill_(tiny, 0)
            count += n
    return count


def save_checkpoint(path: str | Path, model: ReIDModel, spec: PreprocessSpec, *, inference_only: bool,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    train_state: dict[str, Any] | None = None, heads: torch.nn.Module | None = None) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves a torn checkpoint."""
    arch = model.arch
    if inference_only:
        weights = model.inference_state_dict()
        arch = arch.model_copy(update={"num_classes": 0, "num_clothes": 0, "far_head": False, "pretrained": None,
                                        "pretrained_sha256": None})
    else:
        weights = model.state_dict()
        arch = arch.model_copy(update={"pretrained": None, "pretrained_sha256": None})
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in weights.items()}
    if inference_only:
        # a model file is for inference: no denormal weights (a training checkpoint keeps its exact state)
        tensors = {k: v.clone() for k, v in tensors.items()}
        zero_denormals(tensors.values())
    if heads is not None and not inference_only:
        tensors.update({f"heads.{k}": v.detach().cpu().contiguous() for k, v in heads.state_dict().items()})
    meta = {SPEC_METADATA_KEY: spec.to_json(), ARCH_KEY: arch.model_dump_json()}
    train_state = dict(train_state or {})
    groups = {}
    for name, opt in (optimizers or {}).items():
        t, g = _optimizer_tensors(name, opt)
        tensors.update(t)
        groups[name] = g
    if groups:
        train_state["param_groups"] = groups
    if train_state:
        meta[TRAIN_KEY] = json.dumps(train_state, sort_keys=True)
    _write_atomically(path, tensors, meta)


def _write_atomically(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def update_spec(path: str | Path, change: Callable[[PreprocessSpec], PreprocessSpec]) -> None:
    """Rewrite a checkpoint's PreprocessSpec with `change`, keeping its tensors and other metadata (atomically)."""
    tensors, meta = read_checkpoint(path)
    spec = change(PreprocessSpec.from_json(meta[SPEC_METADATA_KEY]))
    _write_atomically(path, tensors, {**meta, SPEC_METADATA_KEY: spec.to_json()})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in (SPEC_METADATA_KEY, ARCH_KEY):
        if key not in meta:
            raise ValueError(f"checkpoint {path} lacks metadata {key!r}; it was not written by `python -m reid`")
    return tensors, meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    feature: str | None = None) -> tuple[ReIDModel, PreprocessSpec]:
    """Rebuild the model from the file alone; returns it in eval mode with its PreprocessSpec. `feature`
    ("neck", "pooled", "centred") overrides which vector the model returns (`ArchConfig.feature`); the weights
    are the same for all three."""
    tensors, meta = read_checkpoint(path)
    arch = ArchConfig.model_validate_json(meta[ARCH_KEY])
    if feature is not None and feature != arch.feature:
        arch = ArchConfig.model_validate({**arch.model_dump(), "feature": feature})
    model = build_model(arch)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    zero_denormals(state.values())  # files written before model files were flushed, or by other tools
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), PreprocessSpec.from_json(meta[SPEC_METADATA_KEY])


def restore_training(path: str | Path, model: ReIDModel, optimizers: dict[str, torch.optim.Optimizer],
                     heads: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load model and optimiser states from a training checkpoint; returns its train-state record."""
    tensors, meta = read_checkpoint(path)
    if TRAIN_KEY not in meta:
        raise ValueError(f"{path} is an inference checkpoint; resume needs last.safetensors from the run folder")
    train_state = json.loads(meta[TRAIN_KEY])
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    legacy = sorted({k.split(".")[0] for k in weights if k.startswith(("clothes_head.", "far_head."))})
    if legacy:
        # Before the training methods became plug-ins (reid.methods), CAL's and FIRe²'s heads lived in the model.
        raise ValueError(f"{path} was written before training heads moved out of the model (it holds "
                         f"{', '.join(legacy)}); it cannot be resumed by this version: start a new run, or evaluate/"
                         "export its model_last.safetensors / model_best.safetensors, which still load")
    model.load_state_dict(weights, strict=True)
    if heads is not None:
        saved = {k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")}
        try:
            heads.load_state_dict(saved, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path}: the training method's heads do not fit this recipe's ({exc}); resume with "
                             "the recipe that wrote it, or start a new run") from None
    for name, opt in optimizers.items():
        groups = train_state.get("param_groups", {}).get(name)
        if groups is None:
            raise ValueError(f"{path} holds no state for optimiser {name!r}")
        state: dict[int, dict[str, torch.Tensor]] = {}
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                idx, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[field] = value
        opt.load_state_dict({"state": state, "param_groups": groups})
    return train_state
