"""An off-spec stage (issue 14: a CPU request of 1500m with a limit of 2) against the kmock API emulator: read as
the choice the sidecar will write, said once, and corrected by the next step even when the policy keeps the
configuration; the spec's batch timeout goes with the patch. Prometheus is the unit tests' fake (its answers do
not matter here)."""

from __future__ import annotations

import logging

from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.objects import stage_deployment
from rlscale.kube.prometheus import PrometheusReader
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig
from tests.kube.fake_prometheus import FakePrometheus

NS = "pipeline"


class Keep:
    """A policy that always keeps the configuration it observes."""

    name = "keep"

    def decide(self, state):
        return state.config


def test_an_off_spec_stage_is_read_as_a_choice_and_corrected_by_the_next_step(kube_api, caplog):
    spec = load_spec("video")
    api = kube_api.apps_api()
    initial = PipelineConfig((StageConfig.one("yolov5n", 1, 2, 2), StageConfig.one("resnet18", 2, 1, 1)))
    for st, sc in zip(spec.stages, initial.stages, strict=True):
        body = stage_deployment(spec, st, sc, namespace=NS)
        container = body["spec"]["template"]["spec"]["containers"][0]
        if st.name == "crop":  # what a hand-written Deployment may hold
            container["resources"] = {"requests": {"cpu": "1500m"}, "limits": {"cpu": "2"}}
            container["env"] = [e for e in container["env"] if e["name"] != "BATCH_TIMEOUT_S"]
        api.create_namespaced_deployment(NS, body)

    actuator = DeploymentActuator(spec, api, NS)
    with caplog.at_level(logging.WARNING, logger="rlscale.kube.actuator"):
        config, _ready = actuator.read()
        actuator.read()
    assert config == initial  # 1.5 cores read as 2, the smallest choice at or above it
    warnings = [r.getMessage() for r in caplog.records if "off-spec" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not every step
    assert "CPU request 1.5" in warnings[0] and "differs from its limit 2" in warnings[0]
    assert set(actuator.off_spec) == {"crop"}

    fake = FakePrometheus()
    try:
        reader = PrometheusReader(fake.url, spec.name)
        cluster = KubernetesCluster(spec, reader, actuator, interval_s=10, window_s=30)
        sidecar = Sidecar(cluster, Keep(), None, SidecarSettings(interval_s=10))
        report = sidecar.step()
    finally:
        fake.stop()
    assert report.outcome == "applied", report.message
    assert "correcting off-spec crop" in report.message
    assert [o.action for o in report.apply.stages] == ["rolled", "unchanged"]

    stored = api.api_client.sanitize_for_serialization(api.read_namespaced_deployment("video-crop", NS))
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BATCH_TIMEOUT_S"] == f"{spec.batch_timeout_s:g}"
    assert actuator.read()[0] == initial and actuator.off_spec == {}
    # on-spec now: the next step keeps it without a patch
    assert kube_api.emulator.seen  # (the emulator records every request)
    patches = len([r for r in kube_api.emulator.seen if r["method"] == "PATCH"])
    fake = FakePrometheus()
    try:
        cluster.reader = PrometheusReader(fake.url, spec.name)
        assert sidecar.step().outcome == "unchanged"
    finally:
        fake.stop()
    assert len([r for r in kube_api.emulator.seen if r["method"] == "PATCH"]) == patches
