"""A pipeline stage and its model variants (`StageSpec`, `VariantSpec`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from rlscale.errors import SpecError
from rlscale.profiles import LatencyModel
from rlscale.spec.fields import (
    CONFIG,
    MAX_BATCH,
    MAX_CORES_PER_REPLICA,
    MAX_POOLS,
    MAX_REPLICAS,
    Seconds,
    Text,
    Unset,
    document,
    fail,
    first_repeat,
    int_list,
    is_k8s_name,
    non_empty,
    number,
    optional_in_document,
    reading,
)
from rlscale.spec.files import SpecFiles, resolve_profile


@dataclass(
    frozen=True,
    config=ConfigDict(
        **CONFIG, json_schema_extra=optional_in_document("metric_value", defaults={"metric_value": None})
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
    accuracy: number(ge=0.0, le=1.0)
    metric_value: Annotated[float | None, Field(strict=True)]
    startup_s: Seconds

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        """A document may leave ``metric_value`` out. Hand-written: code passes it positionally (``startup_s``
        follows it), so it can have no field default."""
        doc = document(cls, data)
        if doc is None:
            return data
        doc.setdefault("metric_value", None)
        return doc


_STAGE_HIDDEN = ("profile_path", "latency")


@dataclass(
    frozen=True,
    config=ConfigDict(
        **CONFIG,
        json_schema_extra=optional_in_document(
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
    batch_sizes: int_list(MAX_BATCH)
    cores: int_list(MAX_CORES_PER_REPLICA)
    min_replicas: Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)]
    max_replicas: Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)]
    variants: Annotated[tuple[VariantSpec, ...], Field(min_length=1), non_empty("stage has no variants")]
    profile_path: SkipJsonSchema[Path]
    latency: SkipJsonSchema[LatencyModel] = dataclasses.field(repr=False, compare=False)
    profile: Annotated[Text | None, Field(description="latency profile CSV (relative to the spec's folder)")] = None
    max_pools: Annotated[
        int, Field(strict=True, ge=1, le=MAX_POOLS, description="most variant pools the stage runs at once")
    ] = 1
    queue_discipline: Annotated[
        Literal["fifo", "edf"],
        Field(description="queue order: fifo (arrival) or edf (earliest deadline first)"),
        Unset,
    ] = "fifo"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        """A stage document: ``metric`` and ``min_replicas`` default (hand-written: code passes them positionally,
        so they can have no field default); the computed ``profile_path`` and ``latency`` are refused in it and
        filled from the profile the document resolves, as the reading step read it (`rlscale.spec.files`)."""
        doc = document(cls, data, _STAGE_HIDDEN)
        context = reading(info)
        if doc is None or context is None:
            return data
        doc.setdefault("metric", "accuracy")
        doc.setdefault("min_replicas", 1)
        path = resolve_profile(doc, context["path"])
        if path is not None:
            files: SpecFiles = context["files"]
            doc["profile_path"], doc["latency"] = path, files.profile(path)
        return doc

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> StageSpec:
        if not is_k8s_name(self.name):
            # it names the stage's Kubernetes objects (<pipeline>-<stage>, a pooled stage's Deployments, Services
            # and HTTPRoute), is the rlscale.io/stage label and the stage label in PromQL: one rule for all
            raise fail(
                f"{self.name!r} is not a usable stage name (it names Kubernetes objects and labels): lowercase "
                "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
                "name",
            )
        if self.max_replicas < self.min_replicas:
            raise fail(f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}", "max_replicas")
        j = first_repeat([v.name for v in self.variants])
        if j is not None:
            raise fail(f"duplicate variant {self.variants[j].name!r} in stage {self.name!r}", f"variants[{j}].name")
        if self.max_pools > len(self.variants):  # pools are keyed by variant
            raise fail(
                f"must be <= the stage's number of variants ({len(self.variants)}), got {self.max_pools}", "max_pools"
            )
        if reading(info) is None:
            return self
        # read from data: the profile must cover every variant and batch size (code may extrapolate on purpose)
        latency, where = self.latency, self.profile_path.name
        for j, v in enumerate(self.variants):
            if v.name not in latency.variants:
                raise fail(
                    f"unknown variant {v.name!r}: no rows in profile {where} (has: {', '.join(latency.variants)})",
                    f"variants[{j}].name",
                )
            for b in self.batch_sizes:
                if not latency.has_batch(v.name, b):
                    raise fail(f"batch size {b} has no profile point for variant {v.name!r} in {where}", "batch_sizes")
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
