"""What ``rlscale manifests`` ships with the sidecar (issue 14): a trained agent and a tuning in ConfigMaps,
the Prometheus credentials in a Secret; and the policies it refuses because they could not run."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.actor import load_actor, random_actor
from rlscale.kube.manifests import (
    AGENT_PATH,
    PROMETHEUS_PASSWORD_ENV,
    PROMETHEUS_USERNAME_ENV,
    SHIPPED_MAX_BYTES,
    TUNING_PATH,
    split_credentials,
)
from rlscale.kube.wiring import prometheus_auth_from_env
from rlscale.spec import data_dir, load_spec
from tests.integration.conftest import free_port
from tests.test_cli import _assert_one_clear_line, run

ROOT = Path(__file__).resolve().parents[2]
VIDEO_AGENT = ROOT / "agents" / "data" / "ppo_video.npz"
SUM_QA_AGENT = ROOT / "agents" / "data" / "ppo_sum-qa.npz"


def docs_of(result) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def by_kind(docs, kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def sidecar_container(docs) -> dict[str, Any]:
    (c,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def mount(docs, folder: Path) -> Path:
    """Write the /etc/rlscale volume as the kubelet would (each ConfigMap source and its items) into ``folder``."""
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    (mounted,) = [m for m in sidecar_container(docs)["volumeMounts"] if m["mountPath"] == "/etc/rlscale"]
    assert mounted["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounted["name"]]
    sources = volume["projected"]["sources"] if "projected" in volume else [{"configMap": volume["configMap"]}]
    for source in sources:
        ref = source["configMap"]
        cm = by_kind(docs, "ConfigMap", ref["name"])
        blobs = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        blobs |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
        items = ref.get("items") or [{"key": k, "path": k} for k in blobs]
        for item in items:
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blobs[item["key"]])
    return folder


def renamed_spec(tmp_path: Path, name: str = "speech") -> Path:
    """The video spec under a name with no bundled agent and no tuned headroom (a user's own pipeline)."""
    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.subprocess
def test_an_agent_ships_in_a_configmap_mounted_where_the_sidecar_reads_it(tmp_path):
    docs = docs_of(run("manifests", "--spec", "video", "--agent", str(VIDEO_AGENT), "--namespace", "ml"))
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
    ]
    agent_cm = by_kind(docs, "ConfigMap", "rlscale-video-agent")
    assert agent_cm["metadata"]["namespace"] == "ml"
    assert list(agent_cm["binaryData"]) == ["actor.npz"] and "data" not in agent_cm
    args = sidecar_container(docs)["args"]
    assert args[args.index("--agent") + 1] == AGENT_PATH == "/etc/rlscale/agent/actor.npz"
    assert args[args.index("--policy") + 1] == "ppo"  # --agent selects ppo, as in the sidecar

    # the pod sees the very bytes given, next to the spec, and they load as the agent of this spec
    folder = mount(docs, tmp_path / "etc-rlscale")
    shipped = folder / Path(AGENT_PATH).relative_to("/etc/rlscale")
    assert shipped.read_bytes() == VIDEO_AGENT.read_bytes()
    spec = load_spec(folder / "spec.yaml")
    load_actor(shipped).codec(spec)
    annotations = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["rlscale.io/agent-sha256"] == hashlib.sha256(VIDEO_AGENT.read_bytes()).hexdigest()


@pytest.mark.subprocess
def test_a_new_agent_restarts_the_sidecar(tmp_path):
    other = random_actor(load_spec("video"), hidden=(8,), seed=1).save(tmp_path / "actor.npz")
    first = by_kind(docs_of(run("manifests", "--spec", "video", "--agent", str(VIDEO_AGENT))), "Deployment")
    second = by_kind(docs_of(run("manifests", "--spec", "video", "--agent", str(other))), "Deployment")
    assert first["spec"]["template"] != second["spec"]["template"]


@pytest.mark.subprocess
def test_without_an_agent_the_spec_volume_is_the_plain_configmap():
    docs = docs_of(run("manifests", "--spec", "video"))
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "spec", "configMap": {"name": "rlscale-video-spec"}} in pod["volumes"]
    assert "--agent" not in sidecar_container(docs)["args"]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--agent", str(SUM_QA_AGENT)], ["sum-qa", "video"]),  # trained for another pipeline
        (["--agent", "{tmp}/missing.npz"], ["--agent", "no such file"]),
        (
            ["--agent", "{tmp}/big.npz"],
            ["--agent", "KiB", "bake it into an image", "--agent /opt/rlscale/agent/actor.npz"],
        ),
        (["--agent", "{tmp}/model.zip"], ["model.zip", "torch", "actor.npz"]),
        (["--agent", str(VIDEO_AGENT), "--policy", "ipa"], ["--agent is for the ppo and ppo-raw", "ipa"]),
        (
            ["--tuning", "{tmp}/tuning.json", "--policy", "ipa"],
            ["--tuning is for the ipa-tuned, ipa-hold and hpa-tuned"],
        ),
        (["--tuning", "{tmp}/not-json.json"], ["--tuning", "is not JSON"]),
        (["--agent", str(VIDEO_AGENT), "--tuning", "{tmp}/tuning.json"], ["different policies", "--policy"]),
    ],
)
@pytest.mark.subprocess
def test_what_cannot_ship_is_one_line_exit_2_and_nothing_printed(tmp_path, extra, needles):
    (tmp_path / "big.npz").write_bytes(b"\0" * (SHIPPED_MAX_BYTES + 1))
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as zf:
        zf.writestr("policy.pth", b"torch weights")
    (tmp_path / "tuning.json").write_text(json.dumps({"video": {"headroom": 1.3}}))
    (tmp_path / "not-json.json").write_text("headroom: 1.3\n")
    result = run("manifests", "--spec", "video", *[a.replace("{tmp}", str(tmp_path)) for a in extra])
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    _assert_one_clear_line(result, *needles)


@pytest.mark.parametrize("policy", ["ppo", "ppo-raw"])
@pytest.mark.subprocess
def test_an_agent_policy_without_an_agent_is_refused_naming_the_flag(tmp_path, policy):
    spec = renamed_spec(tmp_path)
    result = run("manifests", "--spec", str(spec), "--policy", policy)
    assert result.returncode == 2 and result.stdout == ""
    _assert_one_clear_line(result, f"policy {policy} needs an agent", "rlscale train --pipeline speech",
                           "rlscale manifests --agent")  # fmt: skip
    # the same agent, trained for it, makes it deployable
    agent = random_actor(load_spec(spec), hidden=(8,)).save(tmp_path / "run" / "actor.npz")
    docs = docs_of(run("manifests", "--spec", str(spec), "--policy", policy, "--agent", str(agent)))
    args = sidecar_container(docs)["args"]
    assert args[args.index("--policy") + 1] == policy and AGENT_PATH in args


@pytest.mark.subprocess
def test_the_sidecar_names_the_flags_that_give_it_an_agent(tmp_path):
    spec = renamed_spec(tmp_path)
    result = run("sidecar", "--spec", str(spec), "--prometheus", f"http://127.0.0.1:{free_port()}", "--policy", "ppo",
                 "--once", "--metrics-port", "0")  # fmt: skip
    assert result.returncode == 2
    _assert_one_clear_line(result, "needs an agent", "--agent RUN/actor.npz", "rlscale manifests --agent")
    result = run("sidecar", "--spec", str(spec), "--prometheus", f"http://127.0.0.1:{free_port()}", "--agent",
                 str(SUM_QA_AGENT), "--once", "--metrics-port", "0")  # fmt: skip
    assert result.returncode == 2
    _assert_one_clear_line(result, "sum-qa", "--agent RUN/actor.npz", "rlscale manifests --agent")


@pytest.mark.subprocess
def test_ipa_tuned_without_a_tuning_for_the_pipeline_is_refused_naming_the_flag(tmp_path):
    spec = renamed_spec(tmp_path)
    result = run("manifests", "--spec", str(spec), "--policy", "ipa-tuned")
    assert result.returncode == 2 and result.stdout == ""
    _assert_one_clear_line(result, "no tuned ipa headroom", "rlscale manifests --tuning")
    assert run("manifests", "--spec", "video", "--policy", "ipa-tuned").returncode == 0  # bundled tuning


@pytest.mark.subprocess
def test_a_tuning_ships_in_a_configmap_and_selects_ipa_tuned(tmp_path):
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({"speech": {"headroom": 1.3}}))
    docs = docs_of(run("manifests", "--spec", str(renamed_spec(tmp_path)), "--tuning", str(tuning)))
    cm = by_kind(docs, "ConfigMap", "rlscale-speech-tuning")
    assert json.loads(cm["data"]["tuning.json"]) == {"speech": {"headroom": 1.3}}
    args = sidecar_container(docs)["args"]
    assert args[args.index("--tuning") + 1] == TUNING_PATH
    assert args[args.index("--policy") + 1] == "ipa-tuned"
    folder = mount(docs, tmp_path / "etc-rlscale")
    assert (folder / "tuning" / "tuning.json").read_bytes() == tuning.read_bytes()
    assert (folder / "spec.yaml").exists()


@pytest.mark.subprocess
def test_a_default_ppo_whose_bundled_agent_does_not_fit_renders_ipa(tmp_path):
    """A spec edited from a bundled one (a stage removed: the agent observes another shape): the sidecar's default
    would fall back to ipa, so the manifests say ipa (an explicit --policy ppo is refused: it would crash-loop)."""
    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["stages"] = raw["stages"][:1]  # the planner agents accept other batch sizes; not another shape
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run("manifests", "--spec", str(path))
    args = sidecar_container(docs_of(result))["args"]
    assert args[args.index("--policy") + 1] == "ipa"
    assert "does not fit" in result.stderr
    refused = run("manifests", "--spec", str(path), "--policy", "ppo")
    assert refused.returncode == 2 and refused.stdout == ""
    _assert_one_clear_line(refused, "rlscale manifests --agent")


# ------------------------------------------------------------------------------ Prometheus credentials


@pytest.mark.subprocess
def test_prometheus_credentials_go_into_a_secret_never_into_the_args():
    docs = docs_of(run("manifests", "--spec", "video", "--prometheus", "https://alice:pw%40x9q@prom.example:9443/p"))
    c = sidecar_container(docs)
    assert not any("alice" in a or "x9q" in a for a in c["args"])
    assert c["args"][c["args"].index("--prometheus") + 1] == "https://prom.example:9443/p"
    secret = by_kind(docs, "Secret")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["stringData"] == {"username": "alice", "password": "pw@x9q"}  # percent-decoded
    env = {e["name"]: e for e in c["env"]}
    for var, key in ((PROMETHEUS_USERNAME_ENV, "username"), (PROMETHEUS_PASSWORD_ENV, "password")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": key}
    text = yaml.safe_dump(by_kind(docs, "Deployment"))
    assert "x9q" not in text and "alice" not in text
    # without credentials, no Secret and no env var
    plain = docs_of(run("manifests", "--spec", "video", "--prometheus", "http://prom:9090"))
    assert "Secret" not in [d["kind"] for d in plain]


def test_split_credentials():
    assert split_credentials("http://prom:9090") == ("http://prom:9090", None)
    assert split_credentials("http://a:b%3Ac@prom:9090/x") == ("http://prom:9090/x", ("a", "b:c"))
    with pytest.raises(Exception, match="user and a password"):
        split_credentials("http://alice@prom:9090")


def test_the_sidecar_sends_the_secret_s_credentials_as_basic_auth():
    from rlscale.kube.prometheus import PrometheusReader
    from tests.kube.fake_prometheus import FakePrometheus

    env = {PROMETHEUS_USERNAME_ENV: "alice", PROMETHEUS_PASSWORD_ENV: "s@cret"}
    auth = prometheus_auth_from_env(env)
    assert prometheus_auth_from_env({}) is None
    with pytest.raises(Exception, match=PROMETHEUS_PASSWORD_ENV):
        prometheus_auth_from_env({PROMETHEUS_USERNAME_ENV: "alice"})
    fake = FakePrometheus()
    try:
        reader = PrometheusReader(fake.url, "video", basic_auth=auth)
        assert reader.arrival_rate_rps("crop") == 20.0
        assert fake.auth[-1] == "Basic " + base64.b64encode(b"alice:s@cret").decode()
        assert "s@cret" not in repr(reader)
    finally:
        fake.stop()


@pytest.mark.subprocess
def test_a_tuning_ships_for_hpa_tuned_too(tmp_path):
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({"speech": {"hpa": {"target": 0.7}}}))
    spec = str(renamed_spec(tmp_path))
    docs = docs_of(run("manifests", "--spec", spec, "--tuning", str(tuning), "--policy", "hpa-tuned"))
    args = sidecar_container(docs)["args"]
    assert args[args.index("--policy") + 1] == "hpa-tuned" and args[args.index("--tuning") + 1] == TUNING_PATH
    refused = run("manifests", "--spec", spec, "--tuning", str(tmp_path / "none.json"), "--policy", "hpa-tuned")
    assert refused.returncode == 2 and refused.stdout == ""
