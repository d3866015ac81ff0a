"""The sidecar's manifests: kinds and names, least-privilege RBAC, the embedded spec, the container, the image."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlscale.errors import RlscaleError
from rlscale.kube.manifests import RUN_AS_UID, render_manifests
from rlscale.kube.objects import rbac_rules
from rlscale.model import stage_latency_s
from rlscale.spec import bundled_pipelines, data_dir, load_spec

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"]
# pooled pipelines render their stages' objects too, and a Role for them: tests/kube/test_manifests_pools.py
SINGLE_POOL = [name for name in bundled_pipelines() if not load_spec(name).pooled]


def render(spec, **kwargs) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render_manifests(spec, **kwargs)))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def restore(docs: list[dict[str, Any]], folder: Path):
    """Write the ConfigMap's files into ``folder`` (as the volume mount does) and load the spec from there."""
    folder.mkdir()
    for key, text in by_kind(docs, "ConfigMap")["data"].items():
        (folder / key).write_text(text)
    return load_spec(folder / "spec.yaml")


@pytest.fixture
def custom_spec(tmp_path: Path):
    """A copy of the video spec in tmp_path whose crop stage uses a profile outside the bundled data folder."""

    def _make(mutate=None) -> Path:
        raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
        (tmp_path / "profiles").mkdir(exist_ok=True)
        shutil.copy(data_dir() / "profiles" / "crop.csv", tmp_path / "profiles" / "my-crop.csv")
        raw["stages"][0]["profile"] = str(tmp_path / "profiles" / "my-crop.csv")  # absolute: must be rewritten
        if mutate is not None:
            mutate(raw)
        path = tmp_path / "custom.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _make


@pytest.mark.parametrize("name", SINGLE_POOL)
def test_bundled_pipeline_renders_all_objects(name, tmp_path):
    spec = load_spec(name)
    docs = render(spec, namespace="ml")
    assert [d["kind"] for d in docs] == KINDS
    sidecar = f"rlscale-{name}"
    assert [d["metadata"]["name"] for d in docs] == [sidecar, sidecar, sidecar, f"{sidecar}-spec", sidecar]
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}

    binding = by_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"rlscale-{name}"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"rlscale-{name}", "namespace": "ml"}]

    # bundled specs need no extra files and are copied verbatim, comments included
    data = by_kind(docs, "ConfigMap")["data"]
    assert list(data) == ["spec.yaml"]
    assert data["spec.yaml"] == spec.source.read_text()
    assert restore(docs, tmp_path / "etc").to_dict() == spec.to_dict()

    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"rlscale-{name}"
    assert {"name": "spec", "configMap": {"name": f"rlscale-{name}-spec"}} in pod["volumes"]
    assert pod["terminationGracePeriodSeconds"] > spec.interval_s


@pytest.mark.parametrize("name", SINGLE_POOL)
def test_role_is_least_privilege(name):
    spec = load_spec(name, ["in_place_resize=false"])  # the pods rules of in-place resize: test_manifests_resize.py
    role = by_kind(render(spec), "Role")
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert role["rules"] == rbac_rules(spec)
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["apps"]
        assert set(rule["resources"]) <= {"deployments", "deployments/scale"}
        assert set(rule["verbs"]) <= {"get", "list", "patch"}
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert "resourceNames" not in rule or rule["resourceNames"]
    # no stage is named in a bundled spec, so the sidecar must be able to find them by label
    assert "list" in role["rules"][0]["verbs"]


def test_named_deployments_need_no_list(custom_spec):
    def name_all(raw):
        raw["kubernetes"] = {"deployments": {s["name"]: f"video-{s['name']}-server" for s in raw["stages"]}}

    spec = load_spec(custom_spec(name_all))
    rules = by_kind(render(spec), "Role")["rules"]
    assert rules == rbac_rules(spec)
    assert all("list" not in r["verbs"] for r in rules)
    assert rules[0]["verbs"] == ["get", "patch"]


def test_custom_profile_is_embedded_and_path_rewritten(custom_spec, tmp_path):
    def add_kube(raw):
        raw["kubernetes"] = {
            "namespace": "models",
            "variant_env": "VARIANT",
            "deployments": {"crop": "yolo"},
            "promql": {"queue_length": 'max(my_queue{{job="{pipeline}",step="{stage}"}})'},
        }

    spec = load_spec(custom_spec(add_kube))
    docs = render(spec, namespace="ops")
    data = by_kind(docs, "ConfigMap")["data"]
    assert sorted(data) == ["my-crop.csv", "spec.yaml"]
    assert data["my-crop.csv"] == (tmp_path / "profiles" / "my-crop.csv").read_text()
    embedded = yaml.safe_load(data["spec.yaml"])
    assert embedded["stages"][0]["profile"] == "my-crop.csv"
    assert "profile" not in embedded["stages"][1]
    assert embedded["kubernetes"]["deployments"] == {"crop": "yolo"}

    restored = restore(docs, tmp_path / "mounted")
    assert restored.to_dict() == spec.to_dict()
    assert restored.stages[0].profile_path == tmp_path / "mounted" / "my-crop.csv"
    assert restored.kubernetes.promql == spec.kubernetes.promql

    # the sidecar runs in "ops"; its Role must be where the stage Deployments are
    assert by_kind(docs, "Role")["metadata"]["namespace"] == "models"
    assert by_kind(docs, "RoleBinding")["metadata"]["namespace"] == "models"
    assert by_kind(docs, "RoleBinding")["subjects"][0]["namespace"] == "ops"
    assert by_kind(docs, "Deployment")["metadata"]["namespace"] == "ops"
    args = container(docs)["args"]
    assert args[args.index("--namespace") + 1] == "models"


def test_a_calibrated_profile_travels_with_its_run_times(tmp_path):
    """A team's calibrated profile (``rlscale calibrate --write-spec``) keeps its run times beside it: the ConfigMap
    carries both, so the sidecar plans the same latency as the machine that rendered it."""
    raw = yaml.safe_load((data_dir() / "pipelines" / "resnet-mlp.yaml").read_text())
    (tmp_path / "profiles").mkdir()
    for name in ("resnet-tiny.csv", "resnet-tiny.runs.csv"):
        shutil.copy(data_dir() / "profiles" / name, tmp_path / "profiles" / name.replace("resnet-tiny", "my-detect"))
    raw["stages"][0]["profile"] = str(tmp_path / "profiles" / "my-detect.csv")
    path = tmp_path / "calibrated.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    docs = render(spec)
    data = by_kind(docs, "ConfigMap")["data"]
    assert sorted(data) == ["my-detect.csv", "my-detect.runs.csv", "spec.yaml"]
    assert data["my-detect.runs.csv"] == (tmp_path / "profiles" / "my-detect.runs.csv").read_text()
    restored = restore(docs, tmp_path / "mounted")
    before, after = spec.stages[0], restored.stages[0]
    assert after.latency.runs_s("resnet-tiny-20", 1, 1) == before.latency.runs_s("resnet-tiny-20", 1, 1)
    assert after.latency.runs_s("resnet-tiny-20", 1, 1)
    planned = [stage_latency_s(st, "resnet-tiny-20", 1, 1, 250.0, replicas=1) for st in (before, after)]
    assert planned[0] == planned[1]


def test_explicit_bundled_profile_of_the_task_is_dropped(custom_spec, tmp_path):
    def bundled_path(raw):
        raw["stages"][1]["profile"] = str(data_dir() / "profiles" / "classification.csv")

    spec = load_spec(custom_spec(bundled_path))
    docs = render(spec)
    data = by_kind(docs, "ConfigMap")["data"]
    assert sorted(data) == ["my-crop.csv", "spec.yaml"]
    assert "profile" not in yaml.safe_load(data["spec.yaml"])["stages"][1]
    assert restore(docs, tmp_path / "mounted").to_dict() == spec.to_dict()


def test_different_profiles_with_one_basename_are_rejected(custom_spec, tmp_path):
    (tmp_path / "other").mkdir()
    shutil.copy(data_dir() / "profiles" / "classification.csv", tmp_path / "other" / "my-crop.csv")

    def clash(raw):
        raw["stages"][1]["profile"] = "other/my-crop.csv"

    spec = load_spec(custom_spec(clash))
    with pytest.raises(RlscaleError, match="share the file name 'my-crop.csv'"):
        render_manifests(spec)


def test_container_runs_the_sidecar_with_the_given_flags():
    spec = load_spec("video")
    docs = render(
        spec, namespace="ml-prod", image="reg.example/rlscale:1.2", prometheus_url="http://prom.mon:9090",
        policy="ppo", interval_s=5, metrics_port=9500,
    )  # fmt: skip
    c = container(docs)
    assert c["name"] == "rlscale"
    assert c["image"] == "reg.example/rlscale:1.2"
    assert c["command"] == ["rlscale"]
    args = c["args"]
    assert args[0] == "sidecar"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags == {
        "--spec": "/etc/rlscale/spec.yaml",
        "--prometheus": "http://prom.mon:9090",
        "--namespace": "ml-prod",
        "--policy": "ppo",
        "--interval": "5",
        "--metrics-address": "0.0.0.0",
        "--metrics-port": "9500",
    }
    assert c["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    for probe, path in (("readinessProbe", "/metrics"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path
        assert c[probe]["httpGet"]["port"] in ("metrics", 9500)
    template = by_kind(docs, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9500"
    assert template["spec"]["terminationGracePeriodSeconds"] > 5


def test_yaml_is_plain_and_readable():
    text = render_manifests(load_spec("video"))
    assert not re.search(r"[&*]id\d+", text), "anchors/aliases confuse readers and some tools"
    assert "  spec.yaml: |\n    # generated by" in text  # the spec stays readable in `kubectl get configmap -o yaml`


def test_interval_flag_only_when_given():
    assert "--interval" not in container(render(load_spec("video")))["args"]


def test_container_is_locked_down():
    docs = render(load_spec("nlp"))
    deployment = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    c = container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == RUN_AS_UID > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/rlscale"]["readOnly"] is True
    tmp_volume = mounts["/tmp"]["name"]
    assert {"name": tmp_volume, "emptyDir": {}} in deployment["spec"]["template"]["spec"]["volumes"]


def test_changed_spec_changes_the_pod_template(custom_spec):
    first = by_kind(render(load_spec(custom_spec())), "Deployment")

    def tighter(raw):
        raw["sla_s"] = 5.0

    second = by_kind(render(load_spec(custom_spec(tighter))), "Deployment")
    assert first["spec"]["template"] != second["spec"]["template"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"namespace": "Prod"}, "namespace 'Prod' is not a Kubernetes DNS label"),
        ({"namespace": "ml_prod"}, "not a Kubernetes DNS label"),
        ({"namespace": "-ml"}, "not a Kubernetes DNS label"),
        ({"namespace": "a" * 64}, "not a Kubernetes DNS label"),
        ({"metrics_port": 0}, "metrics port must be an integer in 1..65535"),
        ({"metrics_port": 65536}, "metrics port"),
        ({"interval_s": 0.0}, "interval must be a positive number"),
        ({"interval_s": float("nan")}, "interval must be a positive number"),
        ({"prometheus_url": "prom:9090"}, "must start with http:// or https://"),
        ({"image": " "}, "image must not be empty"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(RlscaleError, match=re.escape(message)):
        render_manifests(load_spec("video"), **kwargs)


def test_pipeline_name_must_make_a_kubernetes_name(custom_spec):
    def rename(raw):
        raw["name"] = "Video_Pipeline"

    with pytest.raises(RlscaleError, match="pipeline name"):
        render_manifests(load_spec(custom_spec(rename)))


def test_dockerfile_matches_the_manifest():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines[0].startswith("#") or lines[0].startswith("FROM")
    assert "FROM python:3.11-slim" in lines
    uids = {int(u) for line in lines for u in re.findall(r"--uid (\d+)", line)}
    assert uids == {RUN_AS_UID}
    (user,) = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] == str(RUN_AS_UID)

    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    locked = [i for i in installs if "--require-hashes" in lines[i] and "requirements/runtime.txt" in lines[i]]
    project = [i for i in installs if re.search(r"pip install (--\S+\s+)*\.(\s|$)", lines[i])]
    assert locked and project, "Dockerfile must install the runtime lock, then the project"
    assert max(locked) < min(project)
    assert all("--no-deps" in lines[i] for i in locked + project), "nothing outside the lock is resolved"
    assert not any("torch" in lines[i] for i in installs), "the sidecar image is torch-free"
    assert 'ENTRYPOINT ["rlscale"]' in lines
    assert "EXPOSE 9400" in lines


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "runs", "out"} <= ignored


# ----------------------------------------------------------------------------------- issue 11: review findings


def test_named_deployments_restrict_the_role_to_their_names(custom_spec):
    """get/patch (and the scale subresource) only on the stage Deployments; no list: names need no lookup."""
    names = {"crop": "video-crop-server", "classification": "video-classification-server"}

    def name_all(raw):
        raw["kubernetes"] = {"deployments": names}

    spec = load_spec(custom_spec(name_all))
    rules = by_kind(render(spec), "Role")["rules"]
    assert rules == rbac_rules(spec)
    assert rules == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["video-crop-server", "video-classification-server"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["video-crop-server", "video-classification-server"],
            "verbs": ["patch"],
        },
    ]


def test_a_partly_named_pipeline_keeps_list_without_resource_names(custom_spec):
    def name_one(raw):
        raw["kubernetes"] = {"deployments": {"crop": "yolo"}}

    rules = rbac_rules(load_spec(custom_spec(name_one)))
    assert all("resourceNames" not in r for r in rules)  # the labelled stage's name is known only at run time
    assert "list" in rules[0]["verbs"]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_system_namespaces_are_refused_unless_allowed(namespace, custom_spec):
    spec = load_spec("video")
    with pytest.raises(RlscaleError, match=f"{namespace}.*system namespace.*--allow-system-namespace"):
        render_manifests(spec, namespace=namespace)
    in_spec = load_spec(custom_spec(lambda raw: raw.update(kubernetes={"namespace": namespace})))
    with pytest.raises(RlscaleError, match=f"spec's kubernetes.namespace {namespace}"):
        render_manifests(in_spec, namespace="ml")
    docs = render(in_spec, namespace="ml", allow_system_namespace=True)
    assert by_kind(docs, "Role")["metadata"]["namespace"] == namespace
    assert "--allow-system-namespace" in container(docs)["args"]  # the sidecar refuses it too without the flag
    assert "--allow-system-namespace" not in container(render(spec, namespace="ml"))["args"]


@pytest.mark.parametrize(
    "kwargs",
    [{"interval_s": 1e308}, {"interval_s": 0.5}, {"interval_s": 86401}, {"window_s": 1e308}, {"window_s": 0.1}],
)
def test_interval_and_window_must_be_sane(kwargs):
    with pytest.raises(RlscaleError, match="from 1 to 86400"):
        render_manifests(load_spec("video"), **kwargs)


def test_the_largest_interval_gives_a_grace_period_of_a_day():
    pod = by_kind(render(load_spec("video"), interval_s=86400), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 86400 + 30


def test_credentials_in_a_bad_prometheus_url_are_not_repeated():
    with pytest.raises(RlscaleError) as info:
        render_manifests(load_spec("video"), prometheus_url="ftp://alice:s3cret@prom:9090")
    assert "s3cret" not in str(info.value) and "***@prom:9090" in str(info.value)
