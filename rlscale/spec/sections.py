"""The spec's sections beside its stages: the objective, the damping, Kubernetes, per-request SLOs and the VPA."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from rlscale.bandwidth import BandwidthTrace, load_bandwidth
from rlscale.errors import TraceError
from rlscale.promql import DEFAULT_TEMPLATES, check_template
from rlscale.spec.fields import (
    BATCH_ENV,
    BATCH_TIMEOUT_ENV,
    CONFIG,
    ENV_NAME,
    MAX_CORES_PER_REPLICA,
    MAX_LIST_ITEMS,
    MAX_PAYLOAD_KB,
    MAX_PENALTY,
    MAX_ROLLOUTS,
    VARIANT_ENV,
    OneOrMany,
    Seconds,
    Text,
    Unset,
    Weight,
    document,
    drop_unset,
    fail,
    is_k8s_name,
    number,
    optional_in_document,
    reading,
)
from rlscale.spec.files import SpecFiles


@dataclass(
    frozen=True,
    config=ConfigDict(
        **CONFIG,
        json_schema_extra=optional_in_document(
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
    sla_penalty: number(ge=0.0, le=MAX_PENALTY)
    rho_max: number(gt=0.0, le=1.0)
    sla_mode: Annotated[Literal["priced", "hard"], Unset] = "priced"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        """A document may leave ``sla_penalty`` (default ``100*beta``) and ``rho_max`` (default 1) out or unset.
        Hand-written: the first default is computed from another field, and code passes both positionally."""
        doc = document(cls, data)
        if doc is None:
            return data
        beta = doc.get("beta")
        if doc.get("sla_penalty") is None and isinstance(beta, int | float) and not isinstance(beta, bool):
            doc["sla_penalty"] = 100.0 * beta
        if doc.get("rho_max") is None:
            doc["rho_max"] = 1.0
        return doc


@dataclass(frozen=True, config=CONFIG)
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
    def _read(cls, data: Any) -> Any:
        """In a document, a key written with no value is left out, whatever its name (``colour:`` included: every
        field of the section is optional). Hand-written: `Unset` acts on known fields only, and
        ``extra="forbid"`` refuses an unknown key whatever its value."""
        return drop_unset(data)

    @model_validator(mode="after")
    def _check(self) -> DampingSpec:
        if self.max_rollouts > 0 and self.rollout_window_s <= 0:
            raise fail(f"must be > 0 when max_rollouts is set ({self.max_rollouts})", "rollout_window_s")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return bool(self.min_dwell_s or self.max_rollouts or self.scale_down_stabilization_s)


def _k8s_label(value: Any) -> Any:
    # before the string's own checks, so that an empty or long name gets these words too
    if isinstance(value, str) and not is_k8s_name(value.strip()):
        raise fail(f"must be a Kubernetes name (lowercase, digits, '-'), got {value!r}")
    return value


def _env_name(value: Any) -> Any:
    if isinstance(value, str) and not ENV_NAME.match(value.strip()):
        raise fail(f"must be an environment variable name, got {value!r}")
    return value


def _templates(value: Any) -> Any:
    # names and templates checked before the types, so that each problem gets its own words
    if isinstance(value, dict):
        for name, template in value.items():
            if name not in DEFAULT_TEMPLATES:
                raise fail(f"unknown field (allowed: {', '.join(sorted(DEFAULT_TEMPLATES))})", name)
            if isinstance(template, str):
                problem = check_template(name, template.strip())
                if problem:
                    raise fail(problem, name)
    return value


K8sLabel = Annotated[
    Annotated[str, Field(strict=True, min_length=1, max_length=63)] | None, BeforeValidator(_k8s_label)
]
"""A Kubernetes name of at most 63 characters (a namespace, a container), or None."""
EnvName = Annotated[Text, Field(pattern=ENV_NAME.pattern), BeforeValidator(_env_name), Unset]
"""An environment variable's name."""


@dataclass(frozen=True, config=CONFIG)
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

    namespace: K8sLabel = None
    container: K8sLabel = None
    variant_env: EnvName = VARIANT_ENV
    batch_env: EnvName = BATCH_ENV
    batch_timeout_env: EnvName = BATCH_TIMEOUT_ENV
    deployments: Annotated[dict[Text, Annotated[Text, Field(max_length=253)]], Unset] = dataclasses.field(
        default_factory=dict
    )
    promql: Annotated[
        dict[Text, Text],
        Field(json_schema_extra={"propertyNames": {"enum": list(DEFAULT_TEMPLATES)}}),
        BeforeValidator(_templates),
        Unset,
    ] = dataclasses.field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> KubeSpec:
        if self.variant_env == self.batch_env:
            raise fail("variant and batch size need two different env vars", "batch_env")
        if self.batch_timeout_env in (self.variant_env, self.batch_env):
            raise fail("the batch timeout needs an env var of its own (not the variant's or batch size's)",
                       "batch_timeout_env")  # fmt: skip
        owner: dict[str, str] = {}
        for stage, name in self.deployments.items():
            if not is_k8s_name(name, max_len=253):
                raise fail(f"must be a Kubernetes name, got {name!r}", f"deployments.{stage}")
            if name in owner:
                raise fail(f"Deployment {name!r} is already another stage's", f"deployments.{stage}")
            owner[name] = stage
        return self


@dataclass(frozen=True, config=CONFIG)
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

    payload_kb: number(gt=0.0, le=MAX_PAYLOAD_KB)
    bandwidth: Text
    trace: SkipJsonSchema[BandwidthTrace | None] = dataclasses.field(default=None, repr=False, compare=False)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        """A document may not write the computed ``trace``; it is the bandwidth trace the reading step read for
        ``bandwidth`` (`rlscale.spec.files`). Hand-written: a field computed from another while reading."""
        doc = document(cls, data, ("trace",))
        context = reading(info)
        if doc is None or context is None:
            return data
        raw = doc.get("bandwidth")
        if isinstance(raw, str) and raw.strip():
            files: SpecFiles = context["files"]
            doc["trace"] = files.bandwidth_trace(raw.strip())
        return doc

    @model_validator(mode="after")
    def _check(self) -> RequestSloSpec:
        if self.trace is None:  # built in code: a bundled name, or a path from the working folder
            try:
                object.__setattr__(self, "trace", load_bandwidth(self.bandwidth))
            except TraceError as exc:
                raise fail(str(exc), "bandwidth") from None
        return self


@dataclass(frozen=True, config=CONFIG)
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
    variant: Annotated[
        Annotated[tuple[Text, ...], Field(min_length=1, max_length=MAX_LIST_ITEMS)] | None, OneOrMany
    ] = None
    cores: Annotated[
        Annotated[
            tuple[Annotated[int, Field(strict=True, ge=1, le=MAX_CORES_PER_REPLICA)], ...],
            Field(min_length=1, max_length=MAX_LIST_ITEMS),
        ]
        | None,
        OneOrMany,
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        """In a document, a key written with no value is left out, whatever its name (as in `DampingSpec`)."""
        return drop_unset(data)
