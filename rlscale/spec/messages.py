"""Error rendering: a pydantic validation error of a spec document as one line, ``<file>: <field path>: <problem>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlscale.errors import SpecError
from rlscale.spec.fields import (
    ACCURACY_METHODS,
    QUEUE_DISCIPLINES,
    SERVICE_MODELS,
    SLA_MODES,
    VPA_UPDATERS,
    document_fields,
)
from rlscale.spec.pipeline import NESTED, PipelineSpec


def field_path(loc: Sequence[str | int]) -> str:
    """``('stages', 0, 'cores')`` -> ``stages[0].cores``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: Sequence[str | int]) -> type:
    """The model class a location lies in (for the allowed fields of an unknown one)."""
    cls: type = PipelineSpec
    for part in loc:
        if isinstance(part, str) and part in NESTED:
            cls = NESTED[part]
    return cls


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(error: Any) -> tuple[str, str]:
    """The field path and the problem, in words, of one pydantic error (see `invalid`)."""
    loc = list(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "spec":
        if ctx.get("at") is not None:
            loc.append(ctx["at"])
        return field_path(loc), str(ctx["problem"])
    where = field_path(loc)
    if kind == "missing":
        return where, "required field is missing"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return where, f"unknown field (allowed: {', '.join(document_fields(_model_at(loc[:-1])))})"
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type"):
        return where, f"must be a mapping, got {type(value).__name__}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return where, f"must be a number, got {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return where, f"must be an integer, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return where, f"must be true or false, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return where, f"must be a non-empty string, got {value!r}"
    if kind == "string_too_long":
        return where, f"longer than {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return where, f"does not match {ctx.get('pattern')}, got {value!r}"
    if kind == "literal_error":
        last = loc[-1] if loc else None
        allowed = {
            "sla_mode": SLA_MODES,
            "queue_discipline": QUEUE_DISCIPLINES,
            "updater": VPA_UPDATERS,
            "service_model": SERVICE_MODELS,
        }.get(last, ACCURACY_METHODS)
        return where, f"must be one of {', '.join(allowed)}, got {value!r}"
    comparisons = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", ">="),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "<="),
    }
    if kind in comparisons:
        key, sign = comparisons[kind]
        return where, f"must be {sign} {_bound(ctx[key])}, got {_bound(value)}"
    msg = str(error.get("msg", kind))
    return where, msg[:1].lower() + msg[1:]


def invalid(path: Path, error: ValidationError) -> SpecError:
    """The first problem of a validation as one `SpecError` line; its ``field`` attribute is the field path."""
    where, problem = _describe(error.errors(include_url=False)[0])
    exc = SpecError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")
    exc.field = where  # type: ignore[attr-defined]
    return exc
