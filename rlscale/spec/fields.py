"""The spec's ranges and field types, and the helpers its models share to read a document.

The models are strict (a number is a number, not the string ``"1.5"``); what a YAML document may write beyond
that is said here once, as annotations the fields carry: `Unset` (a key written with no value, ``key:``, means
the field's default) and `OneOrMany` (one value for a list, written without brackets), both only while a
document is read (`reading`), never for a model built in code.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo
from pydantic_core import ArgsKwargs, PydanticCustomError, PydanticUseDefault

ACCURACY_METHODS = ("sum", "product")
SLA_MODES = ("priced", "hard")
QUEUE_DISCIPLINES = ("fifo", "edf")
# how the simulator draws a batch's service time (DESIGN.md section 4; `rlscale.sim.engine`): ``auto`` is
# ``empirical`` for a stage whose profile keeps run times and ``deterministic`` (the p99 as a fixed time) otherwise
SERVICE_MODELS = ("auto", "deterministic", "empirical")
VPA_UPDATERS = ("kubernetes", "infadapter")  # who applies the VPA's recommendation (agents/vpa.py)
# seconds a cores-only change takes to reach a running pod with in-place resizing (``resize_s``): an assumption,
# not a measurement (neither Sponge's paper nor its code measures it); see PROVENANCE.md, "In-place resize"
DEFAULT_RESIZE_S = 0.5
# the env vars a stage's container reads its settings from (the sidecar writes them; `rlscale serve` reads them):
# the defaults of the spec's kubernetes section, and of the reference runtime (rlscale.serve.settings)
VARIANT_ENV = "MODEL_VARIANT"
BATCH_ENV = "MAX_BATCH_SIZE"
BATCH_TIMEOUT_ENV = "BATCH_TIMEOUT_S"
MAX_PAYLOAD_KB = 1e7  # 10 GB: anything above is a unit mistake

# ranges of the spec's numbers: wide enough for any real pipeline, narrow enough that nothing overflows or runs away
MAX_SECONDS = 3600.0  # SLA, drop limit, interval, batch timeout, startup
MAX_BATCH = 4096
MAX_CORES_PER_REPLICA = 1024
MAX_REPLICAS = 10_000
MAX_CORE_BUDGET = 1_000_000
MAX_LIST_ITEMS = 64  # batch sizes or core counts a stage may choose from
MAX_WEIGHT = 1e6  # alpha, beta, gamma
MAX_PENALTY = 1e9  # sla_penalty
MAX_OVERRIDES = 64  # --set options of one command
MAX_ROLLOUTS = 10_000  # damping.max_rollouts
MAX_POOLS = 16  # max_pools of a stage (variant pools it may run at once)

# the fields computed while a document is read (the profile a stage resolves, the spec file, the bandwidth trace):
# a model built in code passes them, a document may not write them
HIDDEN = frozenset({"source", "trace", "profile_path", "latency"})


def fail(problem: str, at: str | int | None = None) -> PydanticCustomError:
    """A validation error whose message is ``problem``; ``at`` extends the error's location (a sub-field)."""
    return PydanticCustomError("spec", "{problem}", {"problem": problem, "at": at})


def first_repeat(names: list[str]) -> int | None:
    """Index of the first name that repeats an earlier one, or None."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            return i
        seen.add(name)
    return None


CONFIG = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False, arbitrary_types_allowed=True)

Text = Annotated[str, Field(strict=True, min_length=1)]
"""A non-empty string (surrounding whitespace removed)."""


def number(**bounds: float) -> Any:
    """A float (an int is taken as the float it is; a bool or a string is not a number) within ``bounds``."""
    return Annotated[float, Field(strict=True, **bounds)]


Seconds = number(ge=0.0, le=MAX_SECONDS)
Weight = number(ge=0.0, le=MAX_WEIGHT)


# ------------------------------------------------------------------------------------------ reading a document


def reading(info: ValidationInfo) -> dict[str, Any] | None:
    """The read context (`rlscale.spec.reading.parse_spec`'s) or None when the model is built in code."""
    context = info.context
    return context if isinstance(context, dict) and "path" in context else None


def _unset_is_default(value: Any, info: ValidationInfo) -> Any:
    if value is None and reading(info) is not None:
        raise PydanticUseDefault()
    return value


Unset = BeforeValidator(_unset_is_default)
"""In a document, a field written with no value (``key:``, YAML's null) takes its default (pydantic's
`PydanticUseDefault`); built in code, None is checked like any other value."""


def _one_or_many(value: Any, info: ValidationInfo) -> Any:
    if reading(info) is not None and value is not None and not isinstance(value, list | tuple):
        return [value]
    return value


OneOrMany = BeforeValidator(_one_or_many)
"""In a document, one value where a list is expected is the list of that value (``cores: 2`` is ``[2]``)."""


def document_fields(cls: type) -> list[str]:
    """The fields a document may write for ``cls``, sorted."""
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in HIDDEN)


def document(cls: type, data: Any, hidden: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A copy of ``data`` when it is a document mapping (None when the model is built in code).

    A document names only document fields: the fields computed while reading (``hidden``) are unknown there.
    """
    if isinstance(data, ArgsKwargs) or not isinstance(data, dict):
        return None
    for key in data:
        if key in hidden:
            raise fail(f"unknown field (allowed: {', '.join(document_fields(cls))})", str(key))
    return dict(data)


def drop_unset(data: Any) -> Any:
    """``data`` without the keys it writes with no value (``key:``), known fields or not, when it is a document
    mapping (a copy); anything else as it is."""
    if isinstance(data, ArgsKwargs) or not isinstance(data, dict):
        return data
    return {key: value for key, value in data.items() if value is not None}


def optional_in_document(*names: str, defaults: dict[str, Any] | None = None):
    """A ``json_schema_extra`` hook: fields the document may leave out (their value is derived when reading)."""

    def edit(schema: dict[str, Any], cls: Any = None) -> None:
        required = [n for n in schema.get("required", []) if n not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
        for key, value in (defaults or {}).items():
            schema["properties"][key]["default"] = value

    return edit


# ------------------------------------------------------------------------------------------ custom-worded lists


def int_list(maximum: int) -> Any:
    """A non-empty list of at most `MAX_LIST_ITEMS` unique integers in [1, maximum], stored sorted as a tuple.

    Hand-written (a `BeforeValidator`) for its words: each problem is reported at the list, in terms of the list
    (``has duplicates: [1, 1]``, ``must contain positive integers only``), where pydantic's item constraints would
    name one entry and has no check of uniqueness; the item type states the range for the JSON Schema.
    """

    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise fail(f"must be a non-empty list of positive integers, got {value!r}")
        if len(value) > MAX_LIST_ITEMS:
            raise fail(f"has {len(value)} entries; at most {MAX_LIST_ITEMS}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise fail(f"must contain positive integers only, got {item!r}")
            if item > maximum:
                raise fail(f"must contain integers <= {maximum}, got {item}")
        if len(set(value)) != len(value):
            raise fail(f"has duplicates: {list(value)}")
        return tuple(sorted(value))

    item = Annotated[int, Field(strict=True, ge=1, le=maximum)]
    return Annotated[
        tuple[item, ...],
        Field(min_length=1, max_length=MAX_LIST_ITEMS, json_schema_extra={"uniqueItems": True}),
        BeforeValidator(check),
    ]


def non_empty(what: str) -> BeforeValidator:
    """A non-empty list of sections (stages, variants), reported in the spec's words (``pipeline has no stages``)
    for an empty list and for anything that is not a list (hand-written for those words)."""

    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise fail(f"{what} (need a non-empty list)")
        return tuple(value)

    return BeforeValidator(check)


# ------------------------------------------------------------------------------------------ names


_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_k8s_name(value: str, max_len: int = 63) -> bool:
    """A Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or digit; 63
    characters for a DNS label (namespaces, containers), 253 for object names."""
    return bool(_K8S_NAME.match(value)) and len(value) <= max_len
