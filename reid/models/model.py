"""The ReID model: trunk -> global pooling -> BN neck, and an identity classifier for training.

The retrieval feature is the BN-neck output (CAL, FIRe²), the pre-BN pooled vector (CSSC) or that vector
centred on the neck's running mean, by `arch.feature`. Method-specific training heads (CAL's clothes classifier, FIRe²'s recomposition head,
CSSC's SMR heads) are not part of the model: they belong to the training method (`reid.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from reid.models.arch import ArchConfig
from reid.models.backbones import build_backbone
from reid.models.bsga import BSGATrunk
from reid.models.cssc import CSSCTrunk, SMRTap
from reid.models.heads import GlobalPool


@dataclass(frozen=True)
class TrainOutput:
    """One training forward: the last-stage map, its pooled vector, the BN-neck vector, identity logits
    (None without a head), for the CSSC trunk what each SMR module saw, and for a BSGA trunk its attention."""

    fmap: torch.Tensor
    pooled: torch.Tensor
    neck: torch.Tensor
    logits: torch.Tensor | None
    taps: list[SMRTap] = field(default_factory=list)
    attention: torch.Tensor | None = None  # BSGA's attention logits (N, 1, h, w) when the model has it


class ReIDModel(nn.Module):
    """`forward` returns the retrieval feature, in train and eval mode alike."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        if arch.backbone == "clip_vit":
            # SCI (methods.md §4): the CLIP image encoder returns its pooled vector [cls; proj] itself.
            from reid.models.clip import ClipImageEncoder

            if arch.trunk != "resnet" or arch.bsga:
                raise ValueError("model.backbone clip_vit takes neither model.trunk cssc nor model.bsga "
                                 "(both need a ResNet backbone)")
            self.backbone = ClipImageEncoder(arch)
            self.pool = None
            self.feature_dim = self.backbone.out_dim
        elif arch.backbone == "onnx":
            from reid.models.onnx_trunk import build_onnx_trunk

            if arch.trunk != "resnet" or arch.bsga:
                raise ValueError("model.backbone onnx takes neither model.trunk cssc nor model.bsga "
                                 "(both need a ResNet backbone)")
            self.backbone = build_onnx_trunk(arch.pretrained, arch.onnx_feature, arch.onnx_graph,
                                             arch.pretrained_sha256)
            # The structure travels in the checkpoint, so the file is not needed to load it.
            self.arch = arch = arch.model_copy(update={"onnx_graph": self.backbone.structure})
            self.pool = GlobalPool(arch.pooling)
            self.feature_dim = self.backbone.out_dim * self.pool.multiplier
        else:
            trunk = build_backbone(arch.backbone, arch.last_stride, arch.pretrained, arch.lite_widths,
                                   arch.lite_blocks)
            if arch.trunk == "cssc":
                trunk = CSSCTrunk(trunk, smr=arch.smr, reduction=arch.smr_reduction, backbone=arch.backbone)
            if arch.bsga:
                if arch.trunk != "resnet":
                    raise ValueError(f"model.bsga works on the plain trunk only (model.trunk: resnet), not "
                                     f"{arch.trunk!r}")
                trunk = BSGATrunk(trunk, stage=arch.bsga_stage, reduction=arch.bsga_reduction, mode=arch.bsga_mode)
            self.backbone = trunk
            self.pool = GlobalPool(arch.pooling)
            self.feature_dim = self.backbone.out_dim * self.pool.multiplier
        self.bn = nn.BatchNorm1d(self.feature_dim)
        if arch.neck_init == "normal":
            nn.init.normal_(self.bn.weight, 1.0, 0.02)
        else:
            nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        # CAL trains the bias; FIRe² and CSSC (and the BNNeck trick) keep it at 0.
        self.bn.bias.requires_grad_(arch.neck_bias)
        self.id_head: nn.Linear | None = None
        if arch.num_classes:
            self.id_head = nn.Linear(self.feature_dim, arch.num_classes, bias=arch.id_bias)
            nn.init.normal_(self.id_head.weight, std=0.001)
            if self.id_head.bias is not None:
                nn.init.zeros_(self.id_head.bias)

    def _pooled(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap if self.pool is None else self.pool(fmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._pooled(self.backbone(x))
        if self.arch.feature == "pooled":
            return pooled
        if self.arch.feature == "centred":
            return pooled - self.bn.running_mean
        return self.bn(pooled)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map -> the BN-neck feature."""
        return self.bn(self._pooled(fmap))

    def forward_train(self, x: torch.Tensor) -> TrainOutput:
        attention = None
        if isinstance(self.backbone, CSSCTrunk):
            fmap, taps = self.backbone.forward_taps(x)
        elif isinstance(self.backbone, BSGATrunk):
            (fmap, attention), taps = self.backbone.forward_attention(x), []
        else:
            fmap, taps = self.backbone(x), []
        pooled = self._pooled(fmap)
        neck = self.bn(pooled)
        logits = self.id_head(neck) if self.id_head is not None else None
        return TrainOutput(fmap, pooled, neck, logits, taps, attention)

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed for retrieval only (the identity head is training-only)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("id_head.")}


def build_model(arch: ArchConfig | dict) -> ReIDModel:
    if not isinstance(arch, ArchConfig):
        arch = ArchConfig.model_validate(arch)
    return ReIDModel(arch)
