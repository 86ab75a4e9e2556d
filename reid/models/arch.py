"""Architecture description: a small JSON-serialisable record from which `build_model` rebuilds a model.

It travels inside every checkpoint (metadata key ``ccreid.arch``) so export needs nothing else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BACKBONES = ("resnet50", "resnet34", "resnet18", "resnet_lite", "clip_vit", "onnx")


class ArchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["resnet50", "resnet34", "resnet18", "resnet_lite", "clip_vit", "onnx"] = "resnet50"
    last_stride: Literal[1, 2] = 1
    pooling: Literal["avg", "max", "maxavg", "gem"] = "maxavg"
    # Channel widths of the four stages of `resnet_lite` (BasicBlock x2 per stage by default, like ResNet-18).
    lite_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    # BasicBlocks per stage of `resnet_lite`; CSSC needs >= 3 in the last stage (two per branch are
    # duplicated, the last one is shared), e.g. [2, 2, 2, 3].
    lite_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    # "resnet": the plain trunk. "cssc": CSSC's two-branch last stage (methods.md §2.1): the last stage's
    # blocks but the last are duplicated into two branches, SMR modules after each branch block (when `smr`),
    # the branch outputs summed into the shared last block.
    trunk: Literal["resnet", "cssc"] = "resnet"
    smr: bool = Field(True, description="CSSC trunk: SMR refinement after each branch block (False: ablation)")
    smr_reduction: int = Field(16, ge=1, description="SMR's SE-style bottleneck: channels / smr_reduction")
    # BSGA (Mu et al.; methods.md §5.2, our reading): a spatial attention branch after stage `bsga_stage` that
    # reweights the map (residual: x * (1 + a); multiply: x * a). It runs at inference (it needs no mask: it
    # predicts a from the image); in training, loss.method cre_bsga supervises a with the body-shape mask.
    bsga: bool = Field(False, description="body-shape-guided spatial attention (plain ResNet trunks only)")
    bsga_stage: Literal[2, 3, 4] = 4
    bsga_reduction: int = Field(4, ge=1, description="attention branch hidden channels: channels / reduction")
    bsga_mode: Literal["residual", "multiply"] = "residual"
    # Which vector retrieval uses: "neck" the BN output (CAL, FIRe²), "pooled" the pre-BN pooled feature (CSSC),
    # "centred" that pooled feature minus the neck's running mean. CSSC's pooled vector comes after ReLU and max
    # pooling, so every pair of people sits at cosine ~0.999: rankings work, cosine thresholds do not. Its
    # Euclidean triplets never see a shift, so centring keeps what training learnt and gives the matcher margins.
    feature: Literal["neck", "pooled", "centred"] = "neck"
    num_classes: int = Field(0, ge=0, description="training identities (0: no identity head)")
    # Ignored since the method refactor (training heads belong to reid.methods); kept so that checkpoints
    # written before it, whose arch records carry them, still load.
    num_clothes: int = Field(0, ge=0, description="ignored (legacy)")
    far_head: bool = Field(False, description="ignored (legacy)")
    # CAL keeps the BN neck's bias trainable and gives its identity classifier a bias; FIRe²'s code freezes the
    # neck's bias at 0 and uses a bias-free classifier.
    neck_bias: bool = Field(True, description="train the BN neck's bias (False: frozen at 0)")
    # CAL draws the neck's BN weight from N(1, 0.02); the CSSC code starts it at 1.
    neck_init: Literal["normal", "ones"] = "normal"
    id_bias: bool = Field(True, description="identity classifier with a bias")
    # A torchvision-format ImageNet state dict on local disk (ResNets), or a CLIP checkpoint (clip_vit: OpenAI's .pt,
    # open_clip's .bin or .safetensors); never downloaded. Only used when training starts; a checkpoint's own
    # weights replace it when loading.
    pretrained: str | None = None
    pretrained_sha256: str | None = Field(None, description="clip_vit / onnx: required SHA-256 of the file")
    # onnx (reid/models/onnx_trunk.py): `pretrained` is an ONNX ReID model whose graph, cut at the tensor
    # `onnx_feature` (a feature map), becomes the trainable trunk. `onnx_graph` is that graph's structure without
    # its weights, filled in when the trunk is built and carried by checkpoints (never set by hand).
    onnx_feature: str | None = Field(None, description="onnx: the tensor where the trunk ends (null: the output)")
    onnx_graph: str | None = Field(None, description="onnx: packed graph structure (set by the trainer)")
    # clip_vit (SCI, methods.md §4): open_clip's VisionTransformer; defaults are CLIP ViT-B/16's.
    clip_width: int = Field(768, ge=1)
    clip_layers: int = Field(12, ge=1)
    clip_heads: int = Field(12, ge=1)
    clip_patch: int = Field(16, ge=1)
    clip_embed_dim: int = Field(512, ge=1, description="CLIP's joint image-text dimension (the projection)")
    clip_quick_gelu: bool = Field(True, description="OpenAI's CLIP models use QuickGELU")
    clip_image_size: tuple[int, int] = Field((384, 192), description="input H, W (set from data.height/width)")
    sim: bool = Field(True, description="clip_vit: SCI's semantic-guided interaction module (False: ablation)")
    sim_bank: int = Field(0, ge=0, description="rows of SIM's text bank (training identities; 0: no SIM)")
    sim_dim: int = Field(0, ge=0, description="SIM's cross-attention width (0: clip_embed_dim)")
    sim_hidden: int = Field(0, ge=0, description="SIM's MLP hidden width (0: clip_width)")

