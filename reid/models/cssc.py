"""CSSC's two-branch last stage with SMR refinement (methods.md §2.1): the part of CSSC that runs at inference.

Written from the method description in methods.md §2; no code of the authors is used.

The shared stem and stages 1-3 feed two branches. Each branch runs its own copy of the last stage's blocks
but the last; after each of those blocks an SMR module refines the map: g = Pool(F) (average for SMR-C,
max for SMR-S), a = sigmoid(W2 relu(W1 g + b1) + b2), F~ = a * F per channel. Branch 1 starts with SMR-C
and alternates, branch 2 starts with SMR-S, so the two branches apply the pooling kinds in opposite orders.
The branch outputs are summed and go through the shared last block.

The refinement also runs at test time. SMR's training-only parts (stripe heads, BN, identity classifier)
belong to the training method (`reid.methods.cssc`): `forward_taps` hands it each SMR's input map and g.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from reid.models.backbones import ResNetTrunk

POOLS = ("avg", "max")


def global_pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    return x.mean(dim=(2, 3)) if kind == "avg" else x.amax(dim=(2, 3))


class SMRefine(nn.Module):
    """SMR's SE-style refinement: channel attention from the globally pooled map (both with bias)."""

    def __init__(self, channels: int, pool: str, reduction: int = 16):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"SMR pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def attention(self, g: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(g))))

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (refined map, g): g is the raw pooled input (the refinement reads g, not a BN of it)."""
        g = global_pool(fmap, self.pool)
        return fmap * self.attention(g)[:, :, None, None], g


@dataclass(frozen=True)
class SMRTap:
    """What one SMR saw in a training forward: its name (e.g. "smr12"), pool kind, input map and g."""

    name: str
    pool: str
    fmap: torch.Tensor
    g: torch.Tensor


def smr_layout(branch_blocks: int) -> list[tuple[str, str]]:
    """(name, pool) of every SMR, branch 1 then branch 2: "smr<branch><block>", 1-based.

    Branch 1 starts with average pooling (SMR-C) and alternates; branch 2 starts with max (SMR-S).
    """
    out = []
    for branch, first in ((1, 0), (2, 1)):
        for i in range(branch_blocks):
            out.append((f"smr{branch}{i + 1}", POOLS[(first + i) % 2]))
    return out


class CSSCTrunk(nn.Module):
    """stem + layer1..3 shared; last stage: two branches of blocks[:-1] with SMR, summed into blocks[-1].

    Branch 2's blocks are deep copies of branch 1's, made after the backbone's (pretrained) weights are
    loaded and its last stride is set, so both branches start identical (methods.md §2.6).
    """

    def __init__(self, trunk: ResNetTrunk, smr: bool = True, reduction: int = 16, backbone: str = "?"):
        super().__init__()
        blocks = list(trunk.layer4)
        if len(blocks) < 3:
            raise ValueError(
                f"model.trunk cssc needs a last stage of at least 3 blocks (two per branch are duplicated, the "
                f"last is shared); backbone {backbone} has {len(blocks)}. Use resnet50 or resnet34, or "
                f"resnet_lite with model.lite_blocks ending in 3 (e.g. [2, 2, 2, 3])")
        self.stem, self.layer1, self.layer2, self.layer3 = trunk.stem, trunk.layer1, trunk.layer2, trunk.layer3
        self.branch1 = nn.ModuleList(blocks[:-1])
        self.branch2 = copy.deepcopy(self.branch1)
        self.shared = blocks[-1]
        self.out_dim = trunk.out_dim
        self.layout = smr_layout(len(blocks) - 1)
        n = len(blocks) - 1
        self.smr1 = nn.ModuleList(SMRefine(self.out_dim, pool, reduction) for _, pool in self.layout[:n]) if smr \
            else None
        self.smr2 = nn.ModuleList(SMRefine(self.out_dim, pool, reduction) for _, pool in self.layout[n:]) if smr \
            else None

    def _branch(self, x: torch.Tensor, blocks: nn.ModuleList, smrs: nn.ModuleList | None, names,
                taps: list[SMRTap] | None) -> torch.Tensor:
        for i, block in enumerate(blocks):
            x = block(x)
            if smrs is not None:
                refined, g = smrs[i](x)
                if taps is not None:
                    taps.append(SMRTap(names[i][0], names[i][1], x, g))
                x = refined
        return x

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[SMRTap]]:
        """-> (last-stage map, the SMR taps in `layout` order; empty without SMR)."""
        taps: list[SMRTap] = []
        shared = self.layer3(self.layer2(self.layer1(self.stem(x))))
        n = len(self.branch1)
        a = self._branch(shared, self.branch1, self.smr1, self.layout[:n], taps)
        b = self._branch(shared, self.branch2, self.smr2, self.layout[n:], taps)
        return self.shared(a + b), taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)[0]
