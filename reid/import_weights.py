"""`python -m reid import`: the papers' released ResNet-50 checkpoints -> this project's inference checkpoint.

Sources (layouts read from the authors' public code; none of it is used here):

* ``simple-ccreid`` (CAL, github.com/guxinqian/Simple-CCReID): `torch.save` of a dict whose
  ``model_state_dict`` holds ``base.<i>.*`` (torchvision's resnet50 children without avgpool/fc, so
  0 conv1, 1 bn1, 4..7 layer1..layer4), ``globalpooling.p`` (GeM only) and ``bn.*`` (BatchNorm1d neck,
  bias trained); the identity and clothes classifiers sit beside it as ``classifier_state_dict`` and
  ``clothes_classifier_state_dict``.
* ``fire2`` (FIRe², github.com/QizaoWang/FIRe-CCReID): the same dict form; ``model_state_dict`` holds
  ``backbone.<i>.*`` (same indices), ``bottleneck.*`` (the neck, bias frozen at 0) and the training-only
  ``FAR_bottleneck.*`` / ``FAR_classifier.*``; ``classifier_state_dict`` and ``optimizer_state_dict`` beside it.

Both papers' released recipes use last stride 1, max+avg pooling (4096-d, max first), 384x192 RGB input with
ImageNet mean/std. Training-only tensors are dropped and logged; any other unknown or missing tensor stops
the import with the keys listed.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid.checkpoint import save_checkpoint
from reid.export import sha256_file
from reid.inference.base import PreprocessSpec
from reid.models import ArchConfig, ReIDModel, build_model

log = logging.getLogger("reid.import")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHES = ("resnet50",)
POOLINGS = ("auto", "maxavg", "gem", "avg", "max")
_TRUNK_DIM = {"resnet50": 2048}
_LIST_MAX = 12  # keys shown per list in an error message


class WeightImportError(ValueError):
    """The source checkpoint cannot be imported; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class SourceLayout:
    """How one paper's code names the tensors of its retrieval model."""

    name: str  # the --from value
    method: str  # PreprocessSpec.method of the imported model
    repo: str
    module: str  # where the layout is defined in the authors' repository
    renames: tuple[tuple[str, str], ...]  # (source prefix, our prefix)
    training_only: tuple[str, ...]  # model tensors (prefixes) that retrieval does not use
    neck_bias: bool  # whether the neck's bias was trained
    neck: str  # source prefix of the BN neck
    gem_key: str | None  # source key of GeM's learnable exponent, when the code has GeM
    height: int = 384
    width: int = 192


def _trunk(prefix: str) -> tuple[tuple[str, str], ...]:
    """torchvision resnet children in order, without avgpool/fc: 0 conv1, 1 bn1, (2 relu, 3 maxpool), 4..7 layers."""
    stages = [("0", "backbone.stem.0."), ("1", "backbone.stem.1.")]
    stages += [(str(3 + i), f"backbone.layer{i}.") for i in range(1, 5)]
    return tuple((f"{prefix}.{idx}.", ours) for idx, ours in stages)


LAYOUTS: dict[str, SourceLayout] = {
    "simple-ccreid": SourceLayout(
        name="simple-ccreid", method="cal", repo="github.com/guxinqian/Simple-CCReID",
        module="models/img_resnet.py (class ResNet50; checkpoint dict in main.py)",
        renames=_trunk("base") + (("globalpooling.p", "pool.gem.p"), ("bn.", "bn.")),
        training_only=(), neck_bias=True, neck="bn.", gem_key="globalpooling.p"),
    "fire2": SourceLayout(
        name="fire2", method="fire2", repo="github.com/QizaoWang/FIRe-CCReID",
        module="model/fire.py (class FIRe; checkpoint dict in main.py)",
        renames=_trunk("backbone") + (("bottleneck.", "bn."),),
        training_only=("FAR_bottleneck.", "FAR_classifier."), neck_bias=False, neck="bottleneck.", gem_key=None),
}
SOURCES = tuple(LAYOUTS)


@dataclass
class ImportResult:
    out: Path
    source: str
    pooling: str
    feature_dim: int
    imported: int  # tensors written
    dropped: list[str] = field(default_factory=list)  # "name [shape]" of what was left out (training only)
    filled: list[str] = field(default_factory=list)  # BN counters absent from the source, written as 0

    def summary(self) -> str:
        return (f"imported {self.imported} tensors from a {self.source} checkpoint -> {self.out} "
                f"(pooling {self.pooling}, {self.feature_dim}-d feature; {len(self.dropped)} entries that "
                f"retrieval does not use left out)")


# ------------------------------------------------------------------------------------------------ loading

def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a NumPy scalar needs: the authors' dicts store rank-1 / mAP as NumPy floats. Only the
    scalar constructor and dtypes are allowed, under NumPy 1.x names (how the released files were written) too."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                                 "Int32DType", "BoolDType") if hasattr(dtypes, n)]
    return allowed


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError):  # e.g. legacy (pre-zip) files
        return []


def load_source(path: str | Path) -> Any:
    """`torch.load(..., weights_only=True)` of a released checkpoint: tensors, containers, numbers and NumPy
    scalars only; anything that needs other pickled objects is refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise WeightImportError(f"--weights {path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path)
        what = f" ({', '.join(names)})" if names else ""
        raise WeightImportError(
            f"--weights {path}: the file needs pickled Python objects beyond tensors, containers and numbers"
            f"{what}, which `torch.load(weights_only=True)` refuses because unpickling them can run code. If you "
            "trust the file, re-save just its tensors, e.g. `torch.save(torch.load(F, weights_only=False)"
            "['model_state_dict'], 'clean.pth')`, and import that") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightImportError(f"--weights {path}: not a readable PyTorch checkpoint ({exc})") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v)
                                                       for k, v in obj.items())


def _describe(key: str, value: Any) -> str:
    return f"{key} {list(value.shape)}" if torch.is_tensor(value) else key


def unwrap_state_dict(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model state dict inside what the authors save -> (state dict with `module.` prefixes stripped,
    descriptions of the other entries of the file, which are dropped).

    Accepted forms: {"model_state_dict": sd, ...} (both papers' main.py), {"state_dict": sd, ...}, or sd itself.
    """
    others: list[str] = []
    if isinstance(obj, dict) and ("model_state_dict" in obj or "state_dict" in obj):
        key = "model_state_dict" if "model_state_dict" in obj else "state_dict"
        state = obj[key]
        for name, value in obj.items():
            if name == key:
                continue
            if isinstance(value, dict) and name != "optimizer_state_dict":
                others += [_describe(f"{name}.{k}", v) for k, v in value.items()]
            else:
                others.append(f"{name} (not a model tensor)" if not torch.is_tensor(value) else _describe(name, value))
        if not _is_state_dict(state):
            raise WeightImportError(f"{where}: entry {key!r} is not a state dict of named tensors "
                                    f"(got {type(state).__name__})")
    elif _is_state_dict(obj):
        state = obj
    else:
        keys = list(obj)[:_LIST_MAX] if isinstance(obj, dict) else []
        raise WeightImportError(
            f"{where}: expected the authors' checkpoint dict (with 'model_state_dict' or 'state_dict') or a bare "
            f"state dict of tensors; got {type(obj).__name__}" + (f" with entries {keys}" if keys else ""))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):  # DataParallel / DistributedDataParallel wrappers
            key = key[len("module."):]
        out[key] = value
    return out, others


# ------------------------------------------------------------------------------------------------ mapping

def rename_key(key: str, layout: SourceLayout) -> str | None:
    """Source key -> our key, or None when no rule of the layout covers it."""
    for src, ours in layout.renames:
        if key == src or (src.endswith(".") and key.startswith(src)):
            return ours + key[len(src):]
    return None


def source_key(ours: str, layout: SourceLayout) -> str:
    """Our key -> the name the source uses for it (for error messages)."""
    for src, dst in layout.renames:
        if ours == dst or (dst.endswith(".") and ours.startswith(dst)):
            return src + ours[len(dst):]
    return ours


def split_state_dict(state: dict[str, torch.Tensor], layout: SourceLayout
                     ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """-> (tensors renamed to our keys, training-only keys dropped, keys no rule covers)."""
    mapped: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, value in state.items():
        if key.startswith(layout.training_only):
            dropped.append(_describe(key, value))
            continue
        ours = rename_key(key, layout)
        if ours is None:
            unknown.append(key)
        else:
            mapped[ours] = value
    return mapped, dropped, unknown


def infer_pooling(state: dict[str, torch.Tensor], layout: SourceLayout, arch: str, requested: str,
                  where: str) -> str:
    """Pooling from the tensors: GeM has its exponent; max+avg doubles the neck's width; avg and max look
    alike, so they must be named."""
    trunk = _TRUNK_DIM[arch]
    neck = state.get(layout.neck + "weight")
    if layout.gem_key is not None and layout.gem_key in state:
        found = "gem"
    elif neck is None:
        return "maxavg" if requested == "auto" else requested  # the missing neck is reported with the rest
    elif neck.shape == (2 * trunk,):
        found = "maxavg"
    elif neck.shape == (trunk,):
        if requested in ("avg", "max"):
            return requested
        config = ", MODEL.POOLING.NAME in its config" if layout.name == "simple-ccreid" else ""
        what = ("" if requested == "auto" else f"--pooling {requested} does not fit the file: ") + (
            f"the neck {layout.neck}weight is {trunk}-d without GeM's exponent, which {layout.name} gives for both "
            f"avg and max pooling")
        raise WeightImportError(f"{where}: {what}; pass --pooling avg or --pooling max (the pooling the model was "
                                f"trained with{config})")
    else:
        raise WeightImportError(f"{where}: the neck {layout.neck}weight has shape {list(neck.shape)}; a {arch} "
                                f"trunk gives {trunk} (avg/max/gem) or {2 * trunk} (maxavg)")
    if requested not in ("auto", found):
        raise WeightImportError(f"{where}: --pooling {requested} does not fit the file, whose tensors are those of "
                                f"{found} pooling; drop --pooling or pass --pooling {found}")
    return found


def _fits_other_layout(state: dict[str, torch.Tensor], layout: SourceLayout) -> str | None:
    for other in LAYOUTS.values():
        if other.name != layout.name:
            _, _, unknown = split_state_dict(state, other)
            if not unknown and any(k.startswith(other.neck) for k in state):
                return other.name
    return None


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_MAX])
    return shown + (f", ... ({len(keys) - _LIST_MAX} more)" if len(keys) > _LIST_MAX else "")


def _hint(state: dict[str, torch.Tensor], layout: SourceLayout) -> str:
    other = _fits_other_layout(state, layout)
    if other is not None:
        return f"these keys are the layout of {LAYOUTS[other].repo}: use --from {other}"
    if "fc.weight" in state and "conv1.weight" in state:
        return ("this looks like a torchvision ImageNet classifier (conv1.*, layer1.*, fc.*), not a re-id model "
                "trained by the paper's code; give the checkpoint its training run saved (best_model.pth.tar, "
                "best_rank1_model.pth, checkpoint_ep*.pth*)")
    prefixes = sorted({src for src, _ in layout.renames})
    return (f"--from {layout.name} expects the tensors of {layout.module} in {layout.repo}: keys starting "
            f"{', '.join(prefixes)}" + (f", plus training-only {', '.join(layout.training_only)}"
                                        if layout.training_only else "")
            + "; check --from, --arch and that this is the ResNet-50 image model")


def _skeleton(cfg: ArchConfig) -> ReIDModel:
    """The model without storage or initialisation (meta tensors): its weights all come from the source."""
    with torch.device("meta"):
        return build_model(cfg)


def map_to_model(state: dict[str, torch.Tensor], layout: SourceLayout, arch: str, pooling: str, where: str
                 ) -> tuple[ArchConfig, dict[str, torch.Tensor], list[str], list[str]]:
    """Source state dict -> (ArchConfig, our inference state dict, dropped, filled BN counters); raises
    WeightImportError listing unknown, missing and mis-shaped keys."""
    mapped, dropped, unknown = split_state_dict(state, layout)
    pooling = infer_pooling(state, layout, arch, pooling, where)
    cfg = ArchConfig(backbone=arch, last_stride=1, pooling=pooling, neck_bias=layout.neck_bias, pretrained=None)
    expected = _skeleton(cfg).inference_state_dict()  # names, shapes and dtypes only
    unknown += [source_key(k, layout) for k in mapped if k not in expected]
    filled = [k for k in expected if k not in mapped and k.endswith("num_batches_tracked")]
    missing = [source_key(k, layout) for k in expected if k not in mapped and k not in filled]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown tensors: {_listing(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing tensors: {_listing(missing)}")
    if problems:
        raise WeightImportError(f"{where} does not fit --from {layout.name} --arch {arch} (pooling {pooling}): "
                                + "; ".join(problems) + f". {_hint(state, layout)}")
    out: dict[str, torch.Tensor] = {}
    wrong = []
    for key, ref in expected.items():
        if key in filled:
            out[key] = torch.zeros(ref.shape, dtype=ref.dtype)
            continue
        value = mapped[key]
        if key == "pool.gem.p" and value.numel() == 1:
            value = value.reshape(ref.shape)  # their exponent is a 1-element vector, ours a scalar
        if value.shape != ref.shape:
            wrong.append(f"{source_key(key, layout)} {list(value.shape)} (expected {list(ref.shape)})")
            continue
        out[key] = value.detach().to(ref.dtype).contiguous()
    if wrong:
        raise WeightImportError(f"{where}: tensors of the wrong shape for --arch {arch} (pooling {pooling}, "
                                f"last stride 1): {_listing(wrong)}")
    return cfg, out, dropped, filled


# ------------------------------------------------------------------------------------------------ entry point

def import_checkpoint(weights: str | Path, out: str | Path, source: str, *, arch: str = "resnet50",
                      dataset: str = "unknown", pooling: str = "auto",
                      info: Callable[[str], None] = log.info) -> ImportResult:
    """Map a released Simple-CCReID / FIRe² checkpoint onto `ReIDModel` and write it as an inference
    checkpoint (`save_checkpoint(..., inference_only=True)`) with the paper's preprocessing."""
    if source not in LAYOUTS:
        raise WeightImportError(f"--from {source!r}: unknown source; choose one of {', '.join(SOURCES)}")
    if arch not in ARCHES:
        raise WeightImportError(f"--arch {arch!r}: the papers release {', '.join(ARCHES)} image models only")
    if pooling not in POOLINGS:
        raise WeightImportError(f"--pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    layout = LAYOUTS[source]
    weights, out = Path(weights), Path(out)
    if out.suffix != ".safetensors":
        raise WeightImportError(f"--out {out}: the imported model is written as a .safetensors checkpoint")
    where = f"--weights {weights}"
    state, others = unwrap_state_dict(load_source(weights), where)
    cfg, tensors, dropped, filled = map_to_model(state, layout, arch, pooling, where)
    model = _skeleton(cfg)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    dropped = dropped + others
    spec = PreprocessSpec(
        height=layout.height, width=layout.width, colour="rgb", scale=1.0 / 255.0, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, identity_dim=model.feature_dim, method=layout.method, train_dataset=dataset,
        extra={"distance": "cosine", "flip_sum": True, "backbone": arch,
               "imported": {"from": layout.name, "repo": layout.repo, "file": weights.name,
                            "sha256": sha256_file(weights)}})
    save_checkpoint(out, model, spec, inference_only=True)
    if dropped:
        info(f"left out {len(dropped)} entries of {weights.name} that retrieval does not use (training-only "
             "heads, classifiers, optimiser state, bookkeeping): " + ", ".join(dropped))
    if filled:
        info(f"{len(filled)} BatchNorm counters (num_batches_tracked) absent from {weights.name} were written as 0; "
             "they do not affect inference")
    return ImportResult(out, layout.name, cfg.pooling, model.feature_dim, len(tensors), dropped, filled)
