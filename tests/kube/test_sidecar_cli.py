"""``rlscale sidecar`` and ``rlscale manifests`` from the command line: bad input and unreachable servers give
one line and a non-zero exit (the closed loop itself is in tests/integration/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import free_port
from tests.test_cli import _assert_one_clear_line, run


@pytest.mark.subprocess
def test_once_against_an_unreachable_prometheus_exits_non_zero_with_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    result = run("sidecar", "--spec", "video", "--prometheus", url, "--once", "--dry-run", "--metrics-port", "0")
    assert result.returncode == 1
    _assert_one_clear_line(result, "Prometheus at", url, "did not answer", "nothing was changed")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prometheus", "prom:9090"], "need an http(s) URL"),
        (["--prometheus", "http://127.0.0.1:1", "--interval", "0"], "--interval: must be >= 1"),
        (["--prometheus", "http://127.0.0.1:1", "--metrics-port", "70000"], "--metrics-port"),
        (["--prometheus", "http://127.0.0.1:1", "--policy", "oracle"], "invalid choice: 'oracle'"),
        (["--prometheus", "http://127.0.0.1:1", "--predictor", "oracle"], "oracle predictor"),
        (["--prometheus", "http://127.0.0.1:1", "--kubeconfig", "/nonexistent/kubeconfig"], "no such file"),
    ],
)
@pytest.mark.subprocess
def test_bad_sidecar_input_gives_one_line(args, needle):
    result = (
        run("sidecar", "--spec", "video", *args, "--metrics-port", "0")
        if "--metrics-port" not in args
        else (run("sidecar", "--spec", "video", *args))
    )
    _assert_one_clear_line(result, needle)


@pytest.mark.subprocess
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


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_manifests_reject_a_bad_namespace_with_one_line():
    _assert_one_clear_line(run("manifests", "--spec", "video", "--namespace", "Bad_NS"), "namespace")


# ----------------------------------------------------------------------------------- issue 11: review findings


@pytest.mark.subprocess
def test_once_never_shows_the_credentials_of_the_prometheus_url():
    host = f"127.0.0.1:{free_port()}"
    for verbose in ([], ["-v"]):
        result = run(
            *verbose, "sidecar", "--spec", "video", "--prometheus", f"http://alice:s3cret@{host}", "--once",
            "--dry-run", "--metrics-port", "0", "--policy", "ipa",
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "s3cret" not in result.stderr + result.stdout and "alice" not in result.stderr + result.stdout
        assert f"http://***@{host}" in result.stderr


@pytest.mark.subprocess
def test_the_loop_never_logs_the_credentials_of_the_prometheus_url(tmp_path):
    """The start-up line and every warning of a running sidecar name the URL without its credentials."""
    import signal
    import time

    host = f"127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
                "current-context": "c",
            }
        )
    )
    log_path = tmp_path / "sidecar.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "rlscale.cli", "-v", "sidecar", "--spec", "video",
                "--prometheus", f"http://alice:s3cret@{host}", "--kubeconfig", str(kubeconfig), "--policy", "ipa",
                "--predictor", "reactive", "--speedup", "100", "--metrics-port", "0",
            ],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while log_path.read_text().count("backing off") < 2 and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    text = log_path.read_text()
    assert "sidecar for video" in text and f"Prometheus http://***@{host}" in text, text
    assert f"Prometheus at http://***@{host} did not answer" in text, text
    assert "s3cret" not in text and "alice" not in text


@pytest.mark.parametrize(
    "args",
    [
        ["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--namespace", "kube-system"],
        ["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--namespace", "kube-node-lease"],
        ["manifests", "--spec", "video", "--namespace", "kube-system"],
        ["manifests", "--spec", "video", "--namespace", "kube-public"],
    ],
)
@pytest.mark.subprocess
def test_system_namespaces_are_refused_with_one_line(args):
    result = run(*args, "--once") if args[0] == "sidecar" else run(*args)
    assert result.returncode == 2
    _assert_one_clear_line(result, args[-1], "system namespace", "--allow-system-namespace")


@pytest.mark.subprocess
def test_system_namespaces_are_accepted_with_the_flag():
    result = run("manifests", "--spec", "video", "--namespace", "kube-system", "--allow-system-namespace")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs[1]["metadata"]["namespace"] == "kube-system"
    assert "--allow-system-namespace" in docs[4]["spec"]["template"]["spec"]["containers"][0]["args"]
    url = f"http://127.0.0.1:{free_port()}"
    result = run(
        "sidecar", "--spec", "video", "--prometheus", url, "--namespace", "kube-system", "--allow-system-namespace",
        "--once", "--metrics-port", "0", "--policy", "ipa",
    )  # fmt: skip
    assert result.returncode == 1  # past the namespace check: stopped by the unreachable Prometheus
    _assert_one_clear_line(result, "did not answer")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["manifests", "--spec", "video", "--interval", "1e308"], "--interval"),
        (["manifests", "--spec", "video", "--interval", "0.5"], "--interval"),
        (["manifests", "--spec", "video", "--window", "1e9"], "--window"),
        (["manifests", "--spec", "video", "--window", "nan"], "--window"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--interval", "1e308"], "--interval"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--interval", "inf"], "--interval"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--window", "0"], "--window"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--timeout", "1e308"], "--timeout"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--timeout", "0"], "--timeout"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--speedup", "1e9"], "--speedup"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--max-backoff", "inf"], "--max-backoff"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--headroom", "1e308"], "--headroom"),
        (["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:1", "--headroom", "-1"], "--headroom"),
    ],
)
@pytest.mark.subprocess
def test_numeric_flags_out_of_range_give_one_line_and_exit_2(args, needle):
    result = run(*args, "--once", "--metrics-port", "0") if args[0] == "sidecar" else run(*args)
    assert result.returncode == 2, result.stderr
    _assert_one_clear_line(result, needle)


@pytest.mark.subprocess
def test_an_explicit_agent_that_does_not_fit_the_spec_is_an_error():
    agent = str(Path(__file__).resolve().parents[2] / "agents" / "data" / "ppo_sum-qa.npz")
    result = run("sidecar", "--spec", "video", "--prometheus", f"http://127.0.0.1:{free_port()}", "--agent", agent,
                 "--once", "--metrics-port", "0")  # fmt: skip
    assert result.returncode == 2, result.stderr
    _assert_one_clear_line(result, "agent", "ppo_sum-qa.npz")


@pytest.mark.subprocess
def test_the_bundled_agent_that_does_not_fit_an_edited_spec_falls_back_to_ipa(tmp_path):
    """A spec edited from a bundled one (a stage removed): the default policy warns once and runs ipa."""
    from rlscale.spec import data_dir

    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["stages"] = raw["stages"][:1]  # the planner agents accept other batch sizes; not another shape
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}"
    result = run("sidecar", "--spec", str(path), "--prometheus", url, "--once", "--metrics-port", "0")
    assert result.returncode == 1, result.stderr  # past the policy: stopped by the unreachable Prometheus
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "the bundled agent does not fit" in lines[0] and "did not answer" in lines[1], lines
