"""ResNet-50 v1.5 in plain torch.nn (torchvision's resnet50 without torchvision, which the GPU machine
lacks): the network of the training check, the campaign's training step and the training-step and
gradient-accumulation benchmarks.

Its convolutions are exactly triton_conv.layers.resnet50_convs (checked by `conv_shapes`), so the
model's activation memory for that layer set is comparable with the step's measured peak memory.
`width` and `blocks` shrink it for the CPU check (width 4, one block).
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, v1.5) -> 1x1 with 4x expansion; a 1x1 projection when the shape changes."""

    def __init__(self, channels: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or channels != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)  # after conv3, as torchvision
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, width: int = 64, blocks=(3, 4, 6, 3), num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, channels = [], width
        for i, count in enumerate(blocks):
            planes = width * 2**i
            stage = []
            for block in range(count):
                stage.append(Bottleneck(channels, planes, 2 if block == 0 and i > 0 else 1))
                channels = planes * 4
            stages.append(nn.Sequential(*stage))
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            stage = getattr(self, name, None)
            if stage is not None:
                x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_shapes(model: nn.Module, image: int) -> list[tuple]:
    """(name, input shape, weight shape, stride, padding) of every convolution, in call order (meta)."""
    found, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hook = lambda m, args, out, name=name: found.append(
                (name, tuple(args[0].shape), tuple(m.weight.shape), m.stride, m.padding)
            )
            hooks.append(module.register_forward_hook(hook))
    try:
        meta = model.to("meta")
        meta(torch.empty(1, 3, image, image, device="meta"))
    finally:
        for handle in hooks:
            handle.remove()
    return found
