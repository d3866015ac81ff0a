"""The ``--set FIELD=VALUE`` overrides of every command that takes a spec, applied to its document before validation."""

from __future__ import annotations

import copy
import math
import re
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from rlscale.errors import SpecError
from rlscale.inputs import load_yaml
from rlscale.spec.fields import MAX_OVERRIDES, document_fields
from rlscale.spec.messages import field_path
from rlscale.spec.pipeline import NESTED, PipelineSpec


def _split_override(item: str) -> tuple[list[str], Any]:
    """``objective.alpha=10`` -> (``["objective", "alpha"]``, 10); the value is YAML (``true``, ``[1, 2]``)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item}: expected FIELD=VALUE with a dotted field path, e.g. objective.alpha=10")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise SpecError(f"--set {item}: {key!r} is not a dotted field path (e.g. stages.0.max_replicas)")
    value = load_yaml(text, f"--set {item}", SpecError, line_numbers=False) if text.strip() else None
    return [p.strip() for p in parts], value


_SCIENTIFIC = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
"""A number in scientific notation as people type it (``1e9``, ``2.5E-3``): YAML 1.1 reads it as a string (its
floats need a dot and a signed exponent, ``1.0e+9``)."""


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types a field's annotation is made of (``Annotated``, ``Optional`` and containers unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin is Literal:
        return {str}
    if origin is None:
        return {annotation}
    out: set[Any] = set()
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis:
            out |= _leaf_types(arg)
    return out


def _is_numeric(cls: type, name: str) -> bool:
    """Whether field ``name`` of the model ``cls`` holds numbers (or a list of them), and never text."""
    field = getattr(cls, "__pydantic_fields__", {}).get(name)
    leaves = _leaf_types(field.annotation) if field is not None else set()
    return bool(leaves & {int, float}) and str not in leaves


def _as_number(value: Any) -> Any:
    """``value`` with a string in scientific notation (``1e9``) read as the number it is: an integer where it is one
    (``1e3`` for a replica count) and exactly representable, else a float; lists element by element. The field's
    own validation then checks it like any other number (``sla_s=1e300`` is refused by its bound)."""
    if isinstance(value, list):
        return [_as_number(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        number = float(value)
        if math.isfinite(number) and number.is_integer() and abs(number) <= 2**53:
            return int(number)
        return number
    return value


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """A copy of a spec document with ``--set FIELD=VALUE`` overrides applied, each path checked against the model.

    A path names a field of the spec (``sla_s``), of a section (``objective.alpha``, ``kubernetes.namespace``), of
    a list entry by index (``stages.0.max_replicas``, ``stages.1.variants.0.accuracy``, ``stages.0.cores.1``) or
    a key of a mapping (``kubernetes.deployments.detector``). A section the document leaves out is created.

    Raises:
        SpecError: too many overrides, a malformed one, or a path that names no field (the message names it).
    """
    if len(overrides) > MAX_OVERRIDES:
        raise SpecError(f"--set given {len(overrides)} times; at most {MAX_OVERRIDES}")
    doc = copy.deepcopy(raw)
    for item in overrides:
        parts, value = _split_override(item)
        if not isinstance(doc, dict):
            break  # the document's own error (not a mapping) is reported by the validation
        _set_path(doc, parts, value, item)
    return doc


def _set_path(doc: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    node: Any = doc
    kind: Any = PipelineSpec  # a model class, "list:<cls>", "ints" or "mapping"
    done: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = field_path([*done, part])
        if isinstance(kind, type):
            allowed = document_fields(kind)
            if part not in allowed:
                raise SpecError(f"--set {item}: {here}: unknown field (allowed: {', '.join(allowed)})")
            if last:
                node[part] = _as_number(value) if _is_numeric(kind, part) else value
                return
            child_kind: Any = (
                ("list", NESTED[part])
                if part in ("stages", "variants")
                else "ints"
                if part in ("batch_sizes", "cores")
                else "mapping"
                if part in ("deployments", "promql")
                else NESTED.get(part)
            )
            if child_kind is None:
                raise SpecError(f"--set {item}: {here}: is a value, it has no fields")
            if node.get(part) is None and (isinstance(child_kind, type) or child_kind == "mapping"):
                node[part] = {}
            child = node.get(part)
            if (isinstance(child_kind, type) or child_kind == "mapping") and not isinstance(child, dict):
                raise SpecError(f"--set {item}: {here}: the spec's value is not a mapping")
            if isinstance(child_kind, tuple | str) and child_kind != "mapping" and not isinstance(child, list):
                raise SpecError(f"--set {item}: {here}: the spec's value is not a list")
            node, kind = child, child_kind
            done.append(part)
        elif kind == "mapping":
            if not last:
                raise SpecError(f"--set {item}: {here}: is a value, it has no fields")
            node[part] = value
            return
        else:  # a list: ("list", cls) or "ints"
            here = field_path([*done, int(part) if part.isdigit() else part])
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(
                    f"--set {item}: {here}: not an index of {field_path(done)} (0 to {len(node) - 1})"
                    if node
                    else f"--set {item}: {here}: {field_path(done)} is empty"
                )
            index = int(part)
            here = field_path([*done, index])
            if last:
                node[index] = _as_number(value) if kind == "ints" else value
                return
            if kind == "ints":
                raise SpecError(f"--set {item}: {here}: is a value, it has no fields")
            if not isinstance(node[index], dict):
                raise SpecError(f"--set {item}: {here}: the spec's value is not a mapping")
            node, kind = node[index], kind[1]
            done.append(index)


def override_paths(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(field path as messages write it, the override) of each override."""
    out = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        out.append((field_path([int(p) if p.isdigit() else p for p in key.split(".")]), item))
    return out
