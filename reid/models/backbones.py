"""Backbones returning the last-stage feature map: torchvision ResNets and a narrow ResNet for CPU/edge."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.resnet import BasicBlock

_TORCHVISION = {"resnet18": (resnet18, 512), "resnet34": (resnet34, 512), "resnet50": (resnet50, 2048)}


class ResNetTrunk(nn.Module):
    """stem + layer1..layer4 of a ResNet; the stage names stay so later methods can hook layer3/layer4."""

    def __init__(self, net: nn.Module, out_dim: int):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _set_last_stride(layer4: nn.Sequential, stride: int) -> None:
    first = layer4[0]
    # Bottleneck strides in conv2 (torchvision v1.5), BasicBlock in conv1; the shortcut in downsample[0].
    for conv in (getattr(first, "conv1", None), getattr(first, "conv2", None)):
        if conv is not None and conv.stride != (1, 1):
            conv.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)


def _load_pretrained(net: nn.Module, path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pretrained weights {file} not found; give a local torchvision state-dict file "
                                "(e.g. resnet50-0676ba61.pth) or set model.pretrained: null")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"pretrained weights {file} do not fit this backbone: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def _lite_resnet(widths: tuple[int, int, int, int], blocks: tuple[int, int, int, int] = (2, 2, 2, 2)) -> nn.Module:
    """ResNet-18 stage layout with narrower channels: about (w/64)^2 of ResNet-18's compute.

    `blocks` BasicBlocks per stage (ResNet-18: 2 each); the default builds exactly the original layout.
    """

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            w0 = widths[0]
            self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w0)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, inplanes = [], w0
            for i, w in enumerate(widths):
                stride = 1 if i == 0 else 2
                down = None
                if stride != 1 or inplanes != w:
                    down = nn.Sequential(nn.Conv2d(inplanes, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                if blocks[i] < 1:
                    raise ValueError(f"model.lite_blocks {list(blocks)}: every stage needs at least one block")
                layers.append(nn.Sequential(BasicBlock(inplanes, w, stride, down),
                                            *(BasicBlock(w, w) for _ in range(blocks[i] - 1))))
                inplanes = w
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    return _Net()


def build_backbone(name: str, last_stride: int, pretrained: str | None,
                   lite_widths: tuple[int, int, int, int],
                   lite_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)) -> ResNetTrunk:
    if name == "resnet_lite":
        if pretrained:
            raise ValueError("resnet_lite has no ImageNet weights; set model.pretrained: null")
        net, dim = _lite_resnet(tuple(lite_widths), tuple(lite_blocks)), int(lite_widths[-1])
    elif name in _TORCHVISION:
        factory, dim = _TORCHVISION[name]
        net = factory(weights=None)  # never download; optional local weights below
        if pretrained:
            _load_pretrained(net, pretrained)
    else:
        raise ValueError(f"unknown backbone {name!r}")
    _set_last_stride(net.layer4, last_stride)
    return ResNetTrunk(net, dim)
