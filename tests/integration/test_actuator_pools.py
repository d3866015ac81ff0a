"""The actuator on a pooled stage (one Deployment per variant, an HTTPRoute's weights) against the kmock emulator."""

from __future__ import annotations

import kubernetes
import pytest

from rlscale.kube.actuator import DeploymentActuator, KubeApiError
from rlscale.kube.objects import ANNOTATION_TARGET, GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES, WEIGHT_TOTAL
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig, VariantPool
from tests.integration.closed_loop import create_stage_objects

NS = "pipeline"
ONE = PipelineConfig((StageConfig.one("resnet18", 1, 1, 4),))
TWO = PipelineConfig(
    (StageConfig.of_pools([VariantPool("resnet18", 1, 1, 4, share=0.3), VariantPool("resnet50", 1, 1, 8, share=0.7)]),)
)


@pytest.fixture
def spec():
    return load_spec("infadapter")


@pytest.fixture
def deployed(kube_api, spec):
    api = kube_api.apps_api()
    create_stage_objects(api, spec, ONE, NS)
    return api


def route(api) -> dict:
    custom = kubernetes.client.CustomObjectsApi(api.api_client)
    return custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, HTTPROUTES, "infadapter-resnet")


def weights(api) -> dict[str, int]:
    return {r["name"].rpartition("-")[2]: r["weight"] for r in route(api)["spec"]["rules"][0]["backendRefs"]}


def replicas(api) -> dict[str, int]:
    out = {}
    for d in api.list_namespaced_deployment(NS).items:
        out[d.metadata.labels["rlscale.io/variant"]] = d.spec.replicas
    return out


def set_ready(api, variant: str, n: int) -> None:
    body = {"status": {"readyReplicas": n, "replicas": n, "updatedReplicas": n}}
    api.patch_namespaced_deployment_status(f"infadapter-resnet-{variant}", NS, body)


def changes(kube_api, since: int = 0) -> list[tuple[str, str]]:
    """(what, name) of every PATCH the actuator sent: ``scale``, ``deployment`` or ``route``."""
    out = []
    for r in kube_api.emulator.seen[since:]:
        if r["method"] != "PATCH" or r["subresource"] == "status":
            continue
        what = "route" if HTTPROUTES in r["path"] else r["subresource"] or "deployment"
        out.append((what, r["path"].split("/")[-2 if r["subresource"] else -1]))
    return out


def test_every_variant_has_a_deployment_and_only_the_initial_pool_is_in_force(deployed, spec):
    assert replicas(deployed) == {"resnet18": 1, "resnet34": 0, "resnet50": 0, "resnet101": 0, "resnet152": 0}
    assert weights(deployed) == {"resnet18": WEIGHT_TOTAL, "resnet34": 0, "resnet50": 0, "resnet101": 0, "resnet152": 0}
    act = DeploymentActuator(spec, deployed, NS)
    config, ready = act.read()
    assert config == ONE
    assert ready == [None]
    assert act.off_spec == {}


def test_a_new_pool_is_made_then_shifted_to_then_the_old_one_broken(kube_api, deployed, spec):
    set_ready(deployed, "resnet18", 1)
    act = DeploymentActuator(spec, deployed, NS)
    act.read()
    # make: resnet50 gets its cores and a replica; the weights wait for it to be ready
    out = act.apply(TWO).stages[0]
    assert out.action == "rolled", out
    assert "weights kept until resnet50 ready" in out.message
    # the pool is made, and the route records the switch's target (the configuration in force, as in the simulator)
    assert changes(kube_api) == [("deployment", "infadapter-resnet-resnet50"), ("route", "infadapter-resnet")]
    assert replicas(deployed)["resnet50"] == 1 and weights(deployed)["resnet50"] == 0
    assert ANNOTATION_TARGET in route(deployed)["metadata"]["annotations"]
    config, _ = act.read()
    assert config == TWO  # the switch's target is in force while the weights wait
    assert "switching to" in act.off_spec["resnet"] and "resnet50 is ready" in act.off_spec["resnet"]

    # still not ready: nothing more happens
    seen = len(kube_api.emulator.seen)
    assert act.apply(TWO).stages[0].action == "unchanged"
    assert changes(kube_api, seen) == []

    # ready: shift the weights (sum kept), resnet18 keeps its one replica
    set_ready(deployed, "resnet50", 1)
    seen = len(kube_api.emulator.seen)
    act.read()
    out = act.apply(TWO).stages[0]
    assert out.action == "scaled", out
    assert changes(kube_api, seen) == [("route", "infadapter-resnet")]
    assert weights(deployed) == {"resnet18": 300, "resnet34": 0, "resnet50": 700, "resnet101": 0, "resnet152": 0}
    assert ANNOTATION_TARGET not in (route(deployed)["metadata"].get("annotations") or {})  # the switch is done
    config, ready = act.read()
    assert config == TWO and ready == [2] and act.off_spec == {}

    # and back to one pool: shift first (resnet18 is ready), then scale resnet50 to 0, in one apply
    seen = len(kube_api.emulator.seen)
    out = act.apply(ONE).stages[0]
    assert changes(kube_api, seen) == [("route", "infadapter-resnet"), ("scale", "infadapter-resnet-resnet50")]
    assert weights(deployed)["resnet18"] == WEIGHT_TOTAL and replicas(deployed)["resnet50"] == 0
    assert act.read()[0] == ONE


def test_a_cores_change_of_a_pool_in_force_is_a_rollout_of_its_deployment_only(kube_api, deployed, spec):
    act = DeploymentActuator(spec, deployed, NS)
    target = PipelineConfig((StageConfig.one("resnet18", 1, 1, 6),))
    out = act.apply(target).stages[0]
    assert out.action == "rolled"
    assert changes(kube_api) == [("deployment", "infadapter-resnet-resnet18")]
    assert act.read()[0] == target


def test_a_pool_left_warm_is_scaled_away_when_the_policy_keeps_the_config(kube_api, deployed, spec):
    deployed.patch_namespaced_deployment_scale("infadapter-resnet-resnet34", NS, {"spec": {"replicas": 1}})
    act = DeploymentActuator(spec, deployed, NS)
    config, _ = act.read()
    assert config == ONE and "resnet34" in act.off_spec["resnet"]
    set_ready(deployed, "resnet18", 1)
    seen = len(kube_api.emulator.seen)
    act.apply(config)
    assert changes(kube_api, seen) == [("scale", "infadapter-resnet-resnet34")]
    act.read()
    assert act.off_spec == {}


def test_dry_run_stores_nothing(kube_api, deployed, spec):
    act = DeploymentActuator(spec, deployed, NS, dry_run=True)
    out = act.apply(TWO)
    assert out.dry_run and out.stages[0].action == "rolled"
    assert replicas(deployed)["resnet50"] == 0
    assert all(r["params"].get("dryRun") == "All" for r in kube_api.emulator.seen if r["method"] == "PATCH")


def test_no_pool_in_force_reads_as_the_weighted_pool_at_its_fewest_replicas_for_repair(kube_api, deployed, spec):
    deployed.patch_namespaced_deployment_scale("infadapter-resnet-resnet18", NS, {"spec": {"replicas": 0}})
    act = DeploymentActuator(spec, deployed, NS)
    config, _ = act.read()  # the route sends every request to a pool with no replicas: never held as it is
    assert config == ONE and "no pool is in force" in act.off_spec["resnet"]
    act.apply(config)
    assert replicas(deployed)["resnet18"] == 1 and weights(deployed)["resnet18"] == WEIGHT_TOTAL


def test_a_missing_route_is_not_found_naming_it(kube_api, spec):
    api = kube_api.apps_api()
    with pytest.raises(KubeApiError, match="HTTPRoute pipeline/infadapter-resnet") as info:
        DeploymentActuator(spec, api, NS).read()
    assert info.value.kind == "not_found"
