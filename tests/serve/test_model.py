"""The factory's model as a stage runs it: built and warmed once, numpy rows in and out, a torch model too, and
one line for every way a factory can fail."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rlscale.errors import ServeError
from rlscale.serve.model import InputMismatch, build_stage_model
from rlscale.serve.settings import StageSettings

FACTORIES = """
import numpy as np

VARIANTS = ("double", "raises", "notuple", "text", "wrongrows", "tuple", "named")


def build(variant):
    if variant == "raises":
        raise KeyError(variant)
    if variant == "notuple":
        return 3
    make = lambda b: np.arange(b * 2, dtype=np.float32).reshape(b, 2)
    if variant == "text":
        return (lambda x: x), lambda b: np.array([["a", "b"]] * b)
    if variant == "wrongrows":
        return (lambda x: x[:1].repeat(3, axis=0)), make
    if variant == "tuple":
        return (lambda x: (x * 2, x.sum(axis=1))), make
    if variant == "named":
        return (lambda x: {"scores": x * 3}), make
    return (lambda x: x * 2), make


def bad_batch(variant):
    return (lambda x: x), lambda b: 1 / 0
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "servemodels.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)  # the factory's module is imported with the current folder first on the path
    yield "servemodels"
    sys.modules.pop("servemodels", None)


def settings(factory: str, variant: str) -> StageSettings:
    return StageSettings(factory=factory, variant=variant, pipeline="p", stage="s")


def test_a_numpy_model_runs_rows(factories):
    model = build_stage_model(settings(f"{factories}:build", "double"))
    assert (model.item_shape, model.dtype, model.torch) == ((2,), np.float32, None)
    rows = model.rows(np.array([[1, 2], [3, 4]], dtype=np.int64))  # ints read as the model's float32
    assert rows.dtype == np.float32
    assert model.run(rows)["output-0"].tolist() == [[2, 4], [6, 8]]


def test_tuple_and_named_outputs(factories):
    tupled = build_stage_model(settings(f"{factories}:build", "tuple")).run(np.ones((2, 2), np.float32))
    assert list(tupled) == ["output-0", "output-1"] and tupled["output-1"].tolist() == [2, 2]
    named = build_stage_model(settings(f"{factories}:build", "named")).run(np.ones((1, 2), np.float32))
    assert list(named) == ["scores"]


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((2, 3), np.float32, "input shape [2, 3] does not fit the model's [-1, 2]"),
        ((2,), np.float32, "input shape [2] does not fit"),
        ((0, 2), np.float32, "(n >= 1 items)"),
        ((1, 2), np.str_, "input datatype <U1 cannot be read as the model's float32"),
    ],
)
def test_rows_that_do_not_fit(factories, shape, dtype, message):
    model = build_stage_model(settings(f"{factories}:build", "double"))
    with pytest.raises(InputMismatch) as info:
        model.rows(np.zeros(shape, dtype=dtype))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("factory", "variant", "message"),
    [
        ("nosuchmodule:build", "double", "--model nosuchmodule:build: no module named 'nosuchmodule'"),
        ("servemodels:nothing", "double", "module servemodels has no function 'nothing'"),
        ("servemodels:build", "huge", "variant 'huge' is not in servemodels.VARIANTS (double, raises,"),
        ("servemodels:build", "raises", "servemodels:build('raises') failed: KeyError: 'raises'"),
        ("servemodels:build", "notuple", "returned int, expected a tuple (model, make_batch)"),
        ("servemodels:build", "text", "make_batch(1) built ndarray of shape [1, 2] and dtype <U1; expected"),
        ("servemodels:build", "wrongrows", "the model failed on make_batch(1): ValueError: the model answered 1 row"),
        ("servemodels:bad_batch", "double", "make_batch(1) failed: ZeroDivisionError: division by zero"),
    ],
)
def test_a_factory_that_cannot_serve_is_one_line(factories, factory, variant, message):
    with pytest.raises(ServeError) as info:
        build_stage_model(settings(factory, variant))
    assert message in str(info.value) and "\n" not in str(info.value)


TORCH_FACTORY = """
import torch


def build(variant):
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        layer.bias.zero_()
    return layer, lambda b: torch.zeros((b, 3))
"""


def test_a_torch_model_gets_tensors_and_answers_arrays(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "torchmodels.py").write_text(TORCH_FACTORY)
    monkeypatch.chdir(tmp_path)
    try:
        model = build_stage_model(settings("torchmodels:build", "linear"))
        assert model.torch is not None and model.item_shape == (3,)
        out = model.run(model.rows(np.array([[1, 2, 3]], dtype=np.float64)))["output-0"]
        assert isinstance(out, np.ndarray) and out.tolist() == [[1.0, 5.0]]  # no grad: inference mode
    finally:
        sys.modules.pop("torchmodels", None)
