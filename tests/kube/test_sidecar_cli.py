"""``rlscale sidecar`` and ``rlscale manifests`` from the command line: bad input and unreachable servers give
one line and a non-zero exit (the closed loop itself is in tests/integration/)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import free_port
from tests.test_cli import _assert_one_clear_line, run


def test_once_against_an_unreachable_prometheus_exits_non_zero_with_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    result = run("sidecar", "--spec", "video", "--prometheus", url, "--once", "--dry-run", "--metrics-port", "0")
    assert result.returncode == 1
    _assert_one_clear_line(result, "Prometheus at", url, "did not answer", "nothing was changed")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prometheus", "prom:9090"], "need an http(s) URL"),
        (["--prometheus", "http://127.0.0.1:1", "--interval", "0"], "--interval must be a positive number"),
        (["--prometheus", "http://127.0.0.1:1", "--metrics-port", "70000"], "--metrics-port"),
        (["--prometheus", "http://127.0.0.1:1", "--policy", "oracle"], "invalid choice: 'oracle'"),
        (["--prometheus", "http://127.0.0.1:1", "--predictor", "oracle"], "oracle predictor"),
        (["--prometheus", "http://127.0.0.1:1", "--kubeconfig", "/nonexistent/kubeconfig"], "no such file"),
    ],
)
def test_bad_sidecar_input_gives_one_line(args, needle):
    result = (
        run("sidecar", "--spec", "video", *args, "--metrics-port", "0")
        if "--metrics-port" not in args
        else (run("sidecar", "--spec", "video", *args))
    )
    _assert_one_clear_line(result, needle)


def test_missing_kubernetes_credentials_give_one_line(tmp_path):
    """No kubeconfig and no service account: one line that says what to do (Prometheus is not needed for that)."""
    url = f"http://127.0.0.1:{free_port()}"
    env_home = tmp_path / "home"
    env_home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "sidecar", "--spec", "video", "--prometheus", url, "--policy", "ipa"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(env_home), "KUBECONFIG": str(env_home / "missing")},
    )
    _assert_one_clear_line(result, "no usable Kubernetes credentials", "--kubeconfig")


def test_manifests_print_parseable_yaml_with_a_least_privilege_role():
    result = run("manifests", "--spec", "video", "--namespace", "ml", "--image", "reg.example/rlscale:1")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"]
    role = docs[1]
    verbs = {(res, v) for rule in role["rules"] for res in rule["resources"] for v in rule["verbs"]}
    assert verbs == {
        ("deployments", "get"),
        ("deployments", "list"),
        ("deployments", "patch"),
        ("deployments/scale", "patch"),
    }
    container = docs[4]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example/rlscale:1"
    assert "ppo" in container["args"]  # video has a bundled agent


def test_manifests_reject_a_bad_namespace_with_one_line():
    _assert_one_clear_line(run("manifests", "--spec", "video", "--namespace", "Bad_NS"), "namespace")
