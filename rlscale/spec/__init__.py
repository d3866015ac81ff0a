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

This package is the spec's public face; its modules, by concern (none imports this package itself):

- `rlscale.spec.fields`: the ranges, field types and what a document may write beyond the strict types;
- `rlscale.spec.stage`, `rlscale.spec.sections`, `rlscale.spec.pipeline`: the models (the schema);
- `rlscale.spec.files`: the bundled folder and the files a document names (profiles, bandwidth), read apart;
- `rlscale.spec.reading`: names and YAML files to validated specs, the JSON Schema, YAML out;
- `rlscale.spec.overrides`: ``--set FIELD=VALUE``;
- `rlscale.spec.messages`: a validation error as one line.
"""

from __future__ import annotations

from rlscale.spec.fields import (
    ACCURACY_METHODS,
    BATCH_ENV,
    BATCH_TIMEOUT_ENV,
    DEFAULT_RESIZE_S,
    MAX_BATCH,
    MAX_CORE_BUDGET,
    MAX_CORES_PER_REPLICA,
    MAX_LIST_ITEMS,
    MAX_OVERRIDES,
    MAX_PAYLOAD_KB,
    MAX_PENALTY,
    MAX_POOLS,
    MAX_REPLICAS,
    MAX_ROLLOUTS,
    MAX_SECONDS,
    MAX_WEIGHT,
    QUEUE_DISCIPLINES,
    SERVICE_MODELS,
    SLA_MODES,
    VARIANT_ENV,
    VPA_UPDATERS,
    Text,
    is_k8s_name,
)
from rlscale.spec.files import bundled_pipelines, data_dir
from rlscale.spec.overrides import apply_overrides
from rlscale.spec.pipeline import PipelineSpec
from rlscale.spec.reading import dump_spec, load_spec, parse_spec, read_document, spec_json_schema
from rlscale.spec.sections import DampingSpec, EnvName, KubeSpec, ObjectiveSpec, RequestSloSpec, VpaSpec
from rlscale.spec.stage import StageSpec, VariantSpec

__all__ = [
    "ACCURACY_METHODS",
    "BATCH_ENV",
    "BATCH_TIMEOUT_ENV",
    "DEFAULT_RESIZE_S",
    "MAX_BATCH",
    "MAX_CORES_PER_REPLICA",
    "MAX_CORE_BUDGET",
    "MAX_LIST_ITEMS",
    "MAX_OVERRIDES",
    "MAX_PAYLOAD_KB",
    "MAX_PENALTY",
    "MAX_POOLS",
    "MAX_REPLICAS",
    "MAX_ROLLOUTS",
    "MAX_SECONDS",
    "MAX_WEIGHT",
    "QUEUE_DISCIPLINES",
    "SERVICE_MODELS",
    "SLA_MODES",
    "VARIANT_ENV",
    "VPA_UPDATERS",
    "DampingSpec",
    "EnvName",
    "KubeSpec",
    "ObjectiveSpec",
    "PipelineSpec",
    "RequestSloSpec",
    "StageSpec",
    "Text",
    "VariantSpec",
    "VpaSpec",
    "apply_overrides",
    "bundled_pipelines",
    "data_dir",
    "dump_spec",
    "is_k8s_name",
    "load_spec",
    "parse_spec",
    "read_document",
    "spec_json_schema",
]
