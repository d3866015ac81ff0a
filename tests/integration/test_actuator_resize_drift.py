"""In-place resize drift read from the pods themselves (issue 26, item 6): a resize whose record on the Deployment
failed leaves pods at other cores than the Deployment says; the actuator notices it and puts them right."""

from __future__ import annotations

from rlscale.kube.actuator import DeploymentActuator
from tests.integration.test_actuator_resize import MORE_CORES, START, cluster, pod_cpu, spec  # noqa: F401


def is_deployment_patch(request) -> bool:
    return request.method.name == "PATCH" and request.subresource is None and "deployments" in str(request.url)


def test_a_resize_whose_record_failed_is_seen_in_the_pods_and_put_right(kube_api, spec, cluster):  # noqa: F811
    api, pods = cluster
    act = DeploymentActuator(spec, api, "pipeline")
    kube_api.emulator.inject(500, count=1, match=is_deployment_patch)  # the annotation write fails
    out = act.apply(MORE_CORES).stages[0]
    assert out.action == "failed" and out.kind == "server"
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("4", "4")}  # the pods were resized all the same
    config, _ = act.read()
    assert config == START  # the Deployment still says 1 core ...
    assert "run 4 cores, not the 1" in act.off_spec["crop"]  # ... and the pods' 4 cores are seen
    # the policy keeps 1 core: the repair resizes the pods back, in place
    out = act.apply(START).stages[0]
    assert out.action == "resized", out
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("1", "1")}
    act.read()
    assert act.off_spec == {}


def test_a_resize_whose_record_failed_is_recorded_when_the_policy_wants_those_cores(kube_api, spec, cluster):  # noqa: F811
    api, _ = cluster
    act = DeploymentActuator(spec, api, "pipeline")
    kube_api.emulator.inject(500, count=1, match=is_deployment_patch)
    act.apply(MORE_CORES)
    act.read()
    out = act.apply(MORE_CORES).stages[0]  # the policy still wants 4: nothing to resize, the record is written
    assert out.action == "resized"
    assert act.read()[0] == MORE_CORES and act.off_spec == {}
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("4", "4")}
