"""BSGA, body-shape-guided attention (Mu et al.; methods.md §5): the part that also runs at inference.

Our reading of the module (methods.md §5.2: the source gives its name and purpose only): after stage
`stage` of the trunk, a small branch predicts one spatial attention logit per cell of the map,
    z = conv1x1(relu(BN(conv3x3(x))))   (C -> C / reduction -> 1),   a = sigmoid(z),
and the map is reweighted, x * (1 + a) ("residual") or x * a ("multiply"), before the remaining stages.
The branch sees only the image's features, so inference needs no mask; during training
`reid.methods.cre_bsga` supervises z with the body-shape mask (binary cross-entropy against the share of
body pixels in each cell). `forward_attention` returns the logits for that loss.
"""

from __future__ import annotations

import torch
from torch import nn

from reid.models.backbones import ResNetTrunk


class SpatialAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)  # a = 0.5 everywhere at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """-> attention logits (N, 1, H, W)."""
        return self.out(torch.relu(self.bn(self.conv(x))))


class BSGATrunk(nn.Module):
    """A plain ResNet trunk with the BSGA attention after stage `stage` (2, 3 or 4)."""

    def __init__(self, trunk: ResNetTrunk, stage: int = 4, reduction: int = 4, mode: str = "residual"):
        super().__init__()
        if stage not in (2, 3, 4):
            raise ValueError(f"model.bsga_stage must be 2, 3 or 4, got {stage}")
        if mode not in ("residual", "multiply"):
            raise ValueError(f"model.bsga_mode must be 'residual' or 'multiply', got {mode!r}")
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (trunk.stem, trunk.layer1, trunk.layer2,
                                                                         trunk.layer3, trunk.layer4)
        self.out_dim = trunk.out_dim
        self.stage, self.mode = stage, mode
        channels = [m for m in getattr(self, f"layer{stage}").modules() if isinstance(m, nn.BatchNorm2d)][-1]
        self.attention = SpatialAttention(channels.num_features, reduction)

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (last-stage map, attention logits at stage `stage`)."""
        x = self.layer1(self.stem(x))
        logits = None
        for i, layer in ((2, self.layer2), (3, self.layer3), (4, self.layer4)):
            x = layer(x)
            if i == self.stage:
                logits = self.attention(x)
                a = torch.sigmoid(logits)
                x = x * (1 + a) if self.mode == "residual" else x * a
        return x, logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_attention(x)[0]
