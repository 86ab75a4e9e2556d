"""The ReID model: backbone -> global pooling -> BN neck (the retrieval feature), plus training heads."""

from __future__ import annotations

import torch
from torch import nn

from reid.fire2 import FarHead
from reid.models.arch import ArchConfig
from reid.models.backbones import build_backbone
from reid.models.heads import CosineClassifier, GlobalPool


class ReIDModel(nn.Module):
    """`forward` returns the BN-neck feature f, in train and eval mode alike (it is the only feature)."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        self.backbone = build_backbone(arch.backbone, arch.last_stride, arch.pretrained, arch.lite_widths)
        self.pool = GlobalPool(arch.pooling)
        self.feature_dim = self.backbone.out_dim * self.pool.multiplier
        self.bn = nn.BatchNorm1d(self.feature_dim)
        nn.init.normal_(self.bn.weight, 1.0, 0.02)
        nn.init.zeros_(self.bn.bias)
        # CAL trains the bias; FIRe² (and the BNNeck trick) keep it at 0.
        self.bn.bias.requires_grad_(arch.neck_bias)
        self.id_head: nn.Linear | None = None
        if arch.num_classes:
            self.id_head = nn.Linear(self.feature_dim, arch.num_classes, bias=arch.id_bias)
            nn.init.normal_(self.id_head.weight, std=0.001)
            if self.id_head.bias is not None:
                nn.init.zeros_(self.id_head.bias)
        self.clothes_head = CosineClassifier(self.feature_dim, arch.num_clothes) if arch.num_clothes else None
        self.far_head = FarHead(self.feature_dim, arch.num_classes) if arch.far_head and arch.num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.backbone(x))

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map -> the BN-neck feature (so training can also use the map itself)."""
        return self.bn(self.pool(fmap))

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed for retrieval only (heads are training-only)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("id_head.", "clothes_head.", "far_head."))}


def build_model(arch: ArchConfig | dict) -> ReIDModel:
    if not isinstance(arch, ArchConfig):
        arch = ArchConfig.model_validate(arch)
    return ReIDModel(arch)
