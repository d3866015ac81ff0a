"""The factory's model as a stage runs it: numpy rows in, numpy rows out, one batch at a time.

The factory contract is `rlscale profile`'s: ``FUNCTION(variant)`` returns ``(model, make_batch)``, where
``make_batch(b)`` builds one input batch of ``b`` items and ``model(batch)`` runs it. The server learns the input
from ``make_batch(1)``: each item's shape and dtype (a request's tensor is ``[n, *item_shape]``, cast to the
dtype), and its type: a numpy array, or a torch tensor, in which case the rows are handed to the model as a
tensor (``torch.from_numpy``) and the model runs inside ``torch.inference_mode()``. torch is never imported here:
the factory did, where it uses it.

The model's answer has one row per input item: an array (or tensor) is the output ``output-0``, a tuple the
outputs ``output-0``, ``output-1``..., a dict its named outputs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscale.errors import ServeError
from rlscale.profiling.inprocess import load_factory
from rlscale.profiling.worker import describe
from rlscale.serve.settings import StageSettings

INPUT_NAME = "input-0"
"""The input tensor's name in the model's metadata (`rlscale profile --url`'s default); any one name is taken."""


class InputMismatch(ValueError):
    """A request's tensor does not fit the model's input (the client's error: HTTP 400)."""


@dataclass(frozen=True)
class StageModel:
    """A built model with what the server needs to feed it.

    Attributes:
        model: the factory's callable.
        item_shape: the shape of one item (``make_batch(1)``'s, without its batch dimension).
        dtype: the items' dtype.
        torch: the torch module when ``make_batch`` builds tensors (None: numpy).
    """

    model: Callable[[Any], Any]
    item_shape: tuple[int, ...]
    dtype: np.dtype
    torch: Any = None

    def rows(self, tensor: np.ndarray) -> np.ndarray:
        """A request's tensor as model rows: shape ``[n, *item_shape]`` with n >= 1, cast to the model's dtype.

        Raises:
            InputMismatch: the shape does not fit, or the values cannot be cast (text for numbers).
        """
        if tensor.ndim != len(self.item_shape) + 1 or tuple(tensor.shape[1:]) != self.item_shape or not len(tensor):
            raise InputMismatch(
                f"input shape {list(tensor.shape)} does not fit the model's {[-1, *self.item_shape]} (n >= 1 items)"
            )
        if tensor.dtype == self.dtype:
            return tensor
        if not np.can_cast(tensor.dtype, self.dtype, casting="same_kind"):
            raise InputMismatch(f"input datatype {tensor.dtype} cannot be read as the model's {self.dtype}")
        return tensor.astype(self.dtype)

    def run(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; the outputs by name, each with one row per input row.

        Raises:
            ValueError: the model's answer is not arrays with one row per input row.
            Exception: whatever the model raises.
        """
        torch = self.torch
        batch = torch.from_numpy(np.ascontiguousarray(rows)) if torch is not None else rows
        with torch.inference_mode() if torch is not None else contextlib.nullcontext():
            answer = self.model(batch)
        if isinstance(answer, dict):
            outputs = {str(k): self._array(v) for k, v in answer.items()}
        elif isinstance(answer, tuple):
            outputs = {f"output-{i}": self._array(v) for i, v in enumerate(answer)}
        else:
            outputs = {"output-0": self._array(answer)}
        for name, array in outputs.items():
            if array.ndim == 0 or len(array) != len(rows):
                raise ValueError(
                    f"the model answered {len(rows)} rows with {name} of shape {list(array.shape)}: "
                    "an output needs one row per input row"
                )
        if not outputs:
            raise ValueError("the model answered with no output")
        return outputs

    def _array(self, value: Any) -> np.ndarray:
        torch = self.torch
        if torch is not None and isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return np.asarray(value)


def build_stage_model(settings: StageSettings) -> StageModel:
    """Import the factory, build the variant's model and run it once on ``make_batch(1)`` (a warm-up, and the
    proof that it serves: a factory that cannot is one line here, before the server listens).

    Raises:
        ServeError: the factory cannot be imported, rejects the variant, or its model does not run its own batch.
    """
    try:
        factory = load_factory(settings.factory)
    except Exception as exc:  # ProfilingError: its message names --model and the problem
        raise ServeError(str(exc)) from None
    module_name, _, function_name = settings.factory.partition(":")
    if factory.variants is not None and settings.variant not in factory.variants:
        raise ServeError(
            f"variant {settings.variant!r} is not in {module_name}.VARIANTS ({', '.join(factory.variants)})"
        )
    function = getattr(sys.modules[module_name], function_name)
    what = f"{settings.factory}({settings.variant!r})"
    try:
        built = function(settings.variant)
    except Exception as exc:  # noqa: BLE001 - user code: any error is the user's to read
        raise ServeError(f"{what} failed: {describe(exc)}") from None
    if not (isinstance(built, tuple) and len(built) == 2 and all(callable(x) for x in built)):
        raise ServeError(f"{what} returned {type(built).__name__}, expected a tuple (model, make_batch)")
    model, make_batch = built
    try:
        sample = make_batch(1)
    except Exception as exc:  # noqa: BLE001
        raise ServeError(f"{what}: make_batch(1) failed: {describe(exc)}") from None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(sample, torch.Tensor):
        torch = None
    array = sample.detach().cpu().numpy() if torch is not None else np.asarray(sample)
    if array.ndim == 0 or len(array) != 1 or array.dtype.kind not in "biuf":
        raise ServeError(
            f"{what}: make_batch(1) built {type(sample).__name__} of shape {list(array.shape)} and dtype "
            f"{array.dtype}; expected one item of numbers, shape [1, ...]"
        )
    stage = StageModel(model=model, item_shape=tuple(array.shape[1:]), dtype=array.dtype, torch=torch)
    try:
        stage.run(array)
    except Exception as exc:  # noqa: BLE001
        raise ServeError(f"{what}: the model failed on make_batch(1): {describe(exc)}") from None
    return stage
