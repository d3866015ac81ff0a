"""The stage servers calibrate starts: ``rlscale serve`` on 127.0.0.1 (free ports), one process a stage, pinned to
the stage's CPU before the interpreter imports anything (every thread a library starts later inherits the
affinity), thread pools capped at one (`thread_env`). Started together, polled until ready (never a fixed
sleep), stopped with SIGTERM (killed after 10 s)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rlscale.errors import RlscaleError
from rlscale.profiling.worker import THREAD_ENV
from rlscale.serve.local import free_port, stop_process, wait_ready

log = logging.getLogger("rlscale.calibrate")

READY_TIMEOUT_S = 90.0
"""How long a server may take to answer ready (MLServer's start and the model's build)."""


def pinned_command(cpus: Sequence[int], module: str, *args: str) -> list[str]:
    """``python -m module args`` pinned to ``cpus`` before the interpreter imports anything else."""
    code = (
        "import os, runpy, sys; "
        f"os.sched_setaffinity(0, {sorted(cpus)!r}); "
        f"sys.argv = [{module!r}, *sys.argv[1:]]; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]


def thread_env(cores: int = 1) -> dict[str, str]:
    """This environment with every thread pool capped at ``cores`` (`rlscale.profiling.worker.THREAD_ENV`)."""
    return {**os.environ, **{name: str(cores) for name in THREAD_ENV}}


class StageServer:
    """One replica of a stage: ``rlscale serve`` on 127.0.0.1 pinned to ``cpu``; a context manager that starts it,
    waits until it is ready and stops it.

    Args:
        pipeline: the metrics' pipeline label.
        stage: the stage's name (the model's name on the server, the metrics' stage label).
        factory: ``MODULE:FUNCTION``.
        variant: the variant it builds.
        cpu: the CPU it is pinned to.
        batch: ``--batch``.
        batch_timeout_s: ``--batch-timeout``.
        log_path: where its output goes (appended).
    """

    def __init__(
        self,
        pipeline: str,
        stage: str,
        factory: str,
        variant: str,
        cpu: int,
        batch: int,
        batch_timeout_s: float,
        log_path: Path,
    ) -> None:
        self.pipeline, self.stage, self.factory, self.variant = pipeline, stage, factory, variant
        self.cpu, self.batch, self.batch_timeout_s, self.log_path = cpu, batch, batch_timeout_s, log_path
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> StageServer:
        """Start the process (not waiting for it)."""
        args = [
            *("serve", "--model", self.factory, "--variant", self.variant),
            *("--batch", str(self.batch), "--batch-timeout", repr(float(self.batch_timeout_s))),
            *("--pipeline", self.pipeline, "--stage", self.stage, "--host", "127.0.0.1"),
            *("--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)),
            *("--metrics-port", str(self.metrics_port)),
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                pinned_command([self.cpu], "rlscale.cli", *args),
                env=thread_env(1),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self) -> StageServer:
        """Wait until it answers ready.

        Raises:
            RlscaleError: it exited or did not get ready in time (its log's tail in the message, on one line).
        """
        assert self.proc is not None, "launch() first"
        if not wait_ready(f"{self.url}/v2/health/ready", self.proc, READY_TIMEOUT_S):
            code = self.proc.poll()
            self.stop()
            tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
            how = f"exited with {code}" if code is not None else f"was not ready within {READY_TIMEOUT_S:g} s"
            raise RlscaleError(f"stage {self.stage}: its server (rlscale serve) {how}: {tail[-600:]}")
        return self

    def start(self) -> StageServer:
        return self.launch().wait_ready()

    def stop(self) -> int | None:
        """Stop it (SIGTERM, then kill after 10 s); its exit code (None if it was not running)."""
        if self.proc is None:
            return None
        code = stop_process(self.proc)
        self.proc = None
        return code

    def __enter__(self) -> StageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far (`process_cpu_s`); NaN if unknown."""
        return process_cpu_s(self.proc.pid) if self.proc is not None else math.nan

    def metrics(self) -> dict[str, float]:
        """The runtime's ``rlscale_*`` samples by name (this stage's labels dropped; ``le`` kept for buckets); empty
        when the metrics cannot be read."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line.startswith("rlscale_"):
                key, _, value = line.rpartition(" ")
                for label in (f'pipeline="{self.pipeline}"', f'stage="{self.stage}"'):
                    key = key.replace(label + ",", "").replace("," + label, "").replace(label, "")
                try:
                    samples[key.replace("{}", "")] = float(value)
                except ValueError:
                    continue
        return samples


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has run so far: the sum over its threads of ``/proc/PID/task/TID/schedstat``
    (nanoseconds), else user + system time from ``/proc/PID/stat`` (clock ticks, 10 ms: too coarse for a few hundred
    requests of a millisecond); NaN when neither can be read."""
    try:
        total_ns = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                total_ns += int((task / "schedstat").read_text().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def start_all(servers: Sequence[StageServer]) -> None:
    """Start every server at once and wait until all are ready; on a failure the others are stopped too."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
    except BaseException:
        stop_all(servers)
        raise


def stop_all(servers: Sequence[StageServer]) -> list[int | None]:
    """Stop every server; their exit codes."""
    return [server.stop() for server in servers]


def server_summary(
    before: dict[str, float], after: dict[str, float], window_s: float, cpu_s: float = math.nan
) -> dict[str, float]:
    """What the runtime's own metrics say about a run: requests, mean server-side latency (queue + service), mean
    batch, busy share of the window, mean time per batch; and the server process's CPU share and CPU per request
    (``cpu_s``: its CPU seconds over the run)."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    n = delta("rlscale_request_latency_seconds_count")
    batches = delta("rlscale_batch_size_count")
    return {
        "requests": n,
        "server_mean_latency_s": delta("rlscale_request_latency_seconds_sum") / n if n else math.nan,
        "mean_batch": delta("rlscale_batch_size_sum") / batches if batches else math.nan,
        "busy_share": delta("rlscale_busy_seconds_total") / window_s if window_s else math.nan,
        "mean_service_s": delta("rlscale_busy_seconds_total") / batches if batches else math.nan,
        "cpu_share": cpu_s / window_s if window_s else math.nan,
        "cpu_per_request_s": cpu_s / n if n else math.nan,
    }
