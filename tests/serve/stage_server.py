"""A real stage server for tests: ``rlscale serve`` (MLServer) in a subprocess on 127.0.0.1, free ports, a tiny
numpy factory written beside it, readiness polled (never a fixed sleep), SIGTERM to stop.

Without MLServer (the ``serve`` extra, which ``make`` installs from the lock) the tests that need it skip, except
under ``CI=true``, where a missing server fails (as the Prometheus fixture does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rlscale.serve.local import free_port, stop_process, wait_ready

FACTORY = '''
"""Tiny numpy models for the stage runtime's tests: ``double`` and ``triple`` multiply their input."""
import os
import time

import numpy as np

VARIANTS = ("double", "triple")


def build(variant):
    factor = {"double": 2.0, "triple": 3.0}[variant]
    log = os.environ.get("TEST_BATCH_LOG")

    def model(x):
        if log:  # every batch's size, the warm-up's included
            with open(log, "a") as fh:
                fh.write(f"{len(x)}\\n")
        if (x < 0).any():
            raise ValueError("negative input")
        time.sleep(float(os.environ.get("TEST_SERVICE_S", "0")))  # a slow model: requests queue behind a batch
        return x * factor

    def make_batch(b):
        return np.ones((b, 4), dtype=np.float32)

    return model, make_batch
'''


def require_mlserver() -> None:
    """Skip (fail under CI=true) when MLServer is not installed."""
    try:
        import mlserver  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("mlserver is missing (the serve extra: make installs it from requirements/lock.txt)")
        pytest.skip("mlserver is not installed (the serve extra)")


class StageServer:
    """``rlscale serve`` with the test factory (``tinymodels:build``) in ``workdir``."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        (workdir / "tinymodels.py").write_text(FACTORY)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.batch_log = workdir / "batches.log"
        self.args = [
            *("--model", "tinymodels:build", "--host", "127.0.0.1"),
            *("--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)),
            *("--metrics-port", str(self.metrics_port)),
            *args,
        ]
        self.env = {**os.environ, "TEST_BATCH_LOG": str(self.batch_log), **(env or {})}
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rlscale.cli", "serve", *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not wait_ready(f"{self.url}/v2/health/ready", self.proc, timeout_s):  # never a fixed sleep
            self.stop()
            raise RuntimeError(f"the stage server did not become ready in {timeout_s:g} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        """SIGTERM, then wait (kill after 10 s); the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc)
        self.proc = None
        return code

    def infer(self, model: str, rows: list[list[float]], datatype: str = "FP32") -> tuple[int, dict]:
        """POST one KServe V2 request of ``rows`` (shape [n, len(row)]); (HTTP status, JSON body)."""
        body = {
            "inputs": [{"name": "x", "datatype": datatype, "shape": [len(rows), len(rows[0])], "data": sum(rows, [])}]
        }
        request = urllib.request.Request(
            f"{self.url}/v2/models/{model}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> dict[str, float]:
        """The rlscale_* samples on /metrics, by ``name{labels}`` as exposed."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line.startswith("rlscale_"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def batches(self) -> list[int]:
        """Batch sizes the model ran, in order (the first is the warm-up's 1)."""
        return [int(line) for line in self.batch_log.read_text().split()] if self.batch_log.exists() else []
