"""In-place resize (``in_place_resize``): the actuator against the kmock emulator, with the twin's pods
(`tests.integration.twin.Pods`: ReplicaSet controller and kubelet) and the server's version
(`tests.integration.servers.ApiServer.server_version`)."""

from __future__ import annotations

import logging

import pytest

from rlscale.kube.actuator import DeploymentActuator, parse_version
from rlscale.kube.objects import ANNOTATION_CORES, rbac_rules, stage_deployment
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig
from tests.integration.closed_loop import create_stage_objects
from tests.integration.twin import Pods, template_hash

NS = "pipeline"
START = PipelineConfig((StageConfig.one("yolov5n", 1, 2, 1), StageConfig.one("resnet18", 2, 1, 2)))
MORE_CORES = PipelineConfig((START.stages[0].with_(cores=4), START.stages[1]))


@pytest.fixture
def spec():
    return load_spec("video", ["in_place_resize=true"])


@pytest.fixture
def cluster(kube_api, spec):
    """The video pipeline's Deployments and their pods; ``(apps api, pods)``."""
    api = kube_api.apps_api()
    for st, sc in zip(spec.stages, START.stages, strict=True):
        api.create_namespaced_deployment(NS, stage_deployment(spec, st, sc, namespace=NS))
    pods = Pods(spec, DeploymentActuator(spec, api, NS), kube_api.core_api())
    pods.sync(0.0)
    return api, pods


def stored(api, name: str) -> dict:
    return api.api_client.sanitize_for_serialization(api.read_namespaced_deployment(name, NS))


def pod_cpu(kube_api, deployment: str) -> dict[str, tuple[str, str]]:
    """Pod name -> (CPU request, limit) of every pod of ``deployment``."""
    out = {}
    for pod in kube_api.core_api().list_namespaced_pod(NS).items:
        if pod.metadata.name.startswith(f"{deployment}-"):
            res = pod.spec.containers[0].resources
            out[pod.metadata.name] = (res.requests["cpu"], res.limits["cpu"])
    return out


def sent(kube_api, since: int = 0) -> list[tuple[str, str | None]]:
    """(method, subresource or the path's last part) of every request the actuator made after ``since``."""
    return [
        (r["method"], r["subresource"] or r["path"].rstrip("/").rpartition("/")[2])
        for r in kube_api.emulator.seen[since:]
    ]


def test_a_cores_only_change_resizes_every_pod_in_place_without_a_rollout(kube_api, spec, cluster):
    api, pods = cluster
    template_before = stored(api, "video-crop")["spec"]["template"]
    act = DeploymentActuator(spec, api, NS)
    since = len(kube_api.emulator.seen)
    outcome = act.apply(MORE_CORES)
    assert [o.action for o in outcome.stages] == ["resized", "unchanged"], outcome
    assert "2 pod(s) resized in place to 4 cores" in outcome.stages[0].message
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("4", "4")}  # request = limit, both pods
    assert set(pod_cpu(kube_api, "video-classification").values()) == {("2", "2")}
    dep = stored(api, "video-crop")
    assert dep["spec"]["template"] == template_before  # the template is untouched: no new ReplicaSet
    assert dep["metadata"]["annotations"] == {ANNOTATION_CORES: "4"}
    assert act.read()[0] == MORE_CORES
    calls = [c for c in sent(kube_api, since) if c[0] != "GET" or c[1] == "version"]
    assert calls == [("GET", "version"), ("PATCH", "resize"), ("PATCH", "resize"), ("PATCH", "video-crop")]
    # the twin's kubelet applies the resize after resize_s; the ReplicaSet stays the same
    assert pods.sync(0.5)["video-crop"].cores == 1  # under way
    views = pods.sync(0.5 + spec.resize_s)
    assert views["video-crop"].cores == 4 and not views["video-crop"].rolled
    assert pods.replicasets["video-crop"] == [template_hash(dep)] and pods.deleted == 0


def test_the_version_is_read_once(kube_api, spec, cluster):
    api, _ = cluster
    act = DeploymentActuator(spec, api, NS)
    act.apply(MORE_CORES)
    act.apply(START)
    assert [c for c in sent(kube_api) if c[1] == "version"] == [("GET", "version")]
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("1", "1")}
    # back at the template's cores: the annotation goes
    assert ANNOTATION_CORES not in (stored(api, "video-crop")["metadata"].get("annotations") or {})


@pytest.mark.parametrize("version", [(1, 32), (1, 27)])
def test_an_older_server_rolls_out_and_says_so_once(kube_api, spec, cluster, caplog, version):
    api, _ = cluster
    kube_api.emulator.server_version = version
    act = DeploymentActuator(spec, api, NS)
    since = len(kube_api.emulator.seen)
    with caplog.at_level(logging.WARNING, logger="rlscale.kube.actuator"):
        first = act.apply(MORE_CORES)
        second = act.apply(START)
    assert [o.action for o in first.stages] == ["rolled", "unchanged"]
    assert [o.action for o in second.stages] == ["rolled", "unchanged"]
    said = [r.getMessage() for r in caplog.records if "in_place_resize" in r.getMessage()]
    assert len(said) == 1, said
    assert f"Kubernetes {version[0]}.{version[1]}" in said[0] and "1.33 or later" in said[0]
    assert "roll the stage out instead" in said[0]
    assert ("PATCH", "resize") not in sent(kube_api, since)  # never tried
    assert stored(api, "video-crop")["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "1"
    }


@pytest.mark.parametrize("status", [404, 405, 422])
def test_a_refused_resize_subresource_falls_back_to_a_rollout_once(kube_api, spec, cluster, caplog, status):
    api, _ = cluster
    kube_api.emulator.server_version = (1, 34)  # new enough, but the feature is off (a feature gate, say)
    kube_api.emulator.inject(status, count=None, match=lambda r: r.subresource == "resize")
    act = DeploymentActuator(spec, api, NS)
    with caplog.at_level(logging.WARNING, logger="rlscale.kube.actuator"):
        first = act.apply(MORE_CORES)
        second = act.apply(START)
    assert [o.action for o in first.stages] == ["rolled", "unchanged"]
    assert [o.action for o in second.stages] == ["rolled", "unchanged"]
    said = [r.getMessage() for r in caplog.records if "in_place_resize" in r.getMessage()]
    assert len(said) == 1 and f"HTTP {status}" in said[0] and "/resize" in said[0], said
    resizes = [r for r in kube_api.emulator.seen if r["subresource"] == "resize"]
    assert len(resizes) == 1  # one refusal, then never again
    assert act.read()[0] == START and "annotations" not in stored(api, "video-crop")["metadata"]


def test_a_forbidden_resize_is_a_failure_not_a_rollout(kube_api, spec, cluster):
    api, _ = cluster
    kube_api.emulator.inject(403, count=None, match=lambda r: r.subresource == "resize")
    outcome = DeploymentActuator(spec, api, NS).apply(MORE_CORES)
    assert [(o.action, o.kind) for o in outcome.stages] == [("failed", "forbidden"), ("unchanged", None)]
    assert "resize" in outcome.stages[0].message and "Role must grant" in outcome.stages[0].message
    assert not any(r["method"] == "PATCH" and r["subresource"] is None for r in kube_api.emulator.seen)


def test_with_in_place_off_nothing_touches_pods_or_the_version(kube_api, cluster):
    api, _ = cluster
    plain = load_spec("video")
    since = len(kube_api.emulator.seen)
    outcome = DeploymentActuator(plain, api, NS).apply(MORE_CORES)
    assert [o.action for o in outcome.stages] == ["rolled", "unchanged"]
    assert all("pods" not in r["path"] and r["path"].rstrip("/") != "/version" for r in kube_api.emulator.seen[since:])


def test_only_cores_go_in_place_a_replica_or_variant_change_with_them_rolls_out(kube_api, spec, cluster):
    api, _ = cluster
    act = DeploymentActuator(spec, api, NS)
    assert [o.action for o in act.apply(MORE_CORES).stages] == ["resized", "unchanged"]
    moved = PipelineConfig((StageConfig.one("yolov5s", 1, 2, 8), START.stages[1]))
    assert [o.action for o in act.apply(moved).stages] == ["rolled", "unchanged"]
    dep = stored(api, "video-crop")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "8"}
    assert ANNOTATION_CORES not in (dep["metadata"].get("annotations") or {})  # the template says it again
    assert act.read()[0] == moved


def test_pods_made_from_the_template_after_a_resize_are_resized_too(kube_api, spec, cluster):
    api, pods = cluster
    act = DeploymentActuator(spec, api, NS)
    act.apply(MORE_CORES)
    bigger = PipelineConfig((MORE_CORES.stages[0].with_(replicas=3), START.stages[1]))
    assert [o.action for o in act.apply(bigger).stages] == ["scaled", "unchanged"]
    pods.sync(1.0)  # the ReplicaSet makes the third pod from the template: 1 core
    assert sorted(pod_cpu(kube_api, "video-crop").values()) == [("1", "1"), ("4", "4"), ("4", "4")]
    config, _ = act.read()
    assert config == bigger and "run the template's CPU" in act.off_spec["crop"]
    outcome = act.apply(bigger)  # what the sidecar does for an off-spec stage
    assert [o.action for o in outcome.stages] == ["resized", "unchanged"]
    assert "1 pod(s) resized in place to 4 cores" in outcome.stages[0].message
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("4", "4")}
    act.read()
    assert act.off_spec == {}


def test_dry_run_resizes_nothing(kube_api, spec, cluster):
    api, _ = cluster
    outcome = DeploymentActuator(spec, api, NS, dry_run=True).apply(MORE_CORES)
    assert outcome.dry_run and [o.action for o in outcome.stages] == ["resized", "unchanged"]
    resizes = [r for r in kube_api.emulator.seen if r["subresource"] == "resize"]
    assert len(resizes) == 2 and all(r["params"].get("dryRun") == "All" for r in resizes)
    assert set(pod_cpu(kube_api, "video-crop").values()) == {("1", "1")}
    assert DeploymentActuator(spec, api, NS).read()[0] == START


def test_a_pool_whose_cores_alone_change_is_resized_in_place(kube_api):
    spec = load_spec("infadapter", ["in_place_resize=true"])
    api = kube_api.apps_api()
    one = PipelineConfig((StageConfig.one("resnet18", 1, 1, 4),))
    create_stage_objects(api, spec, one, NS)
    Pods(spec, DeploymentActuator(spec, api, NS), kube_api.core_api()).sync(0.0)
    act = DeploymentActuator(spec, api, NS)
    act.read()
    target = PipelineConfig((StageConfig.one("resnet18", 1, 1, 6),))
    outcome = act.apply(target)
    assert [o.action for o in outcome.stages] == ["resized"], outcome
    assert set(pod_cpu(kube_api, "infadapter-resnet-resnet18").values()) == {("6", "6")}
    assert act.read()[0] == target
    assert not any(r["method"] == "PATCH" and r["subresource"] == "scale" for r in kube_api.emulator.seen)


@pytest.mark.parametrize(
    "info,version",
    [
        ({"major": "1", "minor": "33"}, (1, 33)),
        ({"major": "1", "minor": "33+", "gitVersion": "v1.33.2-eks-1"}, (1, 33)),
        ({"major": "", "minor": "", "gitVersion": "v1.35.0-gke.1"}, (1, 35)),
        ({"gitVersion": "nonsense"}, None),
        ({}, None),
    ],
)
def test_server_versions_are_read_as_managed_clusters_write_them(info, version):
    assert parse_version(info) == version


def test_every_call_is_covered_by_the_role_with_in_place_resize(kube_api, spec, cluster):
    """Read, resize, resize the pods made since, roll out: every request is granted by the Role `rlscale manifests`
    renders (GET /version is no resource: Kubernetes' default roles let every client read it), and every grant
    is used."""
    api, pods = cluster
    kube_api.emulator.seen.clear()
    act = DeploymentActuator(spec, api, NS)
    act.read()
    bigger = PipelineConfig((MORE_CORES.stages[0].with_(replicas=3), START.stages[1]))
    assert [o.action for o in act.apply(MORE_CORES).stages] == ["resized", "unchanged"]
    assert [o.action for o in act.apply(bigger).stages] == ["scaled", "unchanged"]
    since = len(kube_api.emulator.seen)
    pods.sync(1.0)
    del kube_api.emulator.seen[since:]  # the twin's own requests
    act.read()
    assert [o.action for o in act.apply(bigger).stages] == ["resized", "unchanged"]
    moved = PipelineConfig((bigger.stages[0], StageConfig.one("resnet34", 2, 1, 2)))
    assert [o.action for o in act.apply(moved).stages] == ["unchanged", "rolled"]
    used = set()
    for r in kube_api.emulator.seen:
        if r["path"].rstrip("/") == "/version":
            continue
        kind = "pods" if "/pods" in r["path"] else "deployments"
        resource = f"{kind}/{r['subresource']}" if r["subresource"] else kind
        if r["method"] == "GET":
            verb = "list" if r["path"].rstrip("/").endswith(f"/{kind}") else "get"
        else:
            verb = r["method"].lower()
        used.add((resource, verb))
    granted = {(res, verb) for rule in rbac_rules(spec) for res in rule["resources"] for verb in rule["verbs"]}
    assert used == granted


def test_a_pod_that_goes_between_the_list_and_the_resize_is_skipped_not_taken_for_an_old_server(
    kube_api, spec, cluster
):
    api, _ = cluster
    first = sorted(pod_cpu(kube_api, "video-crop"))[0]

    def gone(request):  # the first resize finds its pod deleted (a scale-down, an eviction)
        if request.subresource != "resize" or not request.url.path.endswith(f"/{first}/resize"):
            return False
        for key, obj in list(kube_api.emulator.objects.items()):  # deleted at once, inside the server
            if key[2] == first:
                obj.delete()
        return True

    kube_api.emulator.inject(404, count=1, match=gone)
    act = DeploymentActuator(spec, api, NS)
    outcome = act.apply(MORE_CORES)
    assert [o.action for o in outcome.stages] == ["resized", "unchanged"], outcome
    assert "1 pod(s) resized in place" in outcome.stages[0].message
    assert act.in_place_supported()  # still on
