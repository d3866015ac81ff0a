"""In-place resize in the closed loop: twin -> real Prometheus -> the sidecar's loop -> kmock -> twin.

The policy is scripted (cores 1 -> 4 -> 2 on the detector, nothing else), so the test is about the actuator, the
twin and the loop: on a current server (1.35) the detector's pods are resized in place and keep serving, with no
new ReplicaSet; on an old one (1.32) the sidecar says once that it cannot, and rolls out each change.
"""

from __future__ import annotations

import logging
import math
import threading

import pytest

from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.objects import ANNOTATION_CORES
from rlscale.kube.prometheus import PrometheusReader
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig
from tests.integration.closed_loop import NS, SPEEDUP, SUMMARY, ClosedLoop, step_trace

START = PipelineConfig((StageConfig.one("yolov5n", 1, 2, 1), StageConfig.one("resnet18", 1, 1, 2)))
MORE = PipelineConfig((START.stages[0].with_(cores=4), START.stages[1]))
LESS = PipelineConfig((START.stages[0].with_(cores=2), START.stages[1]))
SAID = "in_place_resize is on in the spec, but"


class CoresScript:
    """The detector's cores 1, then 4 once the cluster says 1, then 2 once it says 4: cores only."""

    name = "cores-script"

    def __init__(self) -> None:
        self.phase = "start"
        self.seen: list[tuple[str, PipelineConfig]] = []

    def decide(self, state: PipelineState) -> PipelineConfig:
        self.seen.append((self.phase, state.config))
        if self.phase == "start" and state.config == START:
            self.phase = "more"
        elif self.phase == "more" and state.config == MORE:
            self.phase = "less"
        return {"start": START, "more": MORE, "less": LESS}[self.phase]


@pytest.fixture
def loop(prometheus_server, kube_api, tmp_path):
    spec = load_spec("video", ["in_place_resize=true"])
    made = ClosedLoop(spec, step_trace(4.0, 4.0, 0, 900), START, prometheus_server, kube_api, tmp_path)
    yield made
    made.close()


def run_until(loop, kube_api, policy, done, timeout_s: float = 90):
    """The sidecar's loop in this process with ``policy`` until ``done()``; what ``done`` returned last."""
    spec = loop.spec
    reader = PrometheusReader(loop.prometheus.url, spec.name)
    actuator = DeploymentActuator(spec, kube_api.apps_api(), NS)
    cluster = KubernetesCluster(spec, reader, actuator, interval_s=spec.interval_s, window_s=30.0, speedup=SPEEDUP)
    stop = threading.Event()
    sidecar = Sidecar(cluster, policy, None, SidecarSettings(interval_s=spec.interval_s, speedup=SPEEDUP), stop=stop)
    thread = threading.Thread(target=sidecar.run, name="sidecar", daemon=True)
    thread.start()
    try:
        return loop.wait_for(done, timeout_s=timeout_s)
    finally:
        stop.set()
        thread.join(timeout=30)


def detector(kube_api) -> dict:
    api = kube_api.apps_api()
    return api.api_client.sanitize_for_serialization(api.read_namespaced_deployment("video-crop", NS))


def requests_to(kube_api, subresource: str | None, name: str = "video-crop") -> int:
    """PATCHes the sidecar sent: of ``subresource`` (``resize``: any pod's) or of the detector's Deployment."""
    return sum(
        1
        for r in kube_api.emulator.seen
        if r["method"] == "PATCH"
        and r["subresource"] == subresource
        and (subresource == "resize" or r["path"].endswith(f"/deployments/{name}"))
    )


def live_cores(twin) -> set[int]:
    """Cores of the detector's replicas the twin's simulator runs (serving or starting, not retired)."""
    return {r.cores for r in twin.sim.engine.stages[0].replicas if r.retire_s == math.inf}


@pytest.mark.e2e
def test_cores_only_changes_resize_the_pods_in_place_without_a_rollout(loop, kube_api, caplog):
    twin, policy = loop.twin, CoresScript()
    with caplog.at_level(logging.INFO):
        done = run_until(
            loop,
            kube_api,
            policy,
            lambda: policy.phase == "less" and twin.resized_in_place >= 2 and live_cores(twin) == {2},
        )
    assert done, (policy.phase, twin.resized_in_place, live_cores(twin), twin.pods.replicasets)
    dep = detector(kube_api)
    # the pods run the new cores; the Deployment's template is the one it started with: one ReplicaSet, no pod
    # replaced, and the cores are on the Deployment's annotation
    assert twin.pods.replicasets["video-crop"] == twin.pods.replicasets["video-crop"][:1]
    assert twin.pods.deleted == 0 and twin.pods.created == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1"}
    assert dep["metadata"]["annotations"][ANNOTATION_CORES] == "2"
    assert loop.deployed_config() == LESS
    # two pods resized twice, one metadata patch each time; never a template patch or a scale
    assert requests_to(kube_api, "resize") == 4 and requests_to(kube_api, None) == 2
    assert requests_to(kube_api, "scale") == 0
    # the simulator never rolled out: its two serving replicas changed cores where they stand
    assert twin.sim.reconfigurations == 0 and len(twin.sim.engine.stages[0].replicas) == 2
    assert all(t.replicas_serving[0] == 2 for t in twin.ticks)  # the detector kept serving throughout
    assert not [r for r in caplog.records if SAID in r.getMessage()]
    SUMMARY.append(
        f"in-place resize: detector cores 1 -> 4 -> 2 through {requests_to(kube_api, 'resize')} pods/resize patches "
        f"in {len(policy.seen)} decisions; {len(twin.pods.replicasets['video-crop'])} ReplicaSet, 0 pods replaced"
    )


@pytest.mark.e2e
def test_an_old_server_rolls_each_change_out_and_says_so_once(loop, kube_api, caplog):
    kube_api.emulator.server_version = (1, 32)
    twin, policy = loop.twin, CoresScript()
    with caplog.at_level(logging.INFO):
        done = run_until(
            loop,
            kube_api,
            policy,
            lambda: (
                policy.phase == "less" and len(twin.pods.replicasets["video-crop"]) == 3 and live_cores(twin) == {2}
            ),
        )
    assert done, (policy.phase, twin.pods.replicasets, live_cores(twin))
    said = [r.getMessage() for r in caplog.records if SAID in r.getMessage()]
    assert len(said) == 1 and "Kubernetes 1.32" in said[0] and "roll the stage out instead" in said[0], said
    dep = detector(kube_api)
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2"}
    assert ANNOTATION_CORES not in (dep["metadata"].get("annotations") or {})
    assert requests_to(kube_api, "resize") == 0 and requests_to(kube_api, None) == 2
    assert twin.resized_in_place == 0 and twin.sim.reconfigurations >= 2  # rollouts, in the simulator too
    assert twin.pods.deleted >= 4  # each rollout replaced both pods
    SUMMARY.append(
        f"in-place resize on Kubernetes 1.32: said once, rolled out instead "
        f"({len(twin.pods.replicasets['video-crop'])} ReplicaSets, {twin.pods.deleted} pods replaced)"
    )
