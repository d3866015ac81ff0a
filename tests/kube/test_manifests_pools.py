"""Manifests of a pipeline with pooled stages: per-variant Deployments and Services, the HTTPRoute, the Role.

The built-in kinds are checked against the official client's models (pydantic, generated from the Kubernetes
OpenAPI schema): each must deserialize and serialize back unchanged, so a missing required field, a wrong type or
a misspelt key fails. The HTTPRoute is a CRD with no schema available offline (neither the venv nor kmock ships
the Gateway API's), so `HTTPROUTE_SCHEMA` restates the constraints of the Gateway API v1 HTTPRoute CRD that these
objects use (required fields, types, bounds) and the route is validated against it with jsonschema.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes
import pytest
import yaml

from rlscale.errors import RlscaleError
from rlscale.kube.manifests import DEFAULT_GATEWAY, render_manifests
from rlscale.kube.objects import WEIGHT_TOTAL, pool_object_name, pool_weights, rbac_rules, variant_label
from rlscale.spec import load_spec
from rlscale.types import StageConfig, VariantPool

SIDECAR_KINDS = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"]
VARIANTS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
HTTPROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": _NAME}},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "group": {"type": "string", "maxLength": 253},
                            "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                            "name": _NAME,
                            "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                            "sectionName": {"type": "string"},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "properties": {
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "group": {"type": "string", "maxLength": 253},
                                        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                                        "name": _NAME,
                                        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                    },
                                    # the CRD's CEL rule: a Service backend must name its port
                                    "if": {"properties": {"kind": {"const": "Service"}}},
                                    "then": {"required": ["port"]},
                                },
                            }
                        },
                    },
                },
            },
        },
    },
}
MODELS = {"Deployment": "V1Deployment", "Service": "V1Service", "Role": "V1Role", "RoleBinding": "V1RoleBinding"}


def render(spec, **kwargs) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render_manifests(spec, **kwargs)))


@pytest.fixture
def spec():
    return load_spec("infadapter")


@pytest.fixture
def docs(spec):
    return render(spec, namespace="ml", policy="infadapter")


def stage_docs(docs, kind):
    return [d for d in docs[len(SIDECAR_KINDS) :] if d["kind"] == kind]


def test_the_sidecar_objects_come_first_then_every_pool_s_deployment_and_service_then_the_route(docs):
    assert [d["kind"] for d in docs] == [*SIDECAR_KINDS, *["Deployment"] * 5, *["Service"] * 5, "HTTPRoute"]
    names = [f"infadapter-resnet-{v}" for v in VARIANTS]
    assert [d["metadata"]["name"] for d in stage_docs(docs, "Deployment")] == names
    assert [d["metadata"]["name"] for d in stage_docs(docs, "Service")] == names
    assert [d["metadata"]["name"] for d in stage_docs(docs, "HTTPRoute")] == ["infadapter-resnet"]
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}


def test_each_pool_deployment_is_fixed_to_its_variant_and_only_the_initial_pool_has_replicas(docs, spec):
    deps = stage_docs(docs, "Deployment")
    assert [d["spec"]["replicas"] for d in deps] == [spec.stages[0].min_replicas, 0, 0, 0, 0]
    for d, v in zip(deps, VARIANTS, strict=True):
        labels = {"rlscale.io/pipeline": "infadapter", "rlscale.io/stage": "resnet", "rlscale.io/variant": v}
        assert d["metadata"]["labels"] == labels
        assert d["spec"]["selector"] == {"matchLabels": labels}  # never another pool's pods
        assert d["spec"]["template"]["metadata"]["labels"] == labels
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["MODEL_VARIANT"] == v and env["MAX_BATCH_SIZE"] == "1"
        assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == "2"
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_each_service_selects_its_pool_s_pods_on_the_model_port(docs):
    for dep, svc in zip(stage_docs(docs, "Deployment"), stage_docs(docs, "Service"), strict=True):
        assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        (port,) = svc["spec"]["ports"]
        assert port["targetPort"] == c["ports"][0]["name"] and port["port"] == 8080


def test_the_route_sends_everything_to_the_initial_pool_with_one_backend_per_service(docs):
    (route,) = stage_docs(docs, "HTTPRoute")
    jsonschema.validate(route, HTTPROUTE_SCHEMA)
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": DEFAULT_GATEWAY}
    ]
    (rule,) = route["spec"]["rules"]
    services = {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in stage_docs(docs, "Service")}
    assert {r["name"]: r["port"] for r in rule["backendRefs"]} == services
    assert [r["weight"] for r in rule["backendRefs"]] == [WEIGHT_TOTAL, 0, 0, 0, 0]


def test_the_route_schema_catches_what_the_crd_refuses(docs):
    (route,) = stage_docs(docs, "HTTPRoute")
    for path, value in [(("port",), None), (("weight",), -1), (("weight",), "10"), (("name",), "")]:
        bad = yaml.safe_load(yaml.safe_dump(route))
        ref = bad["spec"]["rules"][0]["backendRefs"][0]
        if value is None:
            del ref[path[0]]
        else:
            ref[path[0]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, HTTPROUTE_SCHEMA)


@pytest.mark.parametrize("kind", list(MODELS))
def test_built_in_kinds_match_the_kubernetes_schema(docs, kind):
    client = kubernetes.client.ApiClient()
    found = [d for d in docs if d["kind"] == kind]
    assert found
    for doc in found:
        model = client._ApiClient__deserialize(doc, MODELS[kind])  # raises on a missing field or a wrong type
        assert client.sanitize_for_serialization(model) == doc  # and nothing was dropped: no unknown key


def test_the_schema_check_fails_on_a_broken_deployment(docs):
    dep = stage_docs(docs, "Deployment")[0]
    del dep["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError):
        kubernetes.client.ApiClient()._ApiClient__deserialize(dep, "V1Deployment")


def test_the_role_grants_exactly_the_pool_objects_and_the_route(docs, spec):
    (role,) = [d for d in docs if d["kind"] == "Role"]
    names = [d["metadata"]["name"] for d in stage_docs(docs, "Deployment")]
    assert role["rules"] == rbac_rules(spec)
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": names, "verbs": ["get", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": names, "verbs": ["patch"]},
        {
            "apiGroups": ["gateway.networking.k8s.io"],
            "resources": ["httproutes"],
            "resourceNames": ["infadapter-resnet"],
            "verbs": ["get", "patch"],
        },
    ]


def test_a_named_stage_names_its_pools_and_route_after_it(spec, tmp_path):
    raw = yaml.safe_load(spec.source.read_text())
    raw["kubernetes"] = {"deployments": {"resnet": "classifier"}}
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(raw))
    docs = render(load_spec(path), gateway="infra/web")
    assert stage_docs(docs, "Deployment")[0]["metadata"]["name"] == "classifier-resnet18"
    (route,) = stage_docs(docs, "HTTPRoute")
    assert route["metadata"]["name"] == "classifier"
    assert route["spec"]["parentRefs"][0] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "web",
        "namespace": "infra",
    }
    assert rbac_rules(load_spec(path))[2]["resourceNames"] == ["classifier"]


def test_pool_flags_are_refused_for_a_pipeline_without_pools():
    with pytest.raises(RlscaleError, match="gateway.*pooled stages.*video has none"):
        render_manifests(load_spec("video"), gateway="web")
    with pytest.raises(RlscaleError, match="model port"):
        render_manifests(load_spec("infadapter"), model_port=70000)
    with pytest.raises(RlscaleError, match="gateway name"):
        render_manifests(load_spec("infadapter"), gateway="Web_1")


@pytest.mark.subprocess
def test_the_cli_renders_the_pool_objects_with_the_model_image():
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "manifests", "--spec", "infadapter", "--policy", "infadapter"]
        + ["--model-image", "ghcr.io/me/resnet:1", "--model-port", "9000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    (sidecar,) = [d for d in docs[: len(SIDECAR_KINDS)] if d["kind"] == "Deployment"]
    args = sidecar["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--policy") + 1] == "infadapter"  # a live policy that decides mixes
    for dep in stage_docs(docs, "Deployment"):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["image"] == "ghcr.io/me/resnet:1" and c["ports"][0]["containerPort"] == 9000


@pytest.mark.parametrize(
    "shares",
    [(1.0,), (0.3, 0.7), (1 / 3, 1 / 3, 1 / 3), (0.0004, 0.9996), (0.1,) * 10, (0.2, 0.2, 0.2, 0.2, 0.2)],
)
def test_pool_weights_keep_the_sum_and_every_pool_in_force(shares):
    pools = [VariantPool(f"v{i}", 1, 1, 2, share=s) for i, s in enumerate(shares)]
    weights = pool_weights(StageConfig.of_pools(pools))
    assert sum(weights.values()) == WEIGHT_TOTAL
    assert all(w >= 1 for w in weights.values())
    assert all(abs(w - s * WEIGHT_TOTAL) < 1 + 1e-9 for w, s in zip(weights.values(), shares, strict=True))


def test_pool_weights_give_the_units_left_to_the_largest_remainders():
    pools = [VariantPool("a", 1, 1, 2, share=0.3335), VariantPool("b", 1, 1, 2, share=0.3335)]
    pools.append(VariantPool("c", 1, 1, 2, share=0.333))
    assert pool_weights(StageConfig.of_pools(pools)) == {"a": 334, "b": 333, "c": 333}


@pytest.mark.parametrize(
    "variant", ["resnet18", "Souvikcmsa-BERT_sentiment_analysis", "bert_base", "Bert-base", "x" * 63, "a.b"]
)
def test_pool_names_are_dns_labels_and_labels_are_label_values(variant):
    name = pool_object_name("infadapter-resnet", variant)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", variant_label(variant))


def test_variants_that_differ_only_in_case_or_punctuation_get_different_names():
    names = {pool_object_name("p-s", v) for v in ["bert_base", "bert-base", "Bert-base", "BERT.base"]}
    assert len(names) == 4
