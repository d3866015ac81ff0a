"""Pipeline specs: the YAML description of a pipeline, validated into frozen pydantic models.

A spec names the stages in order; per stage its variants (accuracy in [0, 1], startup delay), the batch sizes and
cores per replica it may use, its replica range and its latency profile; and for the whole pipeline the
end-to-end SLA, drop limit, adaptation interval, batch timeout, core budget and the objective's weights.
See ``rlscale/data/pipelines/video.yaml`` for a complete example; `spec_json_schema` is the format as a JSON
Schema (``rlscale pipelines --schema``).

The models are pydantic dataclasses (frozen, unknown fields forbidden): built from YAML by `load_spec` /
`parse_spec`, or directly in code (``VariantSpec("yolov5n", 0.28, None, 5.0)``; ``dataclasses.replace`` works and
validates again). Every field's range is checked either way. The checks that need the files (the profile each
stage resolves, its variants and batch sizes, a core budget that holds the smallest configuration) run when a
spec is read from data. `load_spec` takes ``overrides`` (``objective.alpha=10``, ``stages.0.max_replicas=8``):
the ``--set`` of every command that takes a spec.

Every problem is reported as one `SpecError` whose message names the file, the field path (``stages[0].cores``)
and what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ArgsKwargs, PydanticCustomError

from rlscale.bandwidth import BandwidthTrace, load_bandwidth
from rlscale.errors import ProfileError, SpecError, TraceError
from rlscale.inputs import MAX_SPEC_BYTES, load_yaml, read_text_limited
from rlscale.paths import NAME_MAX, SAFE_NAME, is_safe_name, name_rule
from rlscale.profiles import LatencyModel, load_profile
from rlscale.promql import DEFAULT_TEMPLATES, check_template

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


def data_dir() -> Path:
    """The bundled data folder (``rlscale/data``)."""
    return Path(str(resources.files("rlscale") / "data"))


def bundled_pipelines() -> list[str]:
    """Names of the bundled pipeline specs, sorted."""
    return sorted(p.stem for p in (data_dir() / "pipelines").glob("*.yaml"))


# ---------------------------------------------------------------------------------------------- field types


def _fail(problem: str, at: str | int | None = None) -> PydanticCustomError:
    """A validation error whose message is ``problem``; ``at`` extends the error's location (a sub-field)."""
    return PydanticCustomError("spec", "{problem}", {"problem": problem, "at": at})


def _first_repeat(names: list[str]) -> int | None:
    """Index of the first name that repeats an earlier one, or None."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            return i
        seen.add(name)
    return None


_CONFIG = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False, arbitrary_types_allowed=True)

Text = Annotated[str, Field(strict=True, min_length=1)]
"""A non-empty string (surrounding whitespace removed)."""


def _number(**bounds: float) -> Any:
    return Annotated[float, Field(strict=True, **bounds)]


Seconds = _number(ge=0.0, le=MAX_SECONDS)
Weight = _number(ge=0.0, le=MAX_WEIGHT)


def _int_list(maximum: int) -> Any:
    """A non-empty list of at most `MAX_LIST_ITEMS` unique integers in [1, maximum], stored sorted as a tuple."""

    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise _fail(f"must be a non-empty list of positive integers, got {value!r}")
        if len(value) > MAX_LIST_ITEMS:
            raise _fail(f"has {len(value)} entries; at most {MAX_LIST_ITEMS}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise _fail(f"must contain positive integers only, got {item!r}")
            if item > maximum:
                raise _fail(f"must contain integers <= {maximum}, got {item}")
        if len(set(value)) != len(value):
            raise _fail(f"has duplicates: {list(value)}")
        return tuple(sorted(value))

    item = Annotated[int, Field(strict=True, ge=1, le=maximum)]
    return Annotated[
        tuple[item, ...],
        Field(min_length=1, max_length=MAX_LIST_ITEMS, json_schema_extra={"uniqueItems": True}),
        BeforeValidator(check),
    ]


def _non_empty(what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise _fail(f"{what} (need a non-empty list)")
        return tuple(value)

    return BeforeValidator(check)


def _document(cls: type, data: Any, info: ValidationInfo, hidden: tuple[str, ...]) -> dict[str, Any] | None:
    """``data`` as a document mapping when it is one being read (None when the model is built in code).

    A document names only document fields: the fields computed while reading (``hidden``) are unknown there.
    """
    if isinstance(data, ArgsKwargs) or not isinstance(data, dict):
        return None
    for key in data:
        if key in hidden:
            raise _fail(f"unknown field (allowed: {', '.join(_document_fields(cls))})", str(key))
    return dict(data)


def _drop_unset(doc: dict[str, Any]) -> None:
    """Remove the keys a document leaves empty (``key:`` with no value), so their defaults apply."""
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]


def _reading(info: ValidationInfo) -> dict[str, Any] | None:
    """The read context (`parse_spec`'s) or None when the model is built in code."""
    context = info.context
    return context if isinstance(context, dict) and "path" in context else None


def _optional_in_document(*names: str, defaults: dict[str, Any] | None = None):
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


# ---------------------------------------------------------------------------------------------------- models


@dataclass(
    frozen=True,
    config=ConfigDict(
        **_CONFIG, json_schema_extra=_optional_in_document("metric_value", defaults={"metric_value": None})
    ),
)
class VariantSpec:
    """One model variant a stage can run.

    Attributes:
        name: variant name, unique within its stage.
        accuracy: task accuracy normalised to [0, 1] (used by the ``product`` method).
        metric_value: the raw published metric (informational; optional in the document).
        startup_s: seconds from the decision until a new replica of this variant serves (model load).
    """

    name: Text
    accuracy: _number(ge=0.0, le=1.0)
    metric_value: Annotated[float | None, Field(strict=True)]
    startup_s: Seconds

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ())
        if doc is None:
            return data
        doc.setdefault("metric_value", None)
        return doc


_STAGE_HIDDEN = ("profile_path", "latency")


@dataclass(
    frozen=True,
    config=ConfigDict(
        **_CONFIG,
        json_schema_extra=_optional_in_document(
            "metric",
            "min_replicas",
            "max_pools",
            "queue_discipline",
            defaults={"metric": "accuracy", "min_replicas": 1, "max_pools": 1, "queue_discipline": "fifo"},
        ),
    ),
)
class StageSpec:
    """One stage of a pipeline.

    Attributes:
        name: stage name, unique within the pipeline.
        task: the stage's task; without ``profile``, the bundled profile ``rlscale/data/profiles/<task>.csv``.
        metric: name of the accuracy metric (informational; default ``accuracy``).
        batch_sizes: batch sizes a replica may use (sorted, unique).
        cores: cores per replica it may use (sorted, unique).
        min_replicas: fewest replicas (default 1).
        max_replicas: most replicas.
        variants: the model variants the stage can run.
        profile_path: the latency profile's CSV (resolved: relative paths from the spec's folder).
        latency: the profile's latency model (not compared, not printed).
        profile: the ``profile`` as the document wrote it (None: the task's bundled profile).
        max_pools: most variant pools the stage may run at once (DESIGN.md section 3; default 1, one variant at a
            time as in IPA; at most the number of variants). A stage with ``max_pools > 1`` runs one pool per
            variant, each with its own queue, replicas and share of the stage's requests.
        queue_discipline: the order an idle replica takes queued requests in (DESIGN.md section 4): ``fifo``
            (default; by arrival at the stage) or ``edf`` (earliest deadline first: by each request's end-to-end
            deadline, ties by arrival). Each pool has its own queue.
    """

    name: Text
    task: Text
    metric: Text
    batch_sizes: _int_list(MAX_BATCH)
    cores: _int_list(MAX_CORES_PER_REPLICA)
    min_replicas: Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)]
    max_replicas: Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)]
    variants: Annotated[tuple[VariantSpec, ...], Field(min_length=1), _non_empty("stage has no variants")]
    profile_path: SkipJsonSchema[Path]
    latency: SkipJsonSchema[LatencyModel] = dataclasses.field(repr=False, compare=False)
    profile: Annotated[Text | None, Field(description="latency profile CSV (relative to the spec's folder)")] = None
    max_pools: Annotated[
        int, Field(strict=True, ge=1, le=MAX_POOLS, description="most variant pools the stage runs at once")
    ] = 1
    queue_discipline: Annotated[
        Literal["fifo", "edf"], Field(description="queue order: fifo (arrival) or edf (earliest deadline first)")
    ] = "fifo"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, _STAGE_HIDDEN)
        context = _reading(info)
        if doc is None or context is None:
            return data
        doc.setdefault("metric", "accuracy")
        doc.setdefault("min_replicas", 1)
        if doc.get("queue_discipline") is None:
            doc.pop("queue_discipline", None)
        if doc.get("profile") is None:
            doc.pop("profile", None)
        path = _resolve_profile(doc, context["path"])
        if path is not None:
            cache: dict[Path, LatencyModel] = context["profiles"]
            if path not in cache:
                try:
                    cache[path] = load_profile(path)
                except ProfileError as exc:
                    raise _fail(str(exc), "profile") from None
            doc["profile_path"], doc["latency"] = path, cache[path]
        return doc

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> StageSpec:
        if not is_k8s_name(self.name):
            # it names the stage's Kubernetes objects (<pipeline>-<stage>, a pooled stage's Deployments, Services
            # and HTTPRoute), is the rlscale.io/stage label and the stage label in PromQL: one rule for all
            raise _fail(
                f"{self.name!r} is not a usable stage name (it names Kubernetes objects and labels): lowercase "
                "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
                "name",
            )
        if self.max_replicas < self.min_replicas:
            raise _fail(f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}", "max_replicas")
        j = _first_repeat([v.name for v in self.variants])
        if j is not None:
            raise _fail(f"duplicate variant {self.variants[j].name!r} in stage {self.name!r}", f"variants[{j}].name")
        if self.max_pools > len(self.variants):  # pools are keyed by variant
            raise _fail(
                f"must be <= the stage's number of variants ({len(self.variants)}), got {self.max_pools}", "max_pools"
            )
        if _reading(info) is None:
            return self
        # read from data: the profile must cover every variant and batch size (code may extrapolate on purpose)
        latency, where = self.latency, self.profile_path.name
        for j, v in enumerate(self.variants):
            if v.name not in latency.variants:
                raise _fail(
                    f"unknown variant {v.name!r}: no rows in profile {where} (has: {', '.join(latency.variants)})",
                    f"variants[{j}].name",
                )
            for b in self.batch_sizes:
                if not latency.has_batch(v.name, b):
                    raise _fail(f"batch size {b} has no profile point for variant {v.name!r} in {where}", "batch_sizes")
        return self

    @property
    def variant_names(self) -> list[str]:
        """The variants' names, in the spec's order."""
        return [v.name for v in self.variants]

    def variant(self, name: str) -> VariantSpec:
        """The variant called ``name``; `SpecError` if the stage has none."""
        for v in self.variants:
            if v.name == name:
                return v
        raise SpecError(f"stage {self.name!r} has no variant {name!r} (has: {', '.join(self.variant_names)})")

    @property
    def cheapest_variant(self) -> str:
        """The least accurate variant (the fastest, by the model's premise): where a stage starts and falls back to."""
        return min(self.variants, key=lambda v: v.accuracy).name

    @property
    def most_accurate_variant(self) -> str:
        """The most accurate variant."""
        return max(self.variants, key=lambda v: v.accuracy).name

    def rank_accuracy(self, name: str) -> float:
        """Rank-normalised accuracy: the k-th least accurate of n variants scores k/n (the best scores 1)."""
        ordered = sorted(self.variants, key=lambda v: v.accuracy)
        for rank, v in enumerate(ordered, start=1):
            if v.name == name:
                return rank / len(ordered)
        raise SpecError(f"stage {self.name!r} has no variant {name!r}")


@dataclass(
    frozen=True,
    config=ConfigDict(
        **_CONFIG,
        json_schema_extra=_optional_in_document(
            "sla_penalty", "rho_max", "sla_mode", defaults={"rho_max": 1.0, "sla_mode": "priced"}
        ),
    ),
)
class ObjectiveSpec:
    """Weights of ``alpha*A - beta*C - gamma*B`` and how violations are charged in the score.

    Attributes:
        alpha: weight of pipeline accuracy A.
        beta: weight of total cores C.
        gamma: weight of total batch size B.
        accuracy_method: ``sum`` of rank-normalised accuracies or ``product`` of raw accuracies.
        sla_penalty: score charged per unit violation rate (default ``100*beta``: 1% violations cost one core).
        rho_max: highest planned utilisation of a stage (throughput must cover load / rho_max; default 1).
        sla_mode: how violations weigh against cost and accuracy. ``priced`` (default): they cost
            ``sla_penalty`` per unit violation rate in the score, so a cheap configuration may win with some
            violations. ``hard``: they dominate lexicographically: runs are ranked by violation rate first and by
            score only among equal rates (`rlscale.model.rank_key`), and the safety layer never trades capacity
            for cost while violations are observed (`ilp_baseline.safety.SafetyLayer`).
    """

    alpha: Weight
    beta: Weight
    gamma: Weight
    accuracy_method: Literal["sum", "product"]
    sla_penalty: _number(ge=0.0, le=MAX_PENALTY)
    rho_max: _number(gt=0.0, le=1.0)
    sla_mode: Literal["priced", "hard"] = "priced"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ())
        if doc is None:
            return data
        beta = doc.get("beta")
        if doc.get("sla_penalty") is None and isinstance(beta, int | float) and not isinstance(beta, bool):
            doc["sla_penalty"] = 100.0 * beta
        if doc.get("rho_max") is None:
            doc["rho_max"] = 1.0
        if doc.get("sla_mode") is None:
            doc.pop("sla_mode", None)
        return doc


@dataclass(frozen=True, config=_CONFIG)
class DampingSpec:
    """The reconfiguration budget (the spec's optional ``damping`` section; every field defaults to 0: off).

    Enforced in the control step after the guard, for every policy (`rlscale.control.Damper`). A *rollout* is a
    stage's change of variant, batch size or cores per replica (new pods, a model load of ``startup_s``); a
    *scaling* changes replicas only. Scaling up is never delayed.

    Attributes:
        min_dwell_s: a stage that rolled out keeps its variant, batch and cores this long (0: off).
        max_rollouts: at most this many rollouts per stage within ``rollout_window_s`` (0: no limit).
        rollout_window_s: the window ``max_rollouts`` counts in (needed when ``max_rollouts`` > 0).
        scale_down_stabilization_s: a stage scales down only to the highest replica count recommended within
            this many seconds (the Kubernetes HPA's ``behavior.scaleDown.stabilizationWindowSeconds``; 0: off).

    Recommended production values: ``min_dwell_s: 60``, ``max_rollouts: 3``, ``rollout_window_s: 600``,
    ``scale_down_stabilization_s: 300``.
    """

    min_dwell_s: Seconds = 0.0
    max_rollouts: Annotated[int, Field(strict=True, ge=0, le=MAX_ROLLOUTS)] = 0
    rollout_window_s: Seconds = 0.0
    scale_down_stabilization_s: Seconds = 0.0

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ())
        if doc is None:
            return data
        _drop_unset(doc)
        for key in ("min_dwell_s", "rollout_window_s", "scale_down_stabilization_s"):
            value = doc.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                doc[key] = float(value)
        return doc

    @model_validator(mode="after")
    def _check(self) -> DampingSpec:
        if self.max_rollouts > 0 and self.rollout_window_s <= 0:
            raise _fail(f"must be > 0 when max_rollouts is set ({self.max_rollouts})", "rollout_window_s")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return bool(self.min_dwell_s or self.max_rollouts or self.scale_down_stabilization_s)


_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_k8s_name(value: str, max_len: int = 63) -> bool:
    """A Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or digit; 63
    characters for a DNS label (namespaces, containers), 253 for object names."""
    return bool(_K8S_NAME.match(value)) and len(value) <= max_len


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EnvName = Annotated[Text, Field(pattern=_ENV_NAME.pattern)]


@dataclass(frozen=True, config=_CONFIG)
class KubeSpec:
    """How the pipeline runs on Kubernetes (the spec's optional ``kubernetes`` section; every field has a default).

    Attributes:
        namespace: namespace of the stage Deployments (the sidecar's ``--namespace`` overrides it; with neither,
            the sidecar pod's own namespace, else ``default``).
        container: the container that serves the model (None: the Deployment's first container).
        variant_env: env var that names the model variant the container loads.
        batch_env: env var that sets the container's maximum batch size.
        batch_timeout_env: env var that gets the spec's ``batch_timeout_s`` (seconds a replica waits for a full
            batch), written with every pod-template change like the batch size.
        deployments: Deployment name by stage; a stage not listed is found by the labels
            ``rlscale.io/pipeline=<pipeline>`` and ``rlscale.io/stage=<stage>``.
        promql: PromQL templates that override `rlscale.promql.DEFAULT_TEMPLATES`, by name.
    """

    namespace: Annotated[str, Field(strict=True, min_length=1, max_length=63)] | None = None
    container: Annotated[str, Field(strict=True, min_length=1, max_length=63)] | None = None
    variant_env: EnvName = VARIANT_ENV
    batch_env: EnvName = BATCH_ENV
    batch_timeout_env: EnvName = BATCH_TIMEOUT_ENV
    deployments: dict[Text, Annotated[Text, Field(max_length=253)]] = dataclasses.field(default_factory=dict)
    promql: Annotated[
        dict[Text, Text],
        Field(json_schema_extra={"propertyNames": {"enum": list(DEFAULT_TEMPLATES)}}),
    ] = dataclasses.field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ())
        if doc is None:
            return data
        # checked here, before the types, so that each problem gets its own words
        for key in ("namespace", "container"):
            value = doc.get(key)
            if isinstance(value, str) and not is_k8s_name(value.strip()):
                raise _fail(f"must be a Kubernetes name (lowercase, digits, '-'), got {value!r}", key)
        for key in ("variant_env", "batch_env", "batch_timeout_env"):
            value = doc.get(key)
            if value is None:
                doc.pop(key, None)
            elif isinstance(value, str) and not _ENV_NAME.match(value.strip()):
                raise _fail(f"must be an environment variable name, got {value!r}", key)
        for key in ("deployments", "promql"):
            if doc.get(key) is None:
                doc.pop(key, None)
        promql = doc.get("promql")
        if isinstance(promql, dict):
            for name, template in promql.items():
                if name not in DEFAULT_TEMPLATES:
                    raise _fail(f"unknown field (allowed: {', '.join(sorted(DEFAULT_TEMPLATES))})", f"promql.{name}")
                if isinstance(template, str):
                    problem = check_template(name, template.strip())
                    if problem:
                        raise _fail(problem, f"promql.{name}")
        return doc

    @model_validator(mode="after")
    def _check(self) -> KubeSpec:
        for key in ("namespace", "container"):
            value = getattr(self, key)
            if value is not None and not is_k8s_name(value):
                raise _fail(f"must be a Kubernetes name (lowercase, digits, '-'), got {value!r}", key)
        if self.variant_env == self.batch_env:
            raise _fail("variant and batch size need two different env vars", "batch_env")
        if self.batch_timeout_env in (self.variant_env, self.batch_env):
            raise _fail("the batch timeout needs an env var of its own (not the variant's or batch size's)",
                        "batch_timeout_env")  # fmt: skip
        owner: dict[str, str] = {}
        for stage, name in self.deployments.items():
            if not is_k8s_name(name, max_len=253):
                raise _fail(f"must be a Kubernetes name, got {name!r}", f"deployments.{stage}")
            if name in owner:
                raise _fail(f"Deployment {name!r} is already another stage's", f"deployments.{stage}")
            owner[name] = stage
        for name, template in self.promql.items():
            problem = check_template(name, template)
            if problem:
                raise _fail(problem, f"promql.{name}")
        return self


@dataclass(frozen=True, config=_CONFIG)
class RequestSloSpec:
    """Per-request SLOs (the spec's optional ``request_slo`` section; DESIGN.md section 4, Sponge's model).

    Each request's remaining budget is ``sla_s - payload_kb * 1024 / bandwidth`` at its arrival
    (`rlscale.bandwidth`): the client's upload eats part of the SLA.

    Attributes:
        payload_kb: the request's payload in kilobytes of 1024 bytes (Sponge's arithmetic).
        bandwidth: a bundled bandwidth trace's name (``lte-bus``, Sponge's 4G/LTE trace) or a CSV path (relative
            to the spec's folder) with a ``bandwidth_bytes_per_s`` column, one row per second, repeated
            cyclically over longer runs.
        trace: the bandwidth trace read (not part of the document, not compared).
    """

    payload_kb: _number(gt=0.0, le=MAX_PAYLOAD_KB)
    bandwidth: Text
    trace: SkipJsonSchema[BandwidthTrace | None] = dataclasses.field(default=None, repr=False, compare=False)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ("trace",))
        context = _reading(info)
        if doc is None or context is None:
            return data
        raw = doc.get("bandwidth")
        if isinstance(raw, str) and raw.strip():
            try:
                doc["trace"] = load_bandwidth(raw.strip(), Path(context["path"]).parent)
            except TraceError as exc:
                raise _fail(str(exc), "bandwidth") from None
        return doc

    @model_validator(mode="after")
    def _check(self) -> RequestSloSpec:
        if self.trace is None:  # built in code: a bundled name, or a path from the working folder
            try:
                object.__setattr__(self, "trace", load_bandwidth(self.bandwidth))
            except TraceError as exc:
                raise _fail(str(exc), "bandwidth") from None
        return self


@dataclass(frozen=True, config=_CONFIG)
class VpaSpec:
    """How the ``vpa`` policy runs on this pipeline when its flags are not given (the spec's optional ``vpa``
    section): the VPA baseline of the system the pipeline reproduces (``infadapter``: InfAdapter's ``vpa-152``).
    The ``--vpa-updater``, ``--vpa-variant`` and ``--vpa-cores`` flags override each field.

    Attributes:
        updater: who applies the recommendation: ``kubernetes`` (the VPA updater, the default) or ``infadapter``
            (InfAdapter's adapter; see agents/vpa.py).
        variant: the Deployment's variants: one name per stage, or one name for every stage that offers it
            (default: none pinned).
        cores: the initial cores per replica: one for every stage, or one per stage (default: none pinned).
    """

    updater: Annotated[Literal["kubernetes", "infadapter"], Field(description="who applies the recommendation")] = (
        "kubernetes"
    )
    variant: Annotated[tuple[Text, ...], Field(min_length=1, max_length=MAX_LIST_ITEMS)] | None = None
    cores: (
        Annotated[
            tuple[Annotated[int, Field(strict=True, ge=1, le=MAX_CORES_PER_REPLICA)], ...],
            Field(min_length=1, max_length=MAX_LIST_ITEMS),
        ]
        | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ())
        if doc is None:
            return data
        _drop_unset(doc)
        for key in ("variant", "cores"):  # one value for every stage may be written without brackets
            if key in doc and not isinstance(doc[key], list | tuple):
                doc[key] = [doc[key]]
        return doc


def _safe_pipeline_name(value: Any) -> Any:
    # the name becomes part of file paths (run folders, bundled agents, plots)
    if isinstance(value, str) and value.strip() and not is_safe_name(value.strip()):
        raise _fail(f"{value.strip()!r} is not a usable pipeline name ({name_rule(NAME_MAX)})")
    return value


@dataclass(
    frozen=True,
    config=ConfigDict(
        **_CONFIG,
        title="rlscale pipeline spec",
        json_schema_extra=_optional_in_document("description"),
    ),
)
class PipelineSpec:
    """A validated pipeline spec. Read it with `load_spec`.

    Attributes:
        name: the pipeline's name (a safe file-name component: it names run folders and bundled agents).
        description: one line (default: the name).
        sla_s: end-to-end latency SLA in seconds.
        drop_limit_s: a request waiting this long is dropped (>= ``sla_s``).
        interval_s: adaptation interval in seconds (>= 1: the traces count whole seconds).
        batch_timeout_s: longest wait of a replica for a full batch.
        core_budget: most cores the pipeline may hold.
        objective: the objective's weights.
        stages: the stages, in order.
        source: the spec file (not part of the document).
        kubernetes: the ``kubernetes`` section (not compared).
        damping: the reconfiguration budget (`DampingSpec`; default: off).
        request_slo: per-request SLOs (`RequestSloSpec`; None, the default: every request's deadline is its
            arrival + ``sla_s``).
        in_place_resize: a change of a pool's cores alone (same variant and batch) resizes its running replicas in
            place after ``resize_s`` (Kubernetes in-place pod resize) instead of rolling out new ones (default
            false).
        resize_s: seconds until an in-place resize applies (default `DEFAULT_RESIZE_S`; read only with
            ``in_place_resize``).
        vpa: how the ``vpa`` policy runs here when its flags are not given (`VpaSpec`; None, the default: the
            Kubernetes VPA updater on the variants and cores in force).
        service_model: how the simulator draws a batch's service time (`SERVICE_MODELS`, `rlscale.sim.engine`):
            ``deterministic``, the profile's p99 (``latency_s``) as a fixed time; ``empirical``, the point's mean
            times a run-to-run factor drawn from the profiled run times (seeded); ``auto`` (default),
            ``empirical`` for a stage whose profile keeps run times and ``deterministic`` for the others.
    """

    name: Annotated[
        str,
        Field(strict=True, min_length=1, max_length=NAME_MAX, pattern=SAFE_NAME.pattern),
        BeforeValidator(_safe_pipeline_name),
    ]
    description: str  # free text; empty allowed (code-built specs leave it blank)
    sla_s: _number(gt=0.0, le=MAX_SECONDS)
    drop_limit_s: _number(gt=0.0, le=MAX_SECONDS)
    interval_s: _number(ge=1.0, le=MAX_SECONDS)
    batch_timeout_s: Seconds
    core_budget: Annotated[int, Field(strict=True, ge=1, le=MAX_CORE_BUDGET)]
    objective: ObjectiveSpec
    stages: Annotated[tuple[StageSpec, ...], Field(min_length=1), _non_empty("pipeline has no stages")]
    source: SkipJsonSchema[Path]
    kubernetes: KubeSpec = dataclasses.field(default_factory=KubeSpec, compare=False)
    damping: DampingSpec = dataclasses.field(default_factory=DampingSpec)
    request_slo: RequestSloSpec | None = None
    in_place_resize: Annotated[bool, Field(strict=True)] = False
    resize_s: Seconds = DEFAULT_RESIZE_S
    vpa: VpaSpec | None = None
    service_model: Annotated[
        Literal["auto", "deterministic", "empirical"],
        Field(description="service times: auto, deterministic (the p99) or empirical (sampled run times)"),
    ] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        doc = _document(cls, data, info, ("source",))
        context = _reading(info)
        if doc is None or context is None:
            return data
        if doc.get("description") is None:
            doc["description"] = doc.get("name")
        if doc.get("kubernetes") is None:
            doc.pop("kubernetes", None)
        for key in ("damping", "request_slo", "in_place_resize", "resize_s", "vpa", "service_model"):
            if doc.get(key) is None:
                doc.pop(key, None)
        if isinstance(doc.get("resize_s"), int) and not isinstance(doc.get("resize_s"), bool):
            doc["resize_s"] = float(doc["resize_s"])
        doc["source"] = context["path"]
        return doc

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> PipelineSpec:
        if not is_safe_name(self.name):
            raise _fail(f"{self.name!r} is not a usable pipeline name ({name_rule(NAME_MAX)})", "name")
        if self.drop_limit_s < self.sla_s:
            raise _fail(f"must be >= sla_s ({self.sla_s:g}), got {self.drop_limit_s:g}", "drop_limit_s")
        names = [s.name for s in self.stages]
        i = _first_repeat(names)
        if i is not None:
            raise _fail(f"duplicate stage {names[i]!r}", f"stages[{i}].name")
        for stage in self.kubernetes.deployments:
            if stage not in names:
                allowed = ", ".join(sorted(names))
                raise _fail(f"unknown field (allowed: {allowed})", f"kubernetes.deployments.{stage}")
        if self.vpa is not None:
            self._check_vpa(self.vpa)
        if _reading(info) is not None:  # code may build deliberately infeasible specs (tests, benchmarks)
            smallest = sum(s.min_replicas * min(s.cores) for s in self.stages)
            if smallest > self.core_budget:
                raise _fail(
                    f"{self.core_budget} cores cannot hold the smallest configuration "
                    f"(min_replicas x min cores = {smallest})",
                    "core_budget",
                )
        return self

    def _check_vpa(self, vpa: VpaSpec) -> None:
        n = len(self.stages)
        for key, values in (("variant", vpa.variant), ("cores", vpa.cores)):
            if values is not None and len(values) not in (1, n):
                raise _fail(f"needs one value or one per stage ({n}), got {len(values)}", f"vpa.{key}")
        if vpa.variant is not None:
            for i, name in enumerate(vpa.variant):
                stages = self.stages if len(vpa.variant) == 1 else (self.stages[i],)
                if not any(name in s.variant_names for s in stages):
                    where = "no stage offers it" if len(vpa.variant) == 1 else f"stage {stages[0].name!r} lacks it"
                    raise _fail(f"unknown variant {name!r} ({where})", f"vpa.variant[{i}]")
        if vpa.cores is not None:
            for i, cores in enumerate(vpa.cores):
                stages = self.stages if len(vpa.cores) == 1 else (self.stages[i],)
                for s in stages:
                    if cores not in s.cores:
                        raise _fail(
                            f"stage {s.name!r} offers no {cores} cores (cores: {list(s.cores)})", f"vpa.cores[{i}]"
                        )

    @property
    def per_request_slo(self) -> bool:
        """Whether requests carry their own deadlines (a ``request_slo`` section)."""
        return self.request_slo is not None

    @property
    def pooled(self) -> bool:
        """Whether some stage may run two or more variant pools (``max_pools > 1``)."""
        return any(s.max_pools > 1 for s in self.stages)

    def stage(self, name: str) -> StageSpec:
        """The stage called ``name``; `SpecError` if the pipeline has none."""
        for s in self.stages:
            if s.name == name:
                return s
        raise SpecError(f"pipeline {self.name!r} has no stage {name!r}")

    def accuracy(self, variants: list[str] | tuple[str, ...]) -> float:
        """Pipeline accuracy A of one variant per stage, by the spec's accuracy method."""
        if len(variants) != len(self.stages):
            raise SpecError(f"expected {len(self.stages)} variants, got {len(variants)}")
        if self.objective.accuracy_method == "sum":
            return sum(s.rank_accuracy(v) for s, v in zip(self.stages, variants, strict=True))
        return math.prod(s.variant(v).accuracy for s, v in zip(self.stages, variants, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A plain-data view (what ``rlscale pipelines --json`` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "sla_s": self.sla_s,
            "drop_limit_s": self.drop_limit_s,
            "interval_s": self.interval_s,
            "batch_timeout_s": self.batch_timeout_s,
            "core_budget": self.core_budget,
            "objective": dataclasses.asdict(self.objective),
            "stages": [
                {
                    "name": s.name,
                    "task": s.task,
                    "metric": s.metric,
                    "batch_sizes": list(s.batch_sizes),
                    "cores": list(s.cores),
                    "min_replicas": s.min_replicas,
                    "max_replicas": s.max_replicas,
                    "max_pools": s.max_pools,
                    "queue_discipline": s.queue_discipline,
                    "variants": [dataclasses.asdict(v) for v in s.variants],
                }
                for s in self.stages
            ],
            "kubernetes": {
                "namespace": self.kubernetes.namespace,
                "container": self.kubernetes.container,
                "variant_env": self.kubernetes.variant_env,
                "batch_env": self.kubernetes.batch_env,
                "deployments": dict(self.kubernetes.deployments),
                "promql": dict(self.kubernetes.promql),
            },
            "damping": dataclasses.asdict(self.damping),
            "request_slo": (
                {"payload_kb": self.request_slo.payload_kb, "bandwidth": self.request_slo.bandwidth}
                if self.request_slo is not None
                else None
            ),
            "in_place_resize": self.in_place_resize,
            "resize_s": self.resize_s,
            "service_model": self.service_model,
            "vpa": (
                {
                    "updater": self.vpa.updater,
                    "variant": None if self.vpa.variant is None else list(self.vpa.variant),
                    "cores": None if self.vpa.cores is None else list(self.vpa.cores),
                }
                if self.vpa is not None
                else None
            ),
        }

    def to_document(self) -> dict[str, Any]:
        """The spec as a YAML document that `load_spec` reads back to an equal spec, from any folder.

        A stage's ``profile`` is written as an absolute path (a stage without one keeps its task's bundled
        profile); unset optional fields are left out.
        """
        doc = self.to_dict()
        for raw, stage in zip(doc["stages"], self.stages, strict=True):
            if stage.max_pools == 1:
                del raw["max_pools"]
            if stage.queue_discipline == "fifo":
                del raw["queue_discipline"]
            if stage.profile is not None:
                raw["profile"] = str(stage.profile_path.resolve())
            for v in raw["variants"]:
                if v["metric_value"] is None:
                    del v["metric_value"]
        kube = {k: v for k, v in doc["kubernetes"].items() if v not in (None, {})}
        doc["kubernetes"] = kube
        if not kube:
            del doc["kubernetes"]
        if not self.damping.enabled:
            del doc["damping"]
        if self.request_slo is None:
            del doc["request_slo"]
        else:
            path = self.request_slo.bandwidth
            if not Path(path).is_absolute() and (self.source.parent / path).exists():
                doc["request_slo"]["bandwidth"] = str((self.source.parent / path).resolve())
        if not self.in_place_resize:
            del doc["in_place_resize"]
        if self.resize_s == DEFAULT_RESIZE_S:
            del doc["resize_s"]
        if self.service_model == "auto":
            del doc["service_model"]
        if self.vpa is None:
            del doc["vpa"]
        else:
            doc["vpa"] = {k: v for k, v in doc["vpa"].items() if v is not None}
        if self.objective.sla_mode == "priced":
            del doc["objective"]["sla_mode"]
        return doc


# ------------------------------------------------------------------------------------------------- reading

_ADAPTER = TypeAdapter(PipelineSpec)
_NESTED: dict[str, type] = {
    "objective": ObjectiveSpec,
    "stages": StageSpec,
    "variants": VariantSpec,
    "kubernetes": KubeSpec,
    "damping": DampingSpec,
    "request_slo": RequestSloSpec,
    "vpa": VpaSpec,
}
_HIDDEN = {"source", "trace", *_STAGE_HIDDEN}


def _document_fields(cls: type) -> list[str]:
    """The fields a document may write for ``cls``, sorted."""
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in _HIDDEN)


def _resolve_profile(stage: dict[str, Any], spec_path: Path) -> Path | None:
    """The profile CSV a stage document names (relative to the spec's folder) or its task's bundled one.

    None when the stage's task is not a usable string (its own error says so).
    """
    raw = stage.get("profile")
    if raw is not None:
        if not isinstance(raw, str) or not raw.strip():
            raise _fail(f"must be a non-empty string, got {raw!r}", "profile")
        path = Path(raw.strip())
        return path if path.is_absolute() else spec_path.parent / path
    task = stage.get("task")
    if not isinstance(task, str) or not task.strip():
        return None
    task = task.strip()
    path = data_dir() / "profiles" / f"{task}.csv"
    if not is_safe_name(task) or not path.exists():  # a task is a file name in the bundled folder, never a path
        known = sorted(p.stem for p in (data_dir() / "profiles").glob("*.csv"))
        raise _fail(
            f"no bundled profile for task {task!r} (known: {', '.join(known)}); set 'profile' to a CSV path", "task"
        )
    return path


def _field_path(loc: Sequence[str | int]) -> str:
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
        if isinstance(part, str) and part in _NESTED:
            cls = _NESTED[part]
    return cls


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(error: Any) -> tuple[str, str]:
    """The field path and the problem, in words, of one pydantic error (see `parse_spec`)."""
    loc = list(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "spec":
        if ctx.get("at") is not None:
            loc.append(ctx["at"])
        return _field_path(loc), str(ctx["problem"])
    where = _field_path(loc)
    if kind == "missing":
        return where, "required field is missing"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return where, f"unknown field (allowed: {', '.join(_document_fields(_model_at(loc[:-1])))})"
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


def _invalid(path: Path, error: ValidationError) -> SpecError:
    """The first problem of a validation as one `SpecError` line; its ``field`` attribute is the field path."""
    where, problem = _describe(error.errors(include_url=False)[0])
    exc = SpecError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")
    exc.field = where  # type: ignore[attr-defined]
    return exc


def parse_spec(raw: Any, path: Path) -> PipelineSpec:
    """Validate already-parsed YAML data; ``path`` is used in messages and to resolve relative profiles.

    Raises:
        SpecError: one line, ``<path>: <field path>: <problem>`` (the first problem found).
    """
    try:
        return _ADAPTER.validate_python(raw, context={"path": path, "profiles": {}})
    except ValidationError as exc:
        raise _invalid(path, exc) from None


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec document: the fields, their types and ranges.

    The checks that need files or several fields (profiles, drop limit >= SLA, unique names, a core budget that
    holds the smallest configuration) are not expressible in it; `load_spec` makes them.
    """
    schema = _ADAPTER.json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _resolve_spec_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists() or "/" in str(name_or_path):
        return candidate
    bundled = data_dir() / "pipelines" / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    raise SpecError(
        f"unknown pipeline {str(name_or_path)!r}: not a bundled name ({', '.join(bundled_pipelines())}) nor a YAML file"
    )


def read_document(name_or_path: str | Path) -> tuple[Path, Any]:
    """The spec file a name or path means, and its YAML data (not validated yet).

    Raises:
        SpecError: unknown name, unreadable or oversized file, not YAML, empty, nested too deeply.
    """
    path = _resolve_spec_path(name_or_path)
    text = read_text_limited(path, MAX_SPEC_BYTES, SpecError, "spec")
    raw = load_yaml(text, str(path), SpecError)
    if raw is None:
        raise SpecError(f"{path}: spec is empty")
    return path, raw


# ------------------------------------------------------------------------------------------------ overrides


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
    import copy

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
        here = _field_path([*done, part])
        if isinstance(kind, type):
            allowed = _document_fields(kind)
            if part not in allowed:
                raise SpecError(f"--set {item}: {here}: unknown field (allowed: {', '.join(allowed)})")
            if last:
                node[part] = _as_number(value) if _is_numeric(kind, part) else value
                return
            child_kind: Any = (
                ("list", _NESTED[part])
                if part in ("stages", "variants")
                else "ints"
                if part in ("batch_sizes", "cores")
                else "mapping"
                if part in ("deployments", "promql")
                else _NESTED.get(part)
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
            here = _field_path([*done, int(part) if part.isdigit() else part])
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(
                    f"--set {item}: {here}: not an index of {_field_path(done)} (0 to {len(node) - 1})"
                    if node
                    else f"--set {item}: {here}: {_field_path(done)} is empty"
                )
            index = int(part)
            here = _field_path([*done, index])
            if last:
                node[index] = _as_number(value) if kind == "ints" else value
                return
            if kind == "ints":
                raise SpecError(f"--set {item}: {here}: is a value, it has no fields")
            if not isinstance(node[index], dict):
                raise SpecError(f"--set {item}: {here}: the spec's value is not a mapping")
            node, kind = node[index], kind[1]
            done.append(index)


def _override_paths(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(field path as messages write it, the override) of each override."""
    out = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        out.append((_field_path([int(p) if p.isdigit() else p for p in key.split(".")]), item))
    return out


def load_spec(name_or_path: str | Path, overrides: Sequence[str] = ()) -> PipelineSpec:
    """Load a bundled pipeline by name (``video``) or a spec YAML by path, validated.

    Args:
        name_or_path: a bundled pipeline's name or a spec file.
        overrides: ``FIELD=VALUE`` items (``--set``) applied to the document before validation; see
            `apply_overrides`. A relative profile still resolves from the spec file's folder.

    Raises:
        SpecError: one message naming the file, the field and the problem (and the ``--set`` involved, if any).
    """
    path, raw = read_document(name_or_path)
    if not overrides:
        return parse_spec(raw, path)
    try:
        return parse_spec(apply_overrides(raw, overrides), path)
    except SpecError as exc:
        field = getattr(exc, "field", None)
        if field is None:
            raise
        paths = _override_paths(overrides)
        hit = [item for p, item in paths if field == p or field.startswith((p + ".", p + "["))]
        shown = ", ".join(f"--set {i}" for i in (hit or [item for _, item in paths]))
        raise SpecError(f"{exc} (with {shown})") from None


def dump_spec(spec: PipelineSpec, note: str = "") -> str:
    """The spec as YAML text that `load_spec` reads back to an equal spec (see `PipelineSpec.to_document`).

    Args:
        spec: the spec.
        note: a comment for the first lines (where the file came from).
    """
    head = "".join(f"# {line}\n" for line in note.splitlines())
    return head + yaml.safe_dump(spec.to_document(), sort_keys=False, allow_unicode=True)
