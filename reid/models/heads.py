"""Pooling, BN neck and classifier heads of the CAL model (methods.md §1.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeMPool(nn.Module):
    """Generalised-mean pooling with a learnable exponent p (init 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("avg", "max", "maxavg", "gem"):
            raise ValueError(f"unknown pooling {kind!r}")
        self.kind = kind
        self.gem = GeMPool() if kind == "gem" else None

    @property
    def multiplier(self) -> int:
        return 2 if self.kind == "maxavg" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            return x.mean(dim=(2, 3))
        if self.kind == "max":
            return x.amax(dim=(2, 3))
        if self.kind == "maxavg":
            return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
        return self.gem(x)


class CosineClassifier(nn.Module):
    """Bias-free classifier giving cos(f, w_c) in [-1, 1]; the scale is applied by the loss.

    Rows start at unit norm (uniform(-1, 1), then each row rescaled to norm 1), as CAL's clothes classifier in
    Simple-CCReID: with small Gaussian rows, Adam's fixed-size steps turn each row several times faster (2.4-4.2x
    per step on `resnet_lite`), which makes the adversary much quicker than the authors'.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, feat: torch.Tensor, detach_weight: bool = False) -> torch.Tensor:
        w = self.weight.detach() if detach_weight else self.weight
        return F.linear(F.normalize(feat, dim=1), F.normalize(w, dim=1))
