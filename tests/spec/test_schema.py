"""The spec as pydantic models: code-built specs, error mapping, the JSON Schema (``rlscale pipelines --schema``)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlscale.errors import SpecError
from rlscale.spec import (
    DEFAULT_RESIZE_S,
    ObjectiveSpec,
    PipelineSpec,
    VariantSpec,
    bundled_pipelines,
    data_dir,
    dump_spec,
    load_spec,
    spec_json_schema,
)


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "") -> list[str]:
    """A small JSON Schema check (the keywords the spec's schema uses); the problems found."""
    if "$ref" in schema:
        return _check(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, where)
    if "anyOf" in schema:
        if all(_check(value, s, root, where) for s in schema["anyOf"]):
            return [f"{where}: matches no alternative"]
        return []
    kind = schema.get("type")
    types = {
            "object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "null": type(None),
            "boolean": bool,
        }  # fmt: skip
    if kind and (not isinstance(value, types[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{where}: not {kind}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: not in enum")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: below minimum")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: above maximum")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        problems.append(f"{where}: not above exclusiveMinimum")
    if kind == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            problems.append(f"{where}: length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: pattern")
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 30):
            problems.append(f"{where}: item count")
        if schema.get("uniqueItems") and len(set(map(json.dumps, value))) != len(value):
            problems.append(f"{where}: duplicates")
        for i, item in enumerate(value):
            problems += _check(item, schema.get("items", {}), root, f"{where}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        problems += [f"{where}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                problems += _check(item, props[key], root, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _check(item, schema["additionalProperties"], root, f"{where}.{key}")
        names = schema.get("propertyNames", {}).get("enum")
        if names is not None:
            problems += [f"{where}.{k}: name not allowed" for k in value if k not in names]
    return problems


@pytest.mark.subprocess
def test_schema_command_prints_exactly_one_json_document():
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "pipelines", "--schema"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)  # the whole of stdout is the document
    assert schema == json.loads(json.dumps(spec_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False


def test_schema_describes_the_document_not_the_loaded_model():
    schema = spec_json_schema()
    top, defs = schema["properties"], schema["$defs"]
    assert "source" not in top and set(schema["required"]) == {
        "name",
        "sla_s",
        "drop_limit_s",
        "interval_s",
        "batch_timeout_s",
        "core_budget",
        "objective",
        "stages",
    }
    assert top["sla_s"]["exclusiveMinimum"] == 0 and top["sla_s"]["maximum"] == 3600
    assert top["interval_s"]["minimum"] == 1
    assert top["core_budget"] == {"maximum": 1_000_000, "minimum": 1, "title": "Core Budget", "type": "integer"}
    assert top["stages"]["minItems"] == 1
    stage = defs["StageSpec"]
    assert "latency" not in stage["properties"] and "profile_path" not in stage["properties"]
    assert "profile" in stage["properties"] and "profile" not in stage["required"]
    assert "min_replicas" not in stage["required"] and stage["properties"]["min_replicas"]["default"] == 1
    cores = stage["properties"]["cores"]
    assert cores["items"]["maximum"] == 1024 and cores["maxItems"] == 64 and cores["uniqueItems"] is True
    assert defs["VariantSpec"]["properties"]["accuracy"]["maximum"] == 1
    assert defs["ObjectiveSpec"]["properties"]["accuracy_method"]["enum"] == ["sum", "product"]
    assert set(defs["ObjectiveSpec"]["required"]) == {"alpha", "beta", "gamma", "accuracy_method"}
    assert "arrival_rate" in defs["KubeSpec"]["properties"]["promql"]["propertyNames"]["enum"]
    assert top["in_place_resize"] == {"default": False, "title": "In Place Resize", "type": "boolean"}
    assert top["resize_s"]["default"] == DEFAULT_RESIZE_S and top["resize_s"]["minimum"] == 0
    assert all(d["additionalProperties"] is False for d in defs.values())


@pytest.mark.parametrize("name", bundled_pipelines())
def test_bundled_specs_validate_against_the_schema(name):
    schema = spec_json_schema()
    raw = yaml.safe_load((data_dir() / "pipelines" / f"{name}.yaml").read_text())
    assert _check(raw, schema, schema) == []
    # and the schema does reject what the models reject
    assert _check({**raw, "colour": "blue"}, schema, schema) == [".colour: not allowed"]
    bad = json.loads(json.dumps(raw))
    bad["stages"][0]["cores"] = [1, 1]
    assert _check(bad, schema, schema) == [".stages[0].cores: duplicates"]


def test_code_built_specs_keep_the_dataclass_api():
    video = load_spec("video")
    assert VariantSpec("v", 0.5, None, 5.0).startup_s == 5.0
    assert ObjectiveSpec(1.0, 2.0, 0.0, "sum", 1.0, 1.0).beta == 2.0
    wider = dataclasses.replace(video, core_budget=video.core_budget + 1)
    assert wider.core_budget == video.core_budget + 1 and wider.stages == video.stages
    assert wider.stages[0].latency is video.stages[0].latency
    with pytest.raises(dataclasses.FrozenInstanceError):
        video.sla_s = 1.0  # type: ignore[misc]
    # ranges hold for code too (the errors are pydantic's; the file-level checks need data)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        VariantSpec("v", 1.5, None, 5.0)
    with pytest.raises(ValueError, match="must be >= min_replicas"):
        dataclasses.replace(video.stages[0], min_replicas=5, max_replicas=2)
    with pytest.raises(ValueError, match="must be >= sla_s"):
        dataclasses.replace(video, drop_limit_s=video.sla_s / 2)
    with pytest.raises(ValueError, match="name"):
        dataclasses.replace(video, name="../evil")


def test_a_document_cannot_set_computed_fields(write_spec):
    for mutate, field in (
        (lambda d: d.update(source="/etc/passwd"), "source"),
        (lambda d: d["stages"][0].update(latency=1), "stages[0].latency"),
        (lambda d: d["stages"][0].update(profile_path="x.csv"), "stages[0].profile_path"),
    ):
        path = write_spec(mutate)
        with pytest.raises(SpecError, match=re.escape(f"{path}: {field}: unknown field (allowed: ")):
            load_spec(path)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(sla_s=True), "sla_s: must be a number, got True"),
        (lambda d: d.update(sla_s="1.5"), "sla_s: must be a number, got '1.5'"),
        (lambda d: d.update(sla_s=float("nan")), "sla_s: must be a number, got nan"),
        (lambda d: d.update(core_budget=True), "core_budget: must be an integer, got True"),
        (lambda d: d.update(stages=[{"name": "a"}, *d["stages"]]), "stages[0].task: required field is missing"),
        (lambda d: d["stages"][0]["variants"][0].update(name=7), "stages[0].variants[0].name: must be a non-empty"),
        (lambda d: d["stages"][0]["variants"][0].update(colour=1), "stages[0].variants[0].colour: unknown field"),
        (lambda d: d["objective"].update(accuracy_method=3), "objective.accuracy_method: must be one of sum, product"),
        (lambda d: d.update(kubernetes=[1]), "kubernetes: must be a mapping, got list"),
        (lambda d: d.update(kubernetes={"batch_env": 3}), "kubernetes.batch_env: must be a non-empty string"),
        (lambda d: d["stages"][0].update(profile=""), "stages[0].profile: must be a non-empty string"),
    ],
)
def test_pydantic_errors_map_to_one_line_with_the_field_path(write_spec, mutate, message):
    path = write_spec(mutate)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", bundled_pipelines())
def test_dumped_spec_reads_back_equal(name, tmp_path: Path):
    spec = load_spec(name)
    path = tmp_path / "elsewhere" / "copy.yaml"
    path.parent.mkdir()
    path.write_text(dump_spec(spec, "a copy\nfor the test"))
    again = load_spec(path)
    assert again == dataclasses.replace(spec, source=path) and again.kubernetes == spec.kubernetes
    assert isinstance(again, PipelineSpec)
