"""Architecture description: a small JSON-serialisable record from which `build_model` rebuilds a model.

It travels inside every checkpoint (metadata key ``ccreid.arch``) so export needs nothing else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BACKBONES = ("resnet50", "resnet34", "resnet18", "resnet_lite")


class ArchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["resnet50", "resnet34", "resnet18", "resnet_lite"] = "resnet50"
    last_stride: Literal[1, 2] = 1
    pooling: Literal["avg", "max", "maxavg", "gem"] = "maxavg"
    # Channel widths of the four stages of `resnet_lite` (BasicBlock x2 per stage, like ResNet-18).
    lite_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    num_classes: int = Field(0, ge=0, description="training identities (0: no identity head)")
    num_clothes: int = Field(0, ge=0, description="training clothes classes (0: no clothes head)")
    far_head: bool = Field(False, description="FIRe²'s recomposition head (BN + identity classifier), training only")
    # CAL keeps the BN neck's bias trainable and gives its identity classifier a bias; FIRe²'s code freezes the
    # neck's bias at 0 and uses a bias-free classifier.
    neck_bias: bool = Field(True, description="train the BN neck's bias (False: frozen at 0)")
    id_bias: bool = Field(True, description="identity classifier with a bias")
    # A torchvision-format ImageNet state dict on local disk; never downloaded. Only used when training
    # starts; a checkpoint's own weights replace it when loading.
    pretrained: str | None = None

