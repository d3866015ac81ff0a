"""The whole pipeline spec (`PipelineSpec`): its stages, sections and the checks across them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from rlscale.errors import SpecError
from rlscale.paths import NAME_MAX, SAFE_NAME, is_safe_name, name_rule
from rlscale.spec.fields import (
    CONFIG,
    DEFAULT_RESIZE_S,
    MAX_CORE_BUDGET,
    MAX_SECONDS,
    Seconds,
    Unset,
    document,
    fail,
    first_repeat,
    non_empty,
    number,
    optional_in_document,
    reading,
)
from rlscale.spec.sections import DampingSpec, KubeSpec, ObjectiveSpec, RequestSloSpec, VpaSpec
from rlscale.spec.stage import StageSpec, VariantSpec


def _safe_pipeline_name(value: Any) -> Any:
    # the name becomes part of file paths (run folders, bundled agents, plots)
    if isinstance(value, str) and value.strip() and not is_safe_name(value.strip()):
        raise fail(f"{value.strip()!r} is not a usable pipeline name ({name_rule(NAME_MAX)})")
    return value


@dataclass(
    frozen=True,
    config=ConfigDict(
        **CONFIG,
        title="rlscale pipeline spec",
        json_schema_extra=optional_in_document("description"),
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
    sla_s: number(gt=0.0, le=MAX_SECONDS)
    drop_limit_s: number(gt=0.0, le=MAX_SECONDS)
    interval_s: number(ge=1.0, le=MAX_SECONDS)
    batch_timeout_s: Seconds
    core_budget: Annotated[int, Field(strict=True, ge=1, le=MAX_CORE_BUDGET)]
    objective: ObjectiveSpec
    stages: Annotated[tuple[StageSpec, ...], Field(min_length=1), non_empty("pipeline has no stages")]
    source: SkipJsonSchema[Path]
    kubernetes: Annotated[KubeSpec, Unset] = dataclasses.field(default_factory=KubeSpec, compare=False)
    damping: Annotated[DampingSpec, Unset] = dataclasses.field(default_factory=DampingSpec)
    request_slo: Annotated[RequestSloSpec | None, Unset] = None
    in_place_resize: Annotated[bool, Field(strict=True), Unset] = False
    resize_s: Annotated[Seconds, Unset] = DEFAULT_RESIZE_S
    vpa: Annotated[VpaSpec | None, Unset] = None
    service_model: Annotated[
        Literal["auto", "deterministic", "empirical"],
        Field(description="service times: auto, deterministic (the p99) or empirical (sampled run times)"),
        Unset,
    ] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        """A pipeline document: ``description`` defaults to the name, and the computed ``source`` is refused in it
        and set to the file read. Hand-written: a default computed from another field, a field from the read."""
        doc = document(cls, data, ("source",))
        context = reading(info)
        if doc is None or context is None:
            return data
        if doc.get("description") is None:
            doc["description"] = doc.get("name")
        doc["source"] = context["path"]
        return doc

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> PipelineSpec:
        if not is_safe_name(self.name):
            raise fail(f"{self.name!r} is not a usable pipeline name ({name_rule(NAME_MAX)})", "name")
        if self.drop_limit_s < self.sla_s:
            raise fail(f"must be >= sla_s ({self.sla_s:g}), got {self.drop_limit_s:g}", "drop_limit_s")
        names = [s.name for s in self.stages]
        i = first_repeat(names)
        if i is not None:
            raise fail(f"duplicate stage {names[i]!r}", f"stages[{i}].name")
        for stage in self.kubernetes.deployments:
            if stage not in names:
                allowed = ", ".join(sorted(names))
                raise fail(f"unknown field (allowed: {allowed})", f"kubernetes.deployments.{stage}")
        if self.vpa is not None:
            self._check_vpa(self.vpa)
        if reading(info) is not None:  # code may build deliberately infeasible specs (tests, benchmarks)
            smallest = sum(s.min_replicas * min(s.cores) for s in self.stages)
            if smallest > self.core_budget:
                raise fail(
                    f"{self.core_budget} cores cannot hold the smallest configuration "
                    f"(min_replicas x min cores = {smallest})",
                    "core_budget",
                )
        return self

    def _check_vpa(self, vpa: VpaSpec) -> None:
        n = len(self.stages)
        for key, values in (("variant", vpa.variant), ("cores", vpa.cores)):
            if values is not None and len(values) not in (1, n):
                raise fail(f"needs one value or one per stage ({n}), got {len(values)}", f"vpa.{key}")
        if vpa.variant is not None:
            for i, name in enumerate(vpa.variant):
                stages = self.stages if len(vpa.variant) == 1 else (self.stages[i],)
                if not any(name in s.variant_names for s in stages):
                    where = "no stage offers it" if len(vpa.variant) == 1 else f"stage {stages[0].name!r} lacks it"
                    raise fail(f"unknown variant {name!r} ({where})", f"vpa.variant[{i}]")
        if vpa.cores is not None:
            for i, cores in enumerate(vpa.cores):
                stages = self.stages if len(vpa.cores) == 1 else (self.stages[i],)
                for s in stages:
                    if cores not in s.cores:
                        raise fail(
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


# the model of each section a document path passes through (for the fields a document may write there)
NESTED: dict[str, type] = {
    "objective": ObjectiveSpec,
    "stages": StageSpec,
    "variants": VariantSpec,
    "kubernetes": KubeSpec,
    "damping": DampingSpec,
    "request_slo": RequestSloSpec,
    "vpa": VpaSpec,
}
