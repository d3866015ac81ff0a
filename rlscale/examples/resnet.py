"""A torch model family: CIFAR-style ResNets (He et al., 2016, section 4.2) of depth 8, 14 and 20.

``resnet-tiny-D`` (D = 6n + 2) is a 3x3 convolution of 16 channels, then three stages of n basic blocks (two 3x3
convolutions with batch normalisation and a shortcut) of 16, 32 and 64 channels, the last two starting with stride
2 (a 1x1 convolution on the shortcut), then global average pooling and a 10-way linear layer: ResNet-20 as
published (about 0.27 M parameters) and two shallower siblings. The weights are drawn with He initialisation from
a `torch.Generator` seeded by the variant's name, so every run builds the same model.

torch is imported inside `build` only (it is the optional ``train`` extra): this module imports without it, and
``rlscale.examples.mlp`` is the family that runs without it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

VARIANTS = ("resnet-tiny-8", "resnet-tiny-14", "resnet-tiny-20")
"""The variants, fastest first: the depth is the number at the end."""

INPUT_SHAPE = (3, 32, 32)
"""One input item: a 3-channel 32x32 image (CIFAR-10's)."""

CLASSES = 10
WIDTHS = (16, 32, 64)


def depth_of(variant: str) -> int:
    """The depth ``6n + 2`` a variant's name ends with.

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return int(variant.rsplit("-", 1)[1])


def seed_of(variant: str) -> int:
    """A stable seed per variant name (not Python's salted ``hash``)."""
    return zlib.crc32(variant.encode("utf-8"))


def resnet_module(depth: int, seed: int) -> Any:
    """The ``torch.nn.Module`` of a CIFAR ResNet of ``depth`` layers (6n + 2), weights seeded, in eval mode."""
    import torch
    from torch import nn

    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 >= 8, got {depth}")

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = (
                nn.Identity()
                if stride == 1 and c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.shortcut(x))

    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU()]
    c_in = WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for i in range(n):
            layers.append(BasicBlock(c_in, width, stride=2 if stage > 0 and i == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, CLASSES)]
    model = nn.Sequential(*layers)

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01, generator=generator)
                nn.init.zeros_(module.bias)
    return model.eval()


def build(variant: str) -> tuple[Any, Callable[[int], Any]]:
    """The factory of ``rlscale profile --model rlscale.examples.resnet:build``: the model and its batch maker.

    The model is a ``torch.nn.Module`` in eval mode; ``make_batch(b)`` a float32 tensor of shape (b, 3, 32, 32).

    Raises:
        ValueError: an unknown variant.
        ImportError: torch is not installed.
    """
    import torch

    model = resnet_module(depth_of(variant), seed_of(variant))

    def make_batch(b: int) -> torch.Tensor:
        return torch.randn((b, *INPUT_SHAPE), generator=torch.Generator().manual_seed(b))

    return model, make_batch
