"""The Deployment actuator with the official client against the kmock API emulator (127.0.0.1)."""

from __future__ import annotations

import pytest

from rlscale.kube.actuator import DeploymentActuator, KubeApiError
from rlscale.kube.objects import rbac_rules, stage_deployment
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig

NS = "pipeline"


@pytest.fixture
def video():
    return load_spec("video")


@pytest.fixture
def deployed(kube_api, video):
    """The video pipeline's two stage Deployments, each with an extra container and env var to preserve."""
    api = kube_api.apps_api()
    initial = PipelineConfig((StageConfig.one("yolov5n", 1, 2, 1), StageConfig.one("resnet18", 2, 1, 2)))
    for st, sc in zip(video.stages, initial.stages, strict=True):
        body = stage_deployment(video, st, sc, namespace=NS)
        pod = body["spec"]["template"]["spec"]
        pod["containers"][0]["env"].append({"name": "LOG_LEVEL", "value": "info"})
        pod["containers"].append({"name": "log-shipper", "image": "shipper:1"})
        api.create_namespaced_deployment(NS, body)
    return api, initial


def stored(api, name):
    return api.api_client.sanitize_for_serialization(api.read_namespaced_deployment(name, NS))


def test_reads_the_configuration_from_labelled_deployments(kube_api, video, deployed):
    api, initial = deployed
    config, ready = DeploymentActuator(video, api, NS).read()
    assert config == initial
    assert ready == [None, None]  # no status written yet


def test_replicas_only_go_through_the_scale_subresource(kube_api, video, deployed):
    api, initial = deployed
    act = DeploymentActuator(video, api, NS)
    target = PipelineConfig((initial.stages[0].with_(replicas=5), initial.stages[1]))
    outcome = act.apply(target)
    assert [o.action for o in outcome.stages] == ["scaled", "unchanged"]
    patches = [r for r in kube_api.emulator.seen if r["method"] == "PATCH"]
    assert len(patches) == 1 and patches[0]["subresource"] == "scale"  # one patch for one changed stage
    assert act.read()[0] == target


def test_a_template_change_is_one_json_patch_that_keeps_everything_else(kube_api, video, deployed):
    api, initial = deployed
    act = DeploymentActuator(video, api, NS)
    target = PipelineConfig((StageConfig.one("yolov5s", 4, 3, 2), initial.stages[1]))
    outcome = act.apply(target)
    assert [o.action for o in outcome.stages] == ["rolled", "unchanged"]
    assert act.read()[0] == target
    dep = stored(api, "video-crop")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["server", "log-shipper"]
    env = {e["name"]: e["value"] for e in containers[0]["env"]}
    timeout = f"{video.batch_timeout_s:g}"  # the spec's batch timeout goes with every template patch
    assert env == {"MODEL_VARIANT": "yolov5s", "MAX_BATCH_SIZE": "4", "LOG_LEVEL": "info", "BATCH_TIMEOUT_S": timeout}
    assert containers[0]["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert containers[0]["image"] == "registry.example/model-server:latest"
    patches = [r for r in kube_api.emulator.seen if r["method"] == "PATCH"]
    assert len(patches) == 1 and patches[0]["subresource"] is None


def test_dry_run_changes_nothing_and_says_so(kube_api, video, deployed):
    api, initial = deployed
    act = DeploymentActuator(video, api, NS, dry_run=True)
    target = PipelineConfig((StageConfig.one("yolov5s", 4, 3, 2), initial.stages[1].with_(replicas=4)))
    outcome = act.apply(target)
    assert outcome.dry_run and [o.action for o in outcome.stages] == ["rolled", "scaled"]
    assert act.read()[0] == initial
    patches = [r for r in kube_api.emulator.seen if r["method"] == "PATCH"]
    assert len(patches) == 2 and all(r["params"].get("dryRun") == "All" for r in patches)


def test_a_conflict_is_re_read_and_retried(kube_api, video, deployed):
    api, initial = deployed
    kube_api.emulator.inject(409, count=1)
    target = PipelineConfig((initial.stages[0].with_(replicas=4), initial.stages[1]))
    outcome = DeploymentActuator(video, api, NS).apply(target)
    assert outcome.stages[0].action == "scaled" and outcome.stages[0].attempts == 2
    assert DeploymentActuator(video, api, NS).read()[0] == target


@pytest.mark.parametrize(
    ("status", "kind", "temporary"),
    [
        (409, "conflict", True),
        (429, "throttled", True),
        (500, "server", True),
        (403, "forbidden", False),
        (401, "unauthorized", False),
    ],
)
def test_api_errors_become_outcomes_and_store_nothing(kube_api, video, deployed, status, kind, temporary):
    api, initial = deployed
    kube_api.emulator.inject(status, count=None)
    target = PipelineConfig((initial.stages[0].with_(replicas=4), initial.stages[1]))
    outcome = DeploymentActuator(video, api, NS, conflict_retries=2).apply(target)
    assert outcome.failed[0].kind == kind
    assert outcome.temporary_failure is temporary
    assert DeploymentActuator(video, api, NS).read()[0] == initial


def test_a_429_is_throttled_with_its_retry_after_and_no_further_call_is_made(kube_api, video, deployed):
    """The API server's flow control answers 429 with Retry-After: the actuator stops calling for this step (the
    other stages are skipped) and hands the wait to the sidecar, in seconds or from an HTTP date."""
    import email.utils
    import time

    api, initial = deployed
    act = DeploymentActuator(video, api, NS)
    act.read()
    kube_api.emulator.seen.clear()
    kube_api.emulator.inject(429, count=None, headers={"Retry-After": "7"})
    target = PipelineConfig((initial.stages[0].with_(replicas=4), initial.stages[1].with_(replicas=3)))
    outcome = act.apply(target)
    assert [(o.action, o.kind) for o in outcome.stages] == [("failed", "throttled"), ("skipped", None)]
    assert outcome.temporary_failure and outcome.retry_after_s == 7.0
    assert outcome.stages[0].retry_after_s == 7.0 and "Retry-After 7s" in outcome.stages[0].message
    assert [(r["method"], r["answer"]) for r in kube_api.emulator.seen] == [("PATCH", 429)]  # nothing after it
    kube_api.emulator.clear()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    kube_api.emulator.inject(429, count=1, match=lambda request: True, headers={"Retry-After": when})
    with pytest.raises(KubeApiError) as info:
        act.read()
    assert info.value.kind == "throttled" and info.value.temporary
    assert 25 <= info.value.retry_after_s <= 30
    assert act.read()[0] == initial  # nothing was stored


def test_a_missing_deployment_is_not_found(kube_api, video):
    with pytest.raises(KubeApiError) as info:
        DeploymentActuator(video, kube_api.apps_api(), NS).read()
    assert info.value.kind == "not_found" and "rlscale.io/stage=crop" in str(info.value)


def test_a_deployment_with_an_unknown_variant_is_a_permanent_error(kube_api, video, deployed):
    api, _ = deployed
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "yolov9"}]
    api.patch_namespaced_deployment("video-crop", NS, patch)
    with pytest.raises(KubeApiError) as info:
        DeploymentActuator(video, api, NS).read()
    assert info.value.kind == "deployment" and "yolov9" in str(info.value)


def test_every_call_is_covered_by_the_role(kube_api, video, deployed):
    """The Role `rlscale manifests` renders grants every request the actuator made, and nothing it did not."""
    api, initial = deployed
    kube_api.emulator.seen.clear()
    act = DeploymentActuator(video, api, NS)
    act.read()
    act.apply(PipelineConfig((initial.stages[0].with_(replicas=3), StageConfig.one("resnet34", 4, 1, 2))))
    used = set()
    for r in kube_api.emulator.seen:
        resource = "deployments/scale" if r["subresource"] == "scale" else "deployments"
        if r["method"] == "GET":
            verb = "list" if r["path"].endswith("/deployments") else "get"
        else:
            verb = r["method"].lower()
        used.add((resource, verb))
    granted = {(res, verb) for rule in rbac_rules(video) for res in rule["resources"] for verb in rule["verbs"]}
    assert used == granted


def test_a_slow_api_server_is_a_timeout_and_the_next_read_sees_what_landed(kube_api, video, deployed):
    api, initial = deployed
    kube_api.emulator.inject(None, count=1, delay_s=2.0)
    target = PipelineConfig((initial.stages[0].with_(replicas=4), initial.stages[1]))
    outcome = DeploymentActuator(video, api, NS, timeout_s=0.5).apply(target)
    assert outcome.failed[0].kind == "timeout" and outcome.temporary_failure
    # whether the timed-out request landed or not, the next step re-reads and converges
    again = DeploymentActuator(video, api, NS).apply(target)
    assert not again.failed
    assert DeploymentActuator(video, api, NS).read()[0] == target


def test_apply_after_read_patches_from_what_was_read(kube_api, video, deployed):
    """The sidecar reads every Deployment to observe; applying right after must not read them all again."""
    api, initial = deployed
    act = DeploymentActuator(video, api, NS)
    act.read()
    kube_api.emulator.seen.clear()
    target = PipelineConfig((initial.stages[0].with_(replicas=4), initial.stages[1]))
    assert [o.action for o in act.apply(target).stages] == ["scaled", "unchanged"]
    assert [r["method"] for r in kube_api.emulator.seen] == ["PATCH"]
    assert act.read()[0] == target


def test_every_call_with_named_deployments_is_covered_by_the_role_and_its_resource_names(kube_api, tmp_path):
    """With every stage's Deployment named in the spec, the Role carries resourceNames: every request the actuator
    makes (read, scale, template patch) names one of them, and none lists."""
    import yaml

    from rlscale.spec import data_dir

    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["kubernetes"] = {"deployments": {"crop": "yolo-server", "classification": "resnet-server"}}
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    api = kube_api.apps_api()
    initial = PipelineConfig((StageConfig.one("yolov5n", 1, 2, 1), StageConfig.one("resnet18", 2, 1, 2)))
    for st, sc in zip(spec.stages, initial.stages, strict=True):
        api.create_namespaced_deployment(NS, stage_deployment(spec, st, sc, namespace=NS))
    kube_api.emulator.seen.clear()
    act = DeploymentActuator(spec, api, NS)
    act.read()
    outcome = act.apply(PipelineConfig((initial.stages[0].with_(replicas=3), StageConfig.one("resnet34", 4, 1, 2))))
    assert [o.action for o in outcome.stages] == ["scaled", "rolled"]
    kube_api.emulator.inject(409, count=1)  # a conflict: the re-read is a get by name too
    act.apply(PipelineConfig((initial.stages[0].with_(replicas=4), StageConfig.one("resnet34", 4, 1, 2))))
    granted = {
        (res, verb, name)
        for rule in rbac_rules(spec)
        for res in rule["resources"]
        for verb in rule["verbs"]
        for name in rule["resourceNames"]
    }
    used = set()
    for r in kube_api.emulator.seen:
        parts = r["path"].rstrip("/").split("/")
        resource = "deployments/scale" if r["subresource"] == "scale" else "deployments"
        name = parts[parts.index("deployments") + 1] if parts[-1] != "deployments" else None
        verb = ("get" if name else "list") if r["method"] == "GET" else r["method"].lower()
        used.add((resource, verb, name))
    assert used <= granted, used - granted
    assert {v for _r, v, _n in used} == {"get", "patch"}
    assert {n for _r, _v, n in used} == {"yolo-server", "resnet-server"}
