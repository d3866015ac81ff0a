"""A pooled stage in the closed loop: twin -> real Prometheus -> the sidecar's loop -> kmock -> twin.

The policy is scripted (one pool, then a mix of two, then one again), so the test is about the actuator, the
twin and the loop, not about when a planner would choose a mix: the sidecar's `Sidecar` runs in this process
with it, on a real `KubernetesCluster` (Prometheus reader and Deployment actuator on the emulator).
"""

from __future__ import annotations

import threading

import kubernetes
import pytest

from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.objects import GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES, WEIGHT_TOTAL
from rlscale.kube.prometheus import PrometheusReader
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig, VariantPool
from tests.integration.closed_loop import NS, SPEEDUP, SUMMARY, ClosedLoop, step_trace

ONE = PipelineConfig((StageConfig.one("resnet18", 1, 1, 4),))
TWO = PipelineConfig(
    (StageConfig.of_pools([VariantPool("resnet18", 1, 1, 4, share=0.3), VariantPool("resnet50", 1, 1, 8, share=0.7)]),)
)


class MixScript:
    """One pool until it has seen it in force, then two until the cluster runs both, then one again."""

    name = "mix-script"

    def __init__(self) -> None:
        self.phase = "one"
        self.seen: list[tuple[str, PipelineConfig]] = []

    def decide(self, state: PipelineState) -> PipelineConfig:
        self.seen.append((self.phase, state.config))
        if self.phase == "one" and state.config == ONE:
            self.phase = "two"
        elif self.phase == "two" and state.config == TWO:
            self.phase = "back"
        return TWO if self.phase == "two" else ONE


@pytest.fixture
def loop(prometheus_server, kube_api, tmp_path):
    spec = load_spec("infadapter")
    made = ClosedLoop(spec, step_trace(5.0, 5.0, 0, 900), ONE, prometheus_server, kube_api, tmp_path)
    yield made
    made.close()


def route_weights(api) -> dict[str, int]:
    custom = kubernetes.client.CustomObjectsApi(api.api_client)
    route = custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, HTTPROUTES, "infadapter-resnet")
    return {r["name"].rpartition("-")[2]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}


def pool_replicas(api) -> dict[str, int]:
    return {d.metadata.labels["rlscale.io/variant"]: d.spec.replicas for d in api.list_namespaced_deployment(NS).items}


@pytest.mark.e2e
def test_the_mix_goes_from_one_pool_to_two_and_back_make_before_break(loop, kube_api):
    spec = loop.spec
    api = kube_api.apps_api()
    reader = PrometheusReader(loop.prometheus.url, spec.name)
    actuator = DeploymentActuator(spec, api, NS)
    cluster = KubernetesCluster(spec, reader, actuator, interval_s=spec.interval_s, window_s=30.0, speedup=SPEEDUP)
    policy = MixScript()
    stop = threading.Event()
    sidecar = Sidecar(cluster, policy, None, SidecarSettings(interval_s=spec.interval_s, speedup=SPEEDUP), stop=stop)
    thread = threading.Thread(target=sidecar.run, name="sidecar", daemon=True)
    thread.start()
    try:
        back = loop.wait_for(
            lambda: (
                policy.phase == "back"
                and pool_replicas(api)["resnet50"] == 0
                and route_weights(api)["resnet18"] == WEIGHT_TOTAL
            ),
            timeout_s=90,
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert back, (policy.phase, pool_replicas(api), route_weights(api), sidecar.metrics.registry)

    # the cluster ends as it began: resnet18 alone, every other pool at 0 replicas and weight 0
    others = {"resnet34": 0, "resnet50": 0, "resnet101": 0, "resnet152": 0}
    assert pool_replicas(api) == {"resnet18": 1, **others}
    assert route_weights(api) == {"resnet18": WEIGHT_TOTAL, **others}
    # and ran the mix in between: the sidecar saw it in force, the twin simulated it with the route's shares
    assert ("two", TWO) in policy.seen
    mixed = [t.config.stages[0] for t in loop.twin.ticks if len(t.config.stages[0].pools) > 1]
    assert mixed and {(p.variant, p.share) for p in mixed[0].pools} == {("resnet18", 0.3), ("resnet50", 0.7)}

    # make-before-break: resnet50 up, then the weights, then (after the way back's shift) resnet50 down
    sent = [r for r in kube_api.emulator.seen if r["method"] == "PATCH" and r["subresource"] != "status"]
    steps = [("route" if HTTPROUTES in r["path"] else r["path"].rpartition("/")[2]) for r in sent]
    assert steps == ["infadapter-resnet-resnet50", "route", "route", "scale"], steps
    assert sent[-1]["path"].endswith("infadapter-resnet-resnet50/scale")
    SUMMARY.append(
        f"pools: resnet18 -> resnet18 30% + resnet50 70% -> resnet18 through {len(sent)} patches (make, shift, "
        f"shift, break) in {len(policy.seen)} decisions; the twin ran the mix for {len(mixed)} ticks"
    )
