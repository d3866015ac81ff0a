"""A pooled stage's switch under faults, against the kmock emulator (issue 26, items 2-4): a policy that holds
completes the switch it started, the route is read back before anything is broken, traffic never stays on a pool
without replicas, and a failed step never leaves the core budget exceeded silently."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale import control
from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.objects import HTTPROUTES, WEIGHT_TOTAL
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig
from tests.integration.closed_loop import create_stage_objects
from tests.integration.test_actuator_pools import NS, ONE, TWO, replicas, set_ready, weights

R50 = PipelineConfig((StageConfig.one("resnet50", 1, 1, 8),))


class ActuatorCluster:
    """A `Cluster` whose configuration is the actuator's (the emulator's objects), with a steady load: the
    Kubernetes side of the control step without Prometheus."""

    def __init__(self, spec, actuator: DeploymentActuator) -> None:
        self.spec, self.actuator, self.t = spec, actuator, 0.0

    @property
    def off_spec(self) -> dict[str, str]:
        return dict(self.actuator.off_spec)

    def observe(self) -> PipelineState:
        config, _ = self.actuator.read()
        self.t += self.spec.interval_s
        return PipelineState(self.t, self.spec.interval_s, np.full(60, 5.0), config, None)

    def apply(self, config: PipelineConfig):
        return self.actuator.apply(config)


class SwitchThenHold:
    """Decides ``target`` once, then keeps whatever is in force (InfAdapter's and MS+'s stabilisation step)."""

    name = "switch-then-hold"

    def __init__(self, target: PipelineConfig) -> None:
        self.target, self.decided = target, False

    def decide(self, state: PipelineState) -> PipelineConfig:
        if not self.decided:
            self.decided = True
            return self.target
        return state.config


def ready_all(api) -> None:
    """The kubelet's part: every pool's Deployment reports its replicas ready."""
    for v, n in replicas(api).items():
        set_ready(api, v, n)


@pytest.fixture
def deployed(kube_api):
    spec = load_spec("infadapter")
    api = kube_api.apps_api()
    create_stage_objects(api, spec, ONE, NS)
    set_ready(api, "resnet18", 1)
    return spec, api


def is_route_patch(request) -> bool:
    return request.method.name == "PATCH" and HTTPROUTES in str(request.url)


def test_a_policy_that_holds_completes_the_switch_it_decided(deployed):
    spec, api = deployed
    cluster = ActuatorCluster(spec, DeploymentActuator(spec, api, NS))
    policy = SwitchThenHold(TWO)
    first = control.step(cluster, policy)  # make: resnet50 gets a replica, the weights wait for it
    assert first.changed and first.config == TWO
    assert replicas(api)["resnet50"] == 1 and weights(api)["resnet50"] == 0
    ready_all(api)
    second = control.step(cluster, policy)  # the policy holds: what it holds is the switch's target
    assert second.state.config == TWO and not second.changed
    assert second.repaired == ("resnet",) and second.applied.stages[0].action == "scaled"
    assert weights(api) == {"resnet18": 300, "resnet34": 0, "resnet50": 700, "resnet101": 0, "resnet152": 0}
    assert replicas(api)["resnet50"] == 1 and replicas(api)["resnet18"] == 1
    third = control.step(cluster, policy)  # done: nothing is off-spec, nothing is applied
    assert third.state.config == TWO and third.applied is None and cluster.off_spec == {}


def test_a_route_change_the_server_does_not_keep_breaks_nothing(kube_api, deployed, caplog):
    spec, api = deployed
    act = DeploymentActuator(spec, api, NS)
    act.read()
    act.apply(R50)  # make resnet50
    ready_all(api)
    kube_api.emulator.inject(200, count=None, match=is_route_patch)  # 200, and the route stays as it was
    act.read()
    out = act.apply(R50).stages[0]
    assert out.action == "failed" and out.kind == "not_kept", out
    assert "resnet50=1000" in out.message and "now says resnet18=1000" in out.message
    # the pool that still carries every request keeps its replica: traffic never goes to 0 replicas
    assert weights(api)["resnet18"] == WEIGHT_TOTAL and replicas(api)["resnet18"] == 1


def test_traffic_to_a_pool_without_replicas_moves_to_the_pool_that_has_them(deployed):
    spec, api = deployed
    act = DeploymentActuator(spec, api, NS)
    api.patch_namespaced_deployment_scale("infadapter-resnet-resnet50", NS, {"spec": {"replicas": 1}})
    ready_all(api)
    # the pool in force scaled to 0 (by hand, or by an earlier sidecar that trusted a route that was reverted)
    api.patch_namespaced_deployment_scale("infadapter-resnet-resnet18", NS, {"spec": {"replicas": 0}})
    set_ready(api, "resnet18", 0)
    config, _ = act.read()  # no pool in force: read as the pool that can serve, flagged for repair
    assert [p.variant for p in config.stages[0].pools] == ["resnet50"]
    assert "no pool is in force" in act.off_spec["resnet"]
    act.apply(config)
    assert weights(api)["resnet50"] == WEIGHT_TOTAL and weights(api)["resnet18"] == 0
    assert act.read()[0] == config and act.off_spec == {}


def test_a_route_with_every_weight_0_is_repaired(deployed):
    spec, api = deployed
    import kubernetes

    from rlscale.kube.objects import GATEWAY_GROUP, GATEWAY_VERSION

    custom = kubernetes.client.CustomObjectsApi(api.api_client)
    route = custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, HTTPROUTES, "infadapter-resnet")
    zero = [
        {"op": "replace", "path": f"/spec/rules/0/backendRefs/{i}/weight", "value": 0}
        for i in range(len(route["spec"]["rules"][0]["backendRefs"]))
    ]
    custom.patch_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, HTTPROUTES, "infadapter-resnet", zero)
    act = DeploymentActuator(spec, api, NS)
    config, _ = act.read()
    assert config == ONE and "no pool is in force" in act.off_spec["resnet"]
    act.apply(config)
    assert weights(api)["resnet18"] == WEIGHT_TOTAL


def test_a_failed_switch_never_leaves_the_core_budget_exceeded(kube_api, caplog):
    spec = load_spec("infadapter", ["core_budget=10"])  # resnet18 at 4 cores and resnet50 at 8 do not fit together
    api = kube_api.apps_api()
    create_stage_objects(api, spec, ONE, NS)
    set_ready(api, "resnet18", 1)
    act = DeploymentActuator(spec, api, NS)
    act.read()
    act.apply(R50)  # make: 12 cores for a while, the make-before-break
    ready_all(api)
    kube_api.emulator.inject(403, count=None, match=is_route_patch)  # the shift is refused
    act.read()
    out = act.apply(R50).stages[0]
    assert out.action == "failed" and out.kind == "forbidden"
    assert "OVER THE CORE BUDGET after the failure: 12 cores allocated > 10" in out.message
    assert replicas(api)["resnet50"] == 0 and replicas(api)["resnet18"] == 1  # back within the budget
    assert weights(api)["resnet18"] == WEIGHT_TOTAL


def test_a_failed_scale_down_over_the_budget_says_so(kube_api):
    spec = load_spec("infadapter", ["core_budget=10"])
    api = kube_api.apps_api()
    create_stage_objects(api, spec, ONE, NS)
    set_ready(api, "resnet18", 1)
    act = DeploymentActuator(spec, api, NS)
    act.read()
    act.apply(R50)
    ready_all(api)
    # the shift goes through; scaling resnet18 down is refused (and scaling it to 0 after, too)
    kube_api.emulator.inject(403, count=None, match=lambda r: r.subresource == "scale")
    act.read()
    out = act.apply(R50).stages[0]
    assert out.action == "failed" and out.kind == "forbidden"
    assert weights(api)["resnet50"] == WEIGHT_TOTAL
    assert "OVER THE CORE BUDGET" in out.message and "cannot scale resnet18 to 0" in out.message
