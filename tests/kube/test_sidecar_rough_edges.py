"""The sidecar's rough edges (issue 14): CPU quantities read exactly and off-spec stages, messages that name the
setting to change (API server, Prometheus path, serving container), the namespace, the batch timeout env var, and
``--once --dry-run`` without a Kubernetes API."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from rlscale.errors import PermanentError, RlscaleError
from rlscale.kube.actuator import AssumedActuator, _describe, unreachable_cause
from rlscale.kube.objects import (
    DeploymentError,
    parse_quantity,
    read_stage,
    read_stage_config,
    stage_deployment,
    starting_config,
    template_patch,
)
from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader
from rlscale.kube.wiring import SidecarLaunch, _namespace
from rlscale.spec import KubeSpec, data_dir, load_spec
from rlscale.types import PipelineConfig, StageConfig
from tests.integration.conftest import free_port
from tests.kube.fake_prometheus import FakePrometheus
from tests.test_cli import _assert_one_clear_line

VIDEO = load_spec("video")
CROP = VIDEO.stages[0]  # cores 1, 2, 4, 8


def deployment(cpu_request=None, cpu_limit=None, containers=None, **kube) -> dict:
    body = stage_deployment(VIDEO, CROP, StageConfig.one("yolov5n", 2, 3, 1), namespace="ml")
    resources = {}
    if cpu_request is not None:
        resources["requests"] = {"cpu": cpu_request}
    if cpu_limit is not None:
        resources["limits"] = {"cpu": cpu_limit}
    pod = body["spec"]["template"]["spec"]
    pod["containers"][0]["resources"] = resources
    if containers is not None:
        pod["containers"] = containers + pod["containers"]
    return body


# ------------------------------------------------------------------------------------------ CPU quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("1500m", Fraction(3, 2)),
        ("1.5", Fraction(3, 2)),
        ("0.1", Fraction(1, 10)),
        ("2000m", 2),
        ("2k", 2000),
        ("1Ki", 1024),
        ("15e-1", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        (4, 4),
    ],
)
def test_quantities_are_read_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5.5", "2 cores", "m", "1e3m", "nan", "inf", "1e999999999", "1" * 65])
def test_what_is_no_quantity_is_refused(text):
    with pytest.raises(DeploymentError, match="cannot read the quantity"):
        parse_quantity(text)


def test_a_request_of_1500m_with_a_limit_of_2_is_off_spec_not_two_cores():
    config, reason = read_stage(deployment("1500m", "2"), VIDEO.kubernetes, CROP)
    assert reason is not None
    assert "CPU request 1.5 is not one of stage crop's cores (1, 2, 4, 8)" in reason
    assert "differs from its limit 2" in reason
    assert config.cores == 2  # read as the smallest choice at or above the request: what the next apply writes


@pytest.mark.parametrize(
    ("request_", "limit", "cores", "off_spec"),
    [
        ("2", "2", 2, None),
        ("2000m", "2", 2, None),  # the same quantity, written otherwise
        ("4", None, 4, None),  # no limit: the request
        (None, "4", 4, None),  # no request: Kubernetes defaults it to the limit
        ("2", "4", 2, "differs from its limit 4"),  # a valid request, but not what the sidecar writes
        ("3", "3", 4, "CPU request 3 is not one of"),
        ("500m", "500m", 1, "CPU request 0.5 is not one of"),
        ("16", "16", 8, "CPU request 16 is not one of"),  # above every choice: the largest
    ],
)
def test_cpu_request_and_limit(request_, limit, cores, off_spec):
    config, reason = read_stage(deployment(request_, limit), VIDEO.kubernetes, CROP)
    assert config.cores == cores
    if off_spec is None:
        assert reason is None
    else:
        assert off_spec in reason and f"read as {cores} cores" in reason


def test_an_unreadable_cpu_quantity_names_the_deployment():
    with pytest.raises(DeploymentError, match="Deployment video-crop: CPU: cannot read the quantity '2 cores'"):
        read_stage_config(deployment("2 cores", "2"), VIDEO.kubernetes, CROP)


# ------------------------------------------------------------------------------------------ serving container


def test_a_first_container_that_is_not_the_model_server_is_named_with_the_setting():
    proxy = {"name": "envoy", "image": "envoy:1"}
    with pytest.raises(DeploymentError) as info:
        read_stage_config(deployment("1", "1", containers=[proxy]), VIDEO.kubernetes, CROP)
    message = str(info.value)
    for needle in ("container 'envoy'", "Deployment ml/video-crop", "kubernetes.container", "kubernetes.variant_env",
                   "MODEL_VARIANT"):  # fmt: skip
        assert needle in message, message
    # naming the server's container fixes it
    kube = KubeSpec(container="server")
    assert read_stage_config(deployment("1", "1", containers=[proxy]), kube, CROP).variant == "yolov5n"


def test_a_container_named_in_the_spec_that_does_not_exist_lists_the_containers():
    with pytest.raises(
        DeploymentError, match=r"no container 'triton' \(kubernetes.container\); its containers: 'server'"
    ):
        read_stage_config(deployment("1", "1"), KubeSpec(container="triton"), CROP)


# ------------------------------------------------------------------------------------------ batch timeout


def test_the_batch_timeout_goes_with_every_template_patch():
    body = deployment("1", "1")
    ops = template_patch(body, VIDEO.kubernetes, StageConfig.one("yolov5s", 4, 3, 2), VIDEO.batch_timeout_s)
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    j = [e["name"] for e in env].index("BATCH_TIMEOUT_S")
    assert {"op": "add", "path": f"/spec/template/spec/containers/0/env/{j}/value",
            "value": f"{VIDEO.batch_timeout_s:g}"} in ops  # fmt: skip
    # a Deployment without the variable gets it appended; a custom name is honoured
    kube = KubeSpec(batch_timeout_env="MAX_WAIT_S")
    ops = template_patch(body, kube, StageConfig.one("yolov5s", 4, 3, 2), 0.25)
    assert {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "MAX_WAIT_S", "value": "0.25"}} in ops  # fmt: skip
    assert not any("MAX_WAIT_S" in str(op) for op in template_patch(body, kube, StageConfig.one("yolov5s", 4, 3, 2)))


def test_the_batch_timeout_env_must_be_its_own(tmp_path):
    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["kubernetes"] = {"batch_timeout_env": "MAX_BATCH_SIZE"}
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RlscaleError, match="kubernetes.batch_timeout_env"):
        load_spec(path)
    raw["kubernetes"] = {"batch_timeout_env": "BATCH_WAIT"}
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).kubernetes.batch_timeout_env == "BATCH_WAIT"


# ------------------------------------------------------------------------------------------ API server messages


def test_unreachable_causes_in_words():
    import socket
    import ssl

    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

    host = "https://k8s.example:6443"
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    cases = [
        (MaxRetryError(None, "/apis", refused), "connection refused (nothing listens on k8s.example:6443)"),
        (MaxRetryError(None, "/apis", NameResolutionError("k8s.example", None, socket.gaierror(-2, "x"))),
         "DNS: cannot resolve k8s.example"),
        (MaxRetryError(None, "/apis", ssl.SSLCertVerificationError(1, "certificate verify failed")),
         "TLS: the server's certificate is not trusted"),
        (MaxRetryError(None, "/apis", TimeoutError("read timed out")), "no answer within 5s"),
    ]  # fmt: skip
    for exc, words in cases:
        assert words in unreachable_cause(exc, host, 5.0)
        message = _describe("timeout", exc, host, "kubeconfig /k, context prod", 5.0)
        assert message.startswith(f"cannot reach the Kubernetes API server at {host}: {words}")
        assert "kubeconfig /k, context prod" in message


def test_a_401_names_the_credentials_to_change():
    message = _describe("unauthorized", ApiException(status=401, reason="Unauthorized"), "https://k8s:6443",
                        "in-cluster: the pod's service account")  # fmt: skip
    assert "HTTP 401" in message and "refused the credentials" in message and "service account" in message


@pytest.mark.subprocess
def test_the_cli_names_host_cause_and_setting_when_the_api_server_refuses(tmp_path):
    fake = FakePrometheus()
    try:
        server = f"http://127.0.0.1:{free_port()}"
        kubeconfig = write_kubeconfig(tmp_path, server, namespace="ml")
        result = sidecar(fake.url, "--kubeconfig", str(kubeconfig), "--policy", "ipa", "--once")
        assert result.returncode == 1
        _assert_one_clear_line(result, f"API server at {server}", "connection refused", f"kubeconfig {kubeconfig}",
                               "context prod", "--kubeconfig")  # fmt: skip
    finally:
        fake.stop()


# ------------------------------------------------------------------------------------------ Prometheus path


def test_a_wrong_prometheus_path_names_the_url_queried_and_the_setting():
    fake = FakePrometheus()
    try:
        reader = PrometheusReader(fake.url + "/wrong", "video")
        with pytest.raises(MetricsUnavailable) as info:
            reader.arrival_rate_rps("crop")
        message = str(info.value)
        assert "HTTP 404" in message and isinstance(info.value, PermanentError)
        assert f"{fake.url}/wrong/api/v1/query does not exist" in message
        assert "--prometheus" in message and "path prefix" in message
        assert "query=" not in message  # the URL without its query string
    finally:
        fake.stop()


def test_a_plain_text_error_body_is_shown_as_text_not_bytes():
    from tests.kube.fake_prometheus import Raw

    fake = FakePrometheus(arrival_rate=Raw(b"404 page not found\n", 404))
    try:
        with pytest.raises(MetricsUnavailable) as info:
            PrometheusReader(fake.url, "video").arrival_rate_rps("crop")
        assert "HTTP 404: 404 page not found;" in str(info.value)
        assert "b'" not in str(info.value)
    finally:
        fake.stop()


# ------------------------------------------------------------------------------------------ namespace


def write_kubeconfig(folder: Path, server: str, namespace: str) -> Path:
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
                "current-context": "prod",
            }
        )
    )
    return path


def test_namespace_flag_then_spec_then_context(tmp_path):
    kubeconfig = str(write_kubeconfig(tmp_path, "http://127.0.0.1:1", namespace="from-context"))
    in_spec = load_spec(VIDEO.source, [("kubernetes.namespace=models")])
    launch = SidecarLaunch(prometheus_url="http://p:9090", kubeconfig=kubeconfig)
    assert _namespace(in_spec, launch) == ("models", "the spec's kubernetes.namespace")
    flag = SidecarLaunch(prometheus_url="http://p:9090", kubeconfig=kubeconfig, namespace="other")
    assert _namespace(in_spec, flag) == ("other", "--namespace")
    assert _namespace(VIDEO, launch)[0] == "from-context"


def test_manifests_and_sidecar_agree_on_the_namespace(tmp_path):
    """The Role lands where the sidecar, run with the rendered args, looks for the Deployments."""
    from rlscale.cli.parser import build_parser
    from rlscale.kube.manifests import render_manifests

    spec = load_spec(VIDEO.source, [("kubernetes.namespace=models")])
    docs = list(yaml.safe_load_all(render_manifests(spec, namespace="ops")))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (deployment_,) = [d for d in docs if d["kind"] == "Deployment"]
    args = build_parser().parse_args(deployment_["spec"]["template"]["spec"]["containers"][0]["args"])
    launch = SidecarLaunch(prometheus_url=args.prometheus, namespace=args.namespace, kubeconfig=None)
    assert _namespace(spec, launch)[0] == role["metadata"]["namespace"] == "models"
    # and the sidecar without --namespace reads the spec's too
    assert _namespace(spec, SidecarLaunch(prometheus_url="http://p:9090"))[0] == "models"


# ------------------------------------------------------------------------------------------ --once --dry-run


def sidecar(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "sidecar", "--spec", "video", "--prometheus", url,
         "--metrics-port", "0", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


@pytest.mark.subprocess
def test_once_dry_run_without_any_kubernetes_api_still_prints_the_decision(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "missing")}
    fake = FakePrometheus()
    try:
        result = sidecar(fake.url, "--once", "--dry-run", "--policy", "ipa", "--predictor", "reactive", env=env)
        assert result.returncode == 0, result.stderr
        decision = result.stdout.strip().splitlines()
        assert len(decision) == 1 and "load 20.0 rps" in decision[0] and "ipa" in decision[0], result.stdout
        assert "no usable Kubernetes credentials" in result.stderr
        assert f"starting configuration ({starting_config(VIDEO)})" in result.stderr
        assert "sends nothing to the API server" in result.stderr

        # an API server that refuses the connection: the same, saying why
        kubeconfig = write_kubeconfig(tmp_path, f"http://127.0.0.1:{free_port()}", namespace="ml")
        result = sidecar(fake.url, "--once", "--dry-run", "--policy", "ipa", "--kubeconfig", str(kubeconfig))
        assert result.returncode == 0, result.stderr
        assert "load 20.0 rps" in result.stdout
        assert "connection refused" in result.stderr and "starting configuration" in result.stderr
        # without --dry-run nothing is assumed
        assert sidecar(fake.url, "--once", "--policy", "ipa", "--kubeconfig", str(kubeconfig)).returncode == 1
    finally:
        fake.stop()


def test_the_assumed_actuator_reports_what_a_dry_run_would_patch():
    start = starting_config(VIDEO)
    assert start.stages[0] == StageConfig.one("yolov5n", 1, 1, 1)
    act = AssumedActuator(VIDEO, start)
    assert act.read() == (start, [None, None])
    target = PipelineConfig((start.stages[0].with_(replicas=3), start.stages[1].with_(batch=4)))
    outcome = act.apply(target)
    assert outcome.dry_run and [o.action for o in outcome.stages] == ["scaled", "rolled"]
    assert act.read()[0] == start  # nothing changes
