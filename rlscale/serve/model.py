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
        with np.errstate(over="ignore", invalid="ignore"):  # what overflows is found and refused below
            out = tensor.astype(self.dtype)
        bad = _lost(tensor, out)
        if bad is not None:
            raise InputMismatch(f"input value {bad} is out of the range of the model's {self.dtype}")
        return out

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


_NUMBER = object()
"""What a search for a value that is not a number finds when all are."""


def checked_values(data: Any, dtype: np.dtype, datatype: str) -> np.ndarray:
    """A request's values (a list, nested or flat, as JSON gives them) as an array of ``dtype``, refusing any value
    that ``dtype`` cannot hold instead of wrapping, truncating or overflowing it.

    Args:
        data: the tensor's ``data``.
        dtype: the numpy dtype of the declared datatype.
        datatype: the declared datatype (``INT64``...), for messages.

    Raises:
        InputMismatch: a value is no number (text, null, a ragged list), is out of the datatype's range, is a
            fraction for an integer datatype, or is not true/false for ``BOOL``.
    """
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        raise InputMismatch(f"{datatype} data is not a regular list of numbers") from None
    kind = dtype.kind
    if raw.dtype.kind == "O":  # null or another object among numbers, or an integer beyond 64 bits
        flat = raw.ravel()
        other = next((v for v in flat if not isinstance(v, int | float)), _NUMBER)
        if other is not _NUMBER:
            raise InputMismatch(_not_numbers(datatype, other))
        if kind in "iu":
            big = next((v for v in flat if isinstance(v, int) and not _fits(v, dtype)), None)
            if big is not None:
                raise InputMismatch(f"input value {big} is out of the range of {datatype} ({_range(dtype)})")
        try:
            raw = raw.astype(np.float64)
        except OverflowError:
            raise InputMismatch(f"an input value is out of the range of {datatype} ({_range(dtype)})") from None
    if raw.dtype.kind not in "biuf":
        raise InputMismatch(_not_numbers(datatype, raw.ravel()[0]))
    if kind == "b":
        if raw.dtype.kind != "b" and raw.size:
            raise InputMismatch(_not_numbers(datatype, raw.ravel()[0]))
        return raw.astype(dtype)
    if raw.dtype.kind == "b":
        raise InputMismatch(f"{datatype} data holds true or false, not a number")
    if kind in "iu" and raw.dtype.kind == "f":
        fraction = raw[raw != np.floor(raw)] if raw.size else raw
        if fraction.size:
            raise InputMismatch(f"input value {fraction[0]:g} is not a whole number, as {datatype} needs")
    with np.errstate(over="ignore", invalid="ignore"):  # what overflows is found and refused below
        out = raw.astype(dtype)
    bad = _lost(raw, out)
    if bad is not None:
        raise InputMismatch(f"input value {bad} is out of the range of {datatype} ({_range(dtype)})")
    return out


def _not_numbers(datatype: str, value: Any) -> str:
    if datatype == "BOOL":
        return f"BOOL data must be true or false, not {json_value(value)}"
    return f"{datatype} data holds {json_value(value)}, not a number"


def json_value(value: Any) -> str:
    """A value as a message shows it: JSON's spelling of null, true and false, at most 40 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value)[:40]


def _fits(value: int, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return int(info.min) <= value <= int(info.max)


def _range(dtype: np.dtype) -> str:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"{info.min} to {info.max}"
    return f"magnitude at most {np.finfo(dtype).max:g}"


def _lost(source: np.ndarray, out: np.ndarray) -> Any:
    """The first value of ``source`` that its cast ``out`` does not hold (out of range); None when all fit."""
    if not source.size:
        return None
    if out.dtype.kind == "f":
        lost = ~np.isfinite(out) & np.isfinite(source)
    elif out.dtype.kind in "iu" and source.dtype.kind in "iuf":
        info = np.iinfo(out.dtype)
        # compared with exact bounds: max + 1 is a power of two, exact as a float too
        lost = (source < int(info.min)) | (source >= int(info.max) + 1)
    else:
        return None
    if not lost.any():
        return None
    value = source[lost][0]
    return f"{value:g}" if source.dtype.kind == "f" else str(value)


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
