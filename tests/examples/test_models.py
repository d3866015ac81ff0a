"""The bundled example model families (`rlscale.examples`): real architectures, seeded, the factory contract of
``rlscale profile``, and the numpy family without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlscale.examples import mlp, resnet

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variant", mlp.VARIANTS)
def test_mlp_variants_give_logits_for_a_batch(variant):
    model, make_batch = mlp.build(variant)
    batch = make_batch(3)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    logits = model(batch)
    assert logits.shape == (3, mlp.CLASSES) and np.isfinite(logits).all()
    assert model.layers[0][0].shape == (3 * 32 * 32, int(variant.split("-")[1]))


def test_mlp_weights_are_seeded_by_the_variant():
    (a, make_batch), (b, _) = mlp.build("mlp-512"), mlp.build("mlp-512")
    x = make_batch(2)
    np.testing.assert_array_equal(a(x), b(x))
    other, _ = mlp.build("mlp-256")
    assert not np.array_equal(a.layers[-1][0], other.layers[-1][0][: a.layers[-1][0].shape[0]])


def test_mlp_rejects_what_it_cannot_run():
    model, _ = mlp.build("mlp-256")
    with pytest.raises(ValueError, match="3, 32, 32"):
        model(np.zeros((2, 3, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown variant"):
        mlp.build("mlp-3")


@pytest.fixture
def torch():
    """torch, or the test is skipped (it is the optional train extra; the mlp tests above run without it)."""
    return pytest.importorskip("torch")


@pytest.mark.parametrize("variant", resnet.VARIANTS)
def test_resnet_variants_are_cifar_resnets_of_their_depth(torch, variant):
    model, make_batch = resnet.build(variant)
    depth = resnet.depth_of(variant)
    # the weighted layers on the main path: 3x3 convolutions and the final linear layer (He et al. count them)
    main_path = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(main_path) + len(linear) == depth
    assert not model.training
    with torch.inference_mode():
        logits = model(make_batch(2))
    assert tuple(logits.shape) == (2, resnet.CLASSES) and torch.isfinite(logits).all()


def test_resnet_20_has_the_published_size(torch):
    model, _ = resnet.build("resnet-tiny-20")
    params = sum(p.numel() for p in model.parameters())
    assert 0.26e6 < params < 0.28e6  # ResNet-20 on CIFAR-10: 0.27 M (He et al., 2016, table 6)


def test_resnet_weights_are_seeded_by_the_variant(torch):
    (a, make_batch), (b, _) = resnet.build("resnet-tiny-8"), resnet.build("resnet-tiny-8")
    x = make_batch(2)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))
        assert torch.equal(make_batch(2), x)
    with pytest.raises(ValueError, match="unknown variant"):
        resnet.build("resnet-tiny-9")


BLOCK_TORCH = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, Blocker())
from rlscale.examples import mlp, resnet
model, make_batch = mlp.build("mlp-256")
print(model(make_batch(1)).shape)
try:
    resnet.build("resnet-tiny-8")
except ImportError as exc:
    print("resnet:", exc)
print("torch" in sys.modules)
"""


def test_the_numpy_family_runs_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True
    )
    assert result.stdout.splitlines() == ["(1, 10)", "resnet: torch is blocked", "False"]
