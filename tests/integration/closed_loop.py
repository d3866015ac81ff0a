"""The closed loop of the sidecar tests: twin (simulator in accelerated time) -> real Prometheus -> the sidecar
(the real ``rlscale sidecar`` command, in a subprocess) -> the kmock API emulator -> back into the twin.

Time: the twin runs ``SPEEDUP`` simulated seconds per wall second, and the sidecar is told so (``--speedup``):
its interval, query windows and backoff are the production defaults in pipeline seconds, run 10x faster.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.objects import GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES, pooled_stage_objects, stage_deployment
from rlscale.kube.prometheus import PrometheusReader
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig
from rlscale.workload import Trace
from tests.integration.conftest import free_port
from tests.integration.twin import Twin

ROOT = Path(__file__).resolve().parents[2]
NS = "pipeline"
SPEEDUP = 10.0

SUMMARY: list[str] = []  # printed at the end of the test run (tests/integration/conftest.py)


def step_trace(low_rps: float, high_rps: float, step_s: int, duration_s: int) -> Trace:
    rps = np.full(duration_s, float(low_rps))
    rps[step_s:] = high_rps
    return Trace(f"step {low_rps:g}->{high_rps:g} rps at {step_s}s", rps, "closed-loop test")


def stage_capacity_rps(spec: PipelineSpec, config: PipelineConfig) -> float:
    """The pipeline's throughput: its slowest stage's replicas x per-replica throughput."""
    return min(
        sc.replicas * st.latency.throughput_rps(sc.variant, sc.batch, sc.cores)
        for st, sc in zip(spec.stages, config.stages, strict=True)
    )


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value from a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def create_stage_objects(apps_api, spec: PipelineSpec, config: PipelineConfig, namespace: str = NS) -> None:
    """Create every stage's objects in the emulator, as ``kubectl apply`` of what ``rlscale manifests`` renders
    for pooled stages (`pooled_stage_objects`) and of `stage_deployment` for the others."""
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(apps_api.api_client)
    core = kubernetes.client.CoreV1Api(apps_api.api_client)
    for st, sc in zip(spec.stages, config.stages, strict=True):
        if st.max_pools == 1:
            apps_api.create_namespaced_deployment(namespace, stage_deployment(spec, st, sc, namespace=namespace))
            continue
        for obj in pooled_stage_objects(spec, st, sc, namespace=namespace):
            if obj["kind"] == "Deployment":
                apps_api.create_namespaced_deployment(namespace, obj)
            elif obj["kind"] == "Service":
                core.create_namespaced_service(namespace, obj)
            else:
                custom.create_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, namespace, HTTPROUTES, obj)


class ClosedLoop:
    """Deployments in the emulator, the twin exporting to Prometheus, and the sidecar between them."""

    def __init__(self, spec, trace, initial, prometheus, kube_api, tmp_path, seed: int = 0) -> None:
        self.spec, self.prometheus, self.kube_api, self.tmp = spec, prometheus, kube_api, tmp_path
        api = kube_api.apps_api()
        create_stage_objects(api, spec, initial)
        # the twin's actuator only reads the Deployments (the twin keeps the pods itself, `twin.Pods`)
        reading = dataclasses.replace(spec, in_place_resize=False) if spec.in_place_resize else spec
        self.twin = Twin(spec, trace, DeploymentActuator(reading, api, NS), initial, speedup=SPEEDUP, seed=seed)
        port = free_port()
        self.twin.start(port)
        prometheus.set_targets([f"127.0.0.1:{port}"])
        PrometheusReader(prometheus.url, spec.name).wait_for_data(spec.stages[0].name, timeout_s=60)
        self.kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", NS)
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = tmp_path / "sidecar.log"

    def start_sidecar(self, *extra: str, policy: str = "ipa") -> None:
        args = [
            sys.executable,
            "-m",
            "rlscale.cli",
            "sidecar",
            "--spec",
            self.spec.name,
            "--prometheus",
            self.prometheus.url,
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            NS,
            "--policy",
            policy,
            "--speedup",
            f"{SPEEDUP:g}",
            "--timeout",
            "1",
            "--max-backoff",
            "20",
            "--metrics-port",
            str(self.metrics_port),
            *extra,
        ]
        if policy == "ipa":
            args += ["--predictor", "reactive"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop_sidecar
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def sidecar_metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return parse_metrics(r.read().decode())

    def wait_for(self, predicate, timeout_s: float, poll_s: float = 0.2):
        """Poll ``predicate()`` until it returns something truthy; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the sidecar exited with {self.proc.returncode}:\n{self.log()}")
            try:
                value = predicate()
            except OSError:  # the sidecar's metrics endpoint is not up yet
                value = None
            if value:
                return value
            time.sleep(poll_s)
        return None

    def decisions(self, metrics: dict[str, float] | None = None) -> dict[str, float]:
        """Decisions by outcome, from ``metrics`` (one scrape, to compare with other series of it) or a new one."""
        m = self.sidecar_metrics() if metrics is None else metrics
        return {k.split('"')[1]: v for k, v in m.items() if k.startswith("rlscale_sidecar_decisions_total")}

    def errors(self) -> dict[str, float]:
        m = self.sidecar_metrics()
        return {k.split('"')[1]: v for k, v in m.items() if k.startswith("rlscale_sidecar_errors_total")}

    def deployed_config(self) -> PipelineConfig:
        return DeploymentActuator(self.spec, self.kube_api.apps_api(), NS).read()[0]

    def stop_sidecar(self, timeout_s: float = 20) -> int:
        """SIGTERM, as Kubernetes sends it; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self._log.close()
        return rc

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.twin.stop()
