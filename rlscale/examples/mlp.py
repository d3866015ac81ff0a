"""A numpy-only model family: multilayer perceptrons on flattened 3x32x32 images, at three widths.

``mlp-W`` is ``3072 -> W -> W -> 10`` with ReLU, float32, weights drawn from a `numpy.random.Generator` seeded by
the variant's name (the same model on every run). It needs nothing beyond numpy, so ``rlscale profile`` and the
test server work without torch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

VARIANTS = ("mlp-256", "mlp-512", "mlp-1024")
"""The variants, smallest first: the hidden width is the number after ``mlp-``."""

INPUT_SHAPE = (3, 32, 32)
"""One input item: a 3-channel 32x32 image (CIFAR-10's)."""

CLASSES = 10


def _width(variant: str) -> int:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return int(variant.removeprefix("mlp-"))


def seed_of(variant: str) -> int:
    """A stable seed per variant name (not Python's salted ``hash``)."""
    return zlib.crc32(variant.encode("utf-8"))


class MLP:
    """``relu(relu(x W1 + b1) W2 + b2) W3 + b3`` on a batch of images flattened to rows.

    Args:
        width: the hidden layers' width.
        rng: the generator the weights are drawn from (He initialisation).
    """

    def __init__(self, width: int, rng: np.random.Generator) -> None:
        sizes = (int(np.prod(INPUT_SHAPE)), width, width, CLASSES)
        self.layers = [
            (
                (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32),
                np.zeros(n_out, dtype=np.float32),
            )
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        ]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits, shape (b, 10), for images of shape (b, 3, 32, 32)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 1 + len(INPUT_SHAPE) or x.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected a batch of shape (b, 3, 32, 32), got {x.shape}")
        x = x.reshape(x.shape[0], -1)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0.0, out=x)
        return x


def build(variant: str) -> tuple[MLP, Callable[[int], np.ndarray]]:
    """The factory of ``rlscale profile --model rlscale.examples.mlp:build``: the model and its batch maker.

    Raises:
        ValueError: an unknown variant.
    """
    model = MLP(_width(variant), np.random.default_rng(seed_of(variant)))

    def make_batch(b: int) -> np.ndarray:
        return np.random.default_rng(b).standard_normal((b, *INPUT_SHAPE), dtype=np.float32)

    return model, make_batch
