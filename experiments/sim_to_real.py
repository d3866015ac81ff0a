"""Sim-to-real, measured (issue 18, item 3): a real two-stage pipeline served by ``rlscale serve`` on this machine
against the simulator with profiles measured by ``rlscale profile`` on the same machine.

The pipeline: stage 1 ``resnet-tiny-20`` (torch, `rlscale.examples.resnet`) on CPU 0, stage 2 ``mlp-512`` (numpy,
`rlscale.examples.mlp`) on CPU 1; one replica per stage, one core each (two cores in all), every replica one
``rlscale serve`` process on 127.0.0.1 (free ports) pinned to its CPU before anything is imported, with the thread
pools capped at one (``OMP/MKL/OPENBLAS_NUM_THREADS``). Stage 2 is called with a fixed image of the right shape once
stage 1 has answered: the shapes do not chain (stage 1 answers 10 logits, stage 2 takes a 3x32x32 image, as a
classifier takes a detector's crop).

Steps, all written to ``--out``:

1. **Profiles.** Each stage's variant profiled with ``rlscale profile`` in-process (a subprocess pinned to the
   stage's CPU, so the worker runs on the CPU the server will) at every batch size from 1 to the largest used (the
   simulator runs partial batches of k at ``l(k)``), and over the Open Inference Protocol (``rlscale profile --url``
   against the stage's server, the client pinned to the other CPU): what one request of b items costs from the
   client, HTTP, JSON and MLServer included. Five profiles (`PROFILES`), each a CSV per stage
   (``profile-KIND-STAGE.csv``) and a spec (``spec-KIND.yaml``): in-process or served, p99 (what ``rlscale profile``
   writes) or p50 of the same runs; and ``in-process-p50+overhead``, the in-process p50 plus, per item of the batch,
   the serving overhead measured at no load (served p50 minus in-process p50 at batch 1; `profile_latencies`).
2. **Load.** A window of a bundled trace (``--trace``, ``--window-start``, ``--window-s``), its per-second counts
   scaled (`rlscale.workload.scale_trace`) so the peak is ``utilisation`` x the bottleneck stage's capacity at batch
   1 (1 / its served p50). Arrivals are the simulator's (`rlscale.sim.arrivals.arrival_times_s`: Poisson with
   ``--seed`` by default, drawn from the same generator the simulator draws from, or even spacing in each second).
   The generator is open-loop: each request is sent when it is due whatever the earlier ones did (asyncio, aiohttp,
   bodies encoded once, no garbage collection while it measures; pinned to the last stage's CPU, out of the
   bottleneck's way), and records its send time, each stage's latency (client-side) and its end-to-end latency
   from its *due* time; its own lateness and CPU time are reported. Each configuration runs on freshly started
   servers after a 3 s warm-up on the same connections; the runtime's own metrics
   (``rlscale_request_latency_seconds``, ``rlscale_busy_seconds_total``, ``rlscale_batch_size``) and each server
   process's CPU time are read before and after.
3. **Simulated.** The same window, scaling, arrivals and seed through `rlscale.sim.runner.run_episode` with a policy
   holding the configuration (installed warm), once per profile; per-stage and end-to-end p50/p99 from the
   per-request outcomes (`rlscale.sim.metrics`).
4. **Report.** ``results.csv`` (one row per configuration, stage and source), ``results.md`` (real against simulated
   with the in-process p99 profile, the profile the issue names, and with the overhead modelled; the ratios for
   every profile; the diagnostics), ``run.json`` (the diagnostics: server-side latency and batching, server CPU,
   generator lateness and CPU, the load average) and ``sim_vs_real.png``. The markdown goes to stdout, logs to
   stderr.

``python -m experiments.sim_to_real --out experiments/results/sim-to-real`` (about 12 minutes on 2 cores;
``--quick``: two configurations of 20 s, about 2 minutes). Needs the serve extra (MLServer, which brings aiohttp) and
torch.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import OneLineParser
from rlscale.paths import atomic_write_text, output_folder
from rlscale.profiles import PROFILE_COLUMNS
from rlscale.serve.local import free_port, stop_process, wait_ready
from rlscale.sim.arrivals import arrival_times_s
from rlscale.sim.metrics import e2e_latency_s, p50_p99, stage_latency_s
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig
from rlscale.workload import Trace, load_trace, scale_trace

log = logging.getLogger("experiments.sim_to_real")

PIPELINE = "sim-to-real"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
MODELLED = "in-process-p50+overhead"
PROFILES = ("in-process-p99", "in-process-p50", "served-p99", "served-p50", MODELLED)
"""The profiles the simulator runs with: where measured (in-process, or served: a request of b items from a client
over HTTP) and which statistic; and the model of the serving overhead (`profile_latencies`)."""
HEADLINE = "in-process-p99"
"""The profile the issue names: ``rlscale profile`` in-process, ``latency_s`` = p99, as a profile CSV holds it."""
REQUEST_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Stage:
    """One stage: its model, the CPU its one replica is pinned to.

    Attributes:
        name: the stage's name (the model's name in the URL, the metrics' ``stage`` label).
        factory: ``MODULE:FUNCTION``, `rlscale serve`'s and `rlscale profile`'s factory.
        variant: the variant the factory builds.
        cpu: the CPU id the replica (and its in-process profile) runs on.
    """

    name: str
    factory: str
    variant: str
    cpu: int


STAGES = (
    Stage("detect", "rlscale.examples.resnet:build", "resnet-tiny-20", 0),
    Stage("classify", "rlscale.examples.mlp:build", "mlp-512", 1),
)


@dataclass(frozen=True)
class RunConfig:
    """One fixed configuration: batch size per stage, the batch timeout and the load.

    Attributes:
        name: a short label.
        batch: the largest batch of each stage.
        batch_timeout_s: the longest the oldest request waits for a full batch while the model is idle.
        utilisation: the window's peak as a share of the bottleneck stage's capacity at batch 1 (served p50).
    """

    name: str
    batch: tuple[int, ...]
    batch_timeout_s: float
    utilisation: float


CONFIGS = (
    RunConfig("b1", (1, 1), 0.0, 0.6),
    RunConfig("b4", (4, 4), 0.0, 0.6),
    RunConfig("b8-t5ms", (8, 8), 0.005, 0.6),
    RunConfig("b1-high", (1, 1), 0.0, 0.9),
    RunConfig("b8-high", (8, 8), 0.0, 0.9),
)
QUICK_CONFIGS = (CONFIGS[0], CONFIGS[2])


# ---------------------------------------------------------------------------------------------------------------
# servers and profiles


def pinned_command(cpus: Sequence[int], module: str, *args: str) -> list[str]:
    """``python -m module args`` pinned to ``cpus`` before the interpreter imports anything else (every thread a
    library starts later inherits the affinity)."""
    code = (
        "import os, runpy, sys; "
        f"os.sched_setaffinity(0, {sorted(cpus)!r}); "
        f"sys.argv = [{module!r}, *sys.argv[1:]]; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]


def thread_env(cores: int = 1) -> dict[str, str]:
    return {**os.environ, **{name: str(cores) for name in THREAD_ENV}}


class StageServer:
    """One replica: ``rlscale serve`` on 127.0.0.1 (free ports), pinned to the stage's CPU; a context manager that
    starts it, waits until it is ready, and stops it with SIGTERM (kill after 10 s).

    Args:
        stage: the stage.
        batch: ``--batch``.
        batch_timeout_s: ``--batch-timeout``.
        log_path: where its output goes.
    """

    def __init__(self, stage: Stage, batch: int, batch_timeout_s: float, log_path: Path) -> None:
        self.stage = stage
        self.batch = batch
        self.batch_timeout_s = batch_timeout_s
        self.log_path = log_path
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.infer_url = f"{self.url}/v2/models/{stage.name}/infer"
        self.proc: subprocess.Popen | None = None

    def start(self) -> StageServer:
        args = [
            *("serve", "--model", self.stage.factory, "--variant", self.stage.variant),
            *("--batch", str(self.batch), "--batch-timeout", repr(float(self.batch_timeout_s))),
            *("--pipeline", PIPELINE, "--stage", self.stage.name, "--host", "127.0.0.1"),
            *("--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)),
            *("--metrics-port", str(self.metrics_port)),
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                pinned_command([self.stage.cpu], "rlscale.cli", *args),
                env=thread_env(1),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not wait_ready(f"{self.url}/v2/health/ready", self.proc, READY_TIMEOUT_S):
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RlscaleError(f"stage {self.stage.name}: the server did not become ready:\n{tail}")
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc)
        self.proc = None
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far (``/proc/PID/stat``)."""
        if self.proc is None:
            return math.nan
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> StageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def metrics(self) -> dict[str, float]:
        """The runtime's ``rlscale_*`` samples by name (this stage's labels dropped; ``le`` kept for buckets)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line.startswith("rlscale_"):
                key, _, value = line.rpartition(" ")
                for label in (f'pipeline="{PIPELINE}"', f'stage="{self.stage.name}"'):
                    key = key.replace(label + ",", "").replace("," + label, "").replace(label, "")
                samples[key.replace("{}", "")] = float(value)
        return samples

    def body(self, seed: int = 0) -> bytes:
        """One request of one item, JSON-encoded once (the model's metadata gives the input's shape and datatype)."""
        with urllib.request.urlopen(f"{self.url}/v2/models/{self.stage.name}", timeout=5) as r:
            meta = json.loads(r.read())
        (tensor,) = meta["inputs"]
        shape = [1, *tensor["shape"][1:]]
        data = np.random.default_rng(seed).standard_normal(int(np.prod(shape))).astype(np.float32)
        doc = {
            "inputs": [{"name": tensor["name"], "datatype": tensor["datatype"], "shape": shape, "data": data.tolist()}]
        }
        return json.dumps(doc).encode()


def server_summary(
    before: dict[str, float], after: dict[str, float], window_s: float, cpu_s: float = math.nan
) -> dict[str, float]:
    """What the runtime's own metrics say about a run: requests, mean server-side latency (queue + service), mean
    batch, busy share of the window, mean time per batch; and the server process's CPU per request (``cpu_s``: its
    CPU seconds over the run)."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    n = delta("rlscale_request_latency_seconds_count")
    batches = delta("rlscale_batch_size_count")
    return {
        "requests": n,
        "server_mean_latency_s": delta("rlscale_request_latency_seconds_sum") / n if n else math.nan,
        "mean_batch": delta("rlscale_batch_size_sum") / batches if batches else math.nan,
        "busy_share": delta("rlscale_busy_seconds_total") / window_s,
        "mean_service_s": delta("rlscale_busy_seconds_total") / batches if batches else math.nan,
        "cpu_share": cpu_s / window_s,
        "cpu_per_request_s": cpu_s / n if n else math.nan,
    }


def rlscale_profile(cpus: Sequence[int], *args: str) -> dict[str, Any]:
    """``rlscale profile ... --json`` in a subprocess pinned to ``cpus``; its JSON document.

    Raises:
        RlscaleError: the command failed (its stderr's tail in the message).
    """
    done = subprocess.run(
        pinned_command(cpus, "rlscale.cli", "profile", *args, "--json"),
        env=thread_env(1),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RlscaleError(f"rlscale profile {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def overhead_s(points: dict[str, dict[str, list[dict[str, Any]]]], stage: str) -> float:
    """A stage's serving overhead per request at no load: served p50 minus in-process p50 of one item (HTTP, JSON,
    MLServer and the client), at least 0."""
    one = [next(p["p50_s"] for p in points[where][stage] if p["batch"] == 1) for where in ("served", "in-process")]
    return max(0.0, one[0] - one[1])


def profile_latencies(points: dict[str, dict[str, list[dict[str, Any]]]], kind: str, stage: str) -> dict[int, float]:
    """The batch latencies (seconds, by batch) of one profile (`PROFILES`) for one stage."""
    if kind == MODELLED:  # each item of a batch is one request: its serving overhead runs on the replica's core
        o = overhead_s(points, stage)
        return {p["batch"]: p["p50_s"] + p["batch"] * o for p in points["in-process"][stage]}
    where, stat = kind.rsplit("-", 1)
    return {p["batch"]: p[f"{stat}_s"] for p in points[where][stage]}


def write_profiles(
    points: dict[str, dict[str, list[dict[str, Any]]]], stages: Sequence[Stage], sources: dict[str, str], out: Path
) -> None:
    """One profile CSV (`rlscale.profiles.PROFILE_COLUMNS`) per profile kind and stage: ``profile-KIND-STAGE.csv``."""
    for kind in PROFILES:
        where = "in-process" if kind == MODELLED else kind.rsplit("-", 1)[0]
        stat = "p50" if kind == MODELLED else kind.rsplit("-", 1)[1]
        source = sources[where].replace(" p99 of ", f" {stat} of ")
        if kind == MODELLED:
            source += " + batch x (served p50 - in-process p50 at batch 1)"
        for stage in stages:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(PROFILE_COLUMNS)
            for batch, latency in sorted(profile_latencies(points, kind, stage.name).items()):
                writer.writerow(
                    [stage.variant, batch, 1, f"{latency:.6g}", source, "measured" if kind != MODELLED else "derived"]
                )
            atomic_write_text(out / f"profile-{kind}-{stage.name}.csv", text.getvalue())


def profile_stages(
    stages: Sequence[Stage], max_batch: int, out: Path, repeats: int = 100
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Profile every stage in-process and served at batches 1..``max_batch`` (module docstring, step 1); writes the
    profile CSVs and ``profiles.json``. Returns the points by where (``in-process``, ``served``) and stage."""
    batches = ",".join(str(b) for b in range(1, max_batch + 1))
    points: dict[str, dict[str, list[dict[str, Any]]]] = {"in-process": {}, "served": {}}
    sources: dict[str, str] = {}
    tmp = out / ".profile.csv"
    for stage in stages:
        log.info("profiling %s (%s) in-process on CPU %d", stage.name, stage.variant, stage.cpu)
        doc = rlscale_profile(
            [stage.cpu],
            *("--model", stage.factory, "--variants", stage.variant, "--batch", batches, "--cores", "1"),
            *("--repeats", str(repeats), "--out", str(tmp)),
        )
        points["in-process"][stage.name] = doc["points"]
        sources["in-process"] = doc["source"]
    for stage in stages:
        other = [s.cpu for s in stages if s.cpu != stage.cpu] or [stage.cpu]
        log.info("profiling %s served (batch %d, timeout 0), client on CPU %d", stage.name, max_batch, other[0])
        with StageServer(stage, max_batch, 0.0, out / "servers.log") as server:
            doc = rlscale_profile(
                other[:1],
                *("--url", server.url, "--model-name", stage.name, "--variant", stage.variant),
                *("--batch", batches, "--cores", "1", "--repeats", str(repeats), "--out", str(tmp)),
            )
        points["served"][stage.name] = doc["points"]
        sources["served"] = doc["source"].split(" model ")[0] + " (rlscale serve on 127.0.0.1)"
    tmp.unlink(missing_ok=True)
    write_profiles(points, stages, sources, out)
    atomic_write_text(out / "profiles.json", json.dumps(points, indent=1, default=float) + "\n")
    return points


def write_specs(stages: Sequence[Stage], batch_sizes: Sequence[int], out: Path) -> dict[str, Path]:
    """One spec per profile (`PROFILES`): the two stages, SLA 1 s, nothing dropped before 30 s, 2 cores."""
    import yaml

    paths = {}
    for kind in PROFILES:
        doc = {
            "name": PIPELINE,
            "description": f"{' -> '.join(s.variant for s in stages)} on this machine; profile {kind}",
            "sla_s": 1.0,
            "drop_limit_s": 30.0,
            "interval_s": 10.0,
            "batch_timeout_s": 0.0,
            "core_budget": len(stages),
            "objective": {"alpha": 1.0, "beta": 0.01, "gamma": 0.0, "accuracy_method": "product"},
            "stages": [
                {
                    "name": s.name,
                    "task": s.name,
                    "profile": f"profile-{kind}-{s.name}.csv",
                    "batch_sizes": sorted(set(batch_sizes)),
                    "cores": [1],
                    "min_replicas": 1,
                    "max_replicas": 1,
                    "variants": [{"name": s.variant, "accuracy": 0.5, "startup_s": 0.0}],
                }
                for s in stages
            ],
        }
        paths[kind] = atomic_write_text(out / f"spec-{kind}.yaml", yaml.safe_dump(doc, sort_keys=False))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# load


def window_trace(name: str, start_s: int, window_s: int, peak_rps: float) -> Trace:
    """Seconds ``[start_s, start_s + window_s)`` of a trace, scaled so that its peak is ``peak_rps``."""
    base = load_trace(name)
    rps = base.rps[start_s : start_s + window_s]
    if rps.size < window_s or rps.max() <= 0:
        raise RlscaleError(f"trace {name}: no {window_s} s window with load from second {start_s}")
    window = Trace(name=f"{name}[{start_s}:{start_s + window_s}]", rps=rps.copy(), description=base.description)
    return scale_trace(window, peak_rps / float(rps.max()))


def schedule_s(trace: Trace, arrivals: str, seed: int) -> np.ndarray:
    """Arrival times of the window: what the simulator draws for ``seed`` (`rlscale.sim.cluster.Simulator` draws
    the request table first from ``default_rng(seed)``)."""
    times, _ = arrival_times_s(trace.rps, arrivals, np.random.default_rng(seed))
    return times


@dataclass
class LoadResult:
    """What the open-loop generator measured, per request (seconds; NaN where a stage did not answer).

    Attributes:
        scheduled_s: when each request was due, from the run's start.
        lateness_s: its send time minus its due time.
        stage_s: per stage, client-side latency (send to full answer), shape (stages, requests).
        stage_end_s: per stage, when the answer was complete, from the run's start.
        e2e_s: last answer minus the *due* time.
        errors: per request, the first error ("" if none).
        cpu_s: the generator's CPU time (user + system) over the run.
        wall_s: the run's wall time.
    """

    scheduled_s: np.ndarray
    lateness_s: np.ndarray
    stage_s: np.ndarray
    stage_end_s: np.ndarray
    e2e_s: np.ndarray
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0


async def _phase(session: Any, urls: Sequence[str], bodies: Sequence[bytes], times: np.ndarray, lead_s: float):
    """One open-loop phase on an open session: a request per time in ``times`` (seconds from now + ``lead_s``)."""
    import aiohttp

    n, k = times.size, len(urls)
    sent = np.full(n, np.nan)
    stage_s = np.full((k, n), np.nan)
    stage_end = np.full((k, n), np.nan)
    errors = [""] * n
    headers = {"Content-Type": "application/json"}
    clock = time.monotonic
    start = clock() + lead_s

    async def one(i: int) -> None:
        sent[i] = clock() - start
        try:
            for s in range(k):
                t = clock()
                async with session.post(urls[s], data=bodies[s], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[i] = f"stage {s}: HTTP {r.status}"
                        return
                end = clock()
                stage_s[s, i] = end - t
                stage_end[s, i] = end - start
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"

    tasks = []
    for i, due in enumerate(times):
        delay = start + float(due) - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return LoadResult(
        scheduled_s=times,
        lateness_s=sent - times,
        stage_s=stage_s,
        stage_end_s=stage_end,
        e2e_s=stage_end[-1] - times,
        errors=errors,
    )


async def _drive(
    urls: Sequence[str],
    bodies: Sequence[bytes],
    times: np.ndarray,
    lead_s: float,
    warmup: np.ndarray,
    before: Callable[[], object] | None,
) -> LoadResult:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup.size:  # on the same connections as the run (a new session's first second holds a stall)
            await _phase(session, urls, bodies, warmup, 0.0)
        if before is not None:
            await asyncio.to_thread(before)
        # no collection in the generator while it measures (as timeit): a full one pauses its event loop, which
        # would count in every answer it is reading then
        gc.collect()
        gc.disable()
        try:
            cpu0, wall0 = time.process_time(), time.monotonic()
            result = await _phase(session, urls, bodies, times, lead_s)
            result.cpu_s, result.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        finally:
            gc.enable()
    return result


def run_load(
    urls: Sequence[str],
    bodies: Sequence[bytes],
    times: np.ndarray,
    lead_s: float = 0.5,
    warmup: np.ndarray | None = None,
    before: Callable[[], object] | None = None,
) -> LoadResult:
    """Send one request per time in ``times`` (seconds from now + ``lead_s``) through the stages in order, open
    loop: stage s+1 is called when stage s has answered, each request when it is due whatever the others do.

    Args:
        warmup: times of untimed requests sent first, on the same connections (`warmup_times`).
        before: called (in a thread) between the warm-up and the run: a snapshot of the servers' metrics.
    """
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    empty = np.empty(0)
    return runner(
        _drive(urls, bodies, np.asarray(times, dtype=float), lead_s, empty if warmup is None else warmup, before)
    )


def warmup_times(rps: float = 50.0, seconds: float = 3.0) -> np.ndarray:
    """Requests at ``rps`` for ``seconds``, untimed before a run: connections, allocations, lazy initialisation."""
    return np.arange(max(1, int(rps * seconds))) / rps


# ---------------------------------------------------------------------------------------------------------------
# simulated


class FixedPolicy:
    """Holds one configuration (the policy the simulator runs for a fixed configuration)."""

    def __init__(self, config: PipelineConfig, name: str = "fixed") -> None:
        self.config = config
        self.name = name

    def decide(self, state: PipelineState) -> PipelineConfig:
        return self.config


def pipeline_config(stages: Sequence[Stage], config: RunConfig) -> PipelineConfig:
    return PipelineConfig(
        stages=tuple(StageConfig.one(s.variant, b, 1, 1) for s, b in zip(stages, config.batch, strict=True))
    )


@dataclass
class SimResult:
    """Per-request figures of one simulated run (as `LoadResult`'s: ``stage_s``, ``stage_end_s``, ``e2e_s``)."""

    stage_s: np.ndarray
    stage_end_s: np.ndarray
    e2e_s: np.ndarray
    entry_s: np.ndarray
    mean_batch: list[float]


def simulate(
    spec_path: Path, stages: Sequence[Stage], config: RunConfig, trace: Trace, arrivals: str, seed: int
) -> SimResult:
    """The window through the simulator with the configuration held (installed warm), then drained."""
    spec = load_spec(spec_path, [f"batch_timeout_s={config.batch_timeout_s!r}"])
    fixed = pipeline_config(stages, config)
    result = run_episode(spec, trace, FixedPolicy(fixed), seed=seed, arrivals=arrivals, initial=fixed)
    sim = result.simulator
    assert sim is not None
    o = sim.outcomes
    n = sim.requests.n_requests
    ids = np.arange(n)
    stage_s = np.full((len(stages), n), np.nan)
    for s in range(len(stages)):
        stage_s[s] = stage_latency_s(o, s, ids)
    e2e = e2e_latency_s(sim.requests, o, ids)
    mean_batch = [float(np.mean(o.batch_size[s][o.batch_size[s] > 0])) for s in range(len(stages))]
    return SimResult(stage_s, o.finish_s.copy(), e2e, sim.requests.entry_s.copy(), mean_batch)


# ---------------------------------------------------------------------------------------------------------------
# report


def figures(stage_s: np.ndarray, stage_end_s: np.ndarray, e2e_s: np.ndarray, window_s: float) -> list[dict]:
    """p50, p99 (seconds) and throughput (answers completed within the window / window) per stage, then end to
    end."""
    rows = []
    for s in range(stage_s.shape[0] + 1):
        values = stage_s[s] if s < stage_s.shape[0] else e2e_s
        ends = stage_end_s[min(s, stage_s.shape[0] - 1)]
        ok = values[~np.isnan(values)]
        p50, p99 = p50_p99(ok)
        rows.append(
            {
                "p50_s": p50,
                "p99_s": p99,
                "mean_s": float(ok.mean()) if ok.size else math.nan,
                "throughput_rps": float(np.count_nonzero(ends <= window_s)) / window_s,
                "answered": int(ok.size),
            }
        )
    return rows


CSV_FIELDS = (
    "config",
    "batch",
    "batch_timeout_s",
    "peak_rps",
    "mean_rps",
    "requests",
    "where",
    "source",
    "p50_s",
    "p99_s",
    "mean_s",
    "throughput_rps",
    "answered",
)


def _ms(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 1e3:.2f}"


def _ratio(sim: float, real: float) -> str:
    return "-" if not (math.isfinite(sim) and math.isfinite(real) and real > 0) else f"{sim / real:.2f}"


def markdown(rows: list[dict], stage_names: Sequence[str], runs: list[dict]) -> str:
    """The tables of the module docstring's step 4."""
    lines = []
    by = {(r["config"], r["where"], r["source"]): r for r in rows}
    configs = list(dict.fromkeys(r["config"] for r in rows))
    wheres = [*stage_names, "end-to-end"]
    lines.append(f"Real against simulated (profile `{HEADLINE}`); latencies in ms, throughput in requests/s:")
    lines.append("")
    lines.append(f"(last columns: the simulator with `{MODELLED}`, the serving overhead modelled)")
    lines.append("")
    lines.append(
        "| config | load (peak / mean rps) | where | p50 real | p50 sim | sim/real | p99 real | p99 sim | sim/real "
        "| thr. real | thr. sim | p50 modelled | sim/real | p99 modelled | sim/real |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in configs:
        for w in wheres:
            real, sim, mod = by[(c, w, "real")], by[(c, w, HEADLINE)], by[(c, w, MODELLED)]
            lines.append(
                f"| {c} | {real['peak_rps']:.0f} / {real['mean_rps']:.0f} | {w} | {_ms(real['p50_s'])} | "
                f"{_ms(sim['p50_s'])} | {_ratio(sim['p50_s'], real['p50_s'])} | {_ms(real['p99_s'])} | "
                f"{_ms(sim['p99_s'])} | {_ratio(sim['p99_s'], real['p99_s'])} | {real['throughput_rps']:.1f} | "
                f"{sim['throughput_rps']:.1f} | {_ms(mod['p50_s'])} | {_ratio(mod['p50_s'], real['p50_s'])} | "
                f"{_ms(mod['p99_s'])} | {_ratio(mod['p99_s'], real['p99_s'])} |"
            )
    lines.append("")
    lines.append("p99 sim/real for every profile (p50 sim/real in brackets):")
    lines.append("")
    lines.append("| config | where | " + " | ".join(PROFILES) + " |")
    lines.append("|---|---|" + "---|" * len(PROFILES))
    for c in configs:
        for w in wheres:
            real = by[(c, w, "real")]
            cells = [
                f"{_ratio(by[(c, w, k)]['p99_s'], real['p99_s'])} ({_ratio(by[(c, w, k)]['p50_s'], real['p50_s'])})"
                for k in PROFILES
            ]
            lines.append(f"| {c} | {w} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Diagnostics (real runs): per stage, the client-side mean latency against the runtime's own mean (arrival to "
        "answer inside the batcher) and their difference (HTTP, JSON, MLServer); mean batch real / simulated; the "
        "runtime's time per batch (busy / batches); the server process's CPU per request and its share of its core; "
        "the generator's lateness against its schedule and its CPU:"
    )
    lines.append("")
    lines.append(
        "| config | stage | client mean (ms) | server mean (ms) | outside the batcher (ms) | batch real / sim "
        "| time per batch (ms) | server CPU per request (ms) | server CPU share | lateness p50 / p99 / max (ms) "
        "| generator CPU (cores) | errors |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        for s, name in enumerate(stage_names):
            srv = run["server"][name]
            client = by[(run["config"], name, "real")]["mean_s"]
            lat = run["lateness_s"]
            lines.append(
                f"| {run['config']} | {name} | {_ms(client)} | {_ms(srv['server_mean_latency_s'])} | "
                f"{_ms(client - srv['server_mean_latency_s'])} | {srv['mean_batch']:.2f} / "
                f"{run['sim_mean_batch'][s]:.2f} | {_ms(srv['mean_service_s'])} | {_ms(srv['cpu_per_request_s'])} | "
                f"{srv['cpu_share']:.2f} | "
                f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} | {run['generator_cores']:.2f} | "
                f"{run['errors']} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], stage_names: Sequence[str], path: Path) -> Path:
    """p99 real against simulated (the in-process p99 profile, and the in-process p50 with the serving overhead) per
    configuration and stage, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["config"], r["where"], r["source"]): r for r in rows}
    configs = list(dict.fromkeys(r["config"] for r in rows))
    wheres = [*stage_names, "end-to-end"]
    sources = (("real", "real"), (HEADLINE, "sim, in-process p99 profile"), (MODELLED, "sim, p50 + serving overhead"))
    fig, axes = plt.subplots(1, len(wheres), figsize=(4.2 * len(wheres), 3.8), sharey=True)
    x = np.arange(len(configs))
    width = 0.8 / len(sources)
    for ax, w in zip(np.atleast_1d(axes), wheres, strict=True):
        for j, (source, label) in enumerate(sources):
            values = [by[(c, w, source)]["p99_s"] * 1e3 for c in configs]
            ax.bar(x + (j - (len(sources) - 1) / 2) * width, values, width, label=label)
        ax.set_xticks(x, configs, rotation=30)
        ax.set_yscale("log")
        ax.set_title(f"p99: {w}")
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("ms (log)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the experiment


@dataclass(frozen=True)
class Settings:
    """What one experiment runs (the command line's values)."""

    out: Path
    configs: tuple[RunConfig, ...] = CONFIGS
    stages: tuple[Stage, ...] = STAGES
    trace: str = "bursty"
    window_start_s: int = 360
    window_s: int = 120
    arrivals: str = "poisson"
    seed: int = 0
    repeats: int = 100
    keep_requests: bool = False
    capacity_rps: float | None = None
    """The bottleneck's capacity the loads are scaled to (None: measured, `capacity_rps`)."""


def run_config(
    settings: Settings, config: RunConfig, trace: Trace, specs: dict[str, Path]
) -> tuple[list[dict], dict[str, Any]]:
    """One configuration, real then simulated with every profile; its CSV rows and its diagnostics."""
    stages = settings.stages
    times = schedule_s(trace, settings.arrivals, settings.seed)
    log.info(
        "%s: batch %s, timeout %g s, %d requests in %d s (peak %.0f rps)",
        config.name,
        config.batch,
        config.batch_timeout_s,
        times.size,
        trace.duration_s,
        trace.peak_rps,
    )
    servers = [
        StageServer(s, b, config.batch_timeout_s, settings.out / "servers.log")
        for s, b in zip(stages, config.batch, strict=True)
    ]
    try:
        for server in servers:
            server.start()
        pids = [s.proc.pid for s in servers if s.proc is not None]
        urls = [s.infer_url for s in servers]
        bodies = [s.body(seed=i) for i, s in enumerate(servers)]
        before: list[dict[str, float]] = []
        cpu_before: list[float] = []

        def snapshot() -> None:
            before.extend(s.metrics() for s in servers)
            cpu_before.extend(s.cpu_s() for s in servers)

        # the generator on the last stage's CPU (the lightest here): never in the way of the bottleneck's server
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {stages[-1].cpu})
        try:
            load = run_load(urls, bodies, times, warmup=warmup_times(min(50.0, trace.mean_rps)), before=snapshot)
        finally:
            os.sched_setaffinity(0, affinity)
        cpu = [s.cpu_s() - c for s, c in zip(servers, cpu_before, strict=True)]
        after = [s.metrics() for s in servers]
    finally:
        codes = [s.stop() for s in servers]
    if any(code not in (0, None) for code in codes):
        log.warning("%s: server exit codes %s (servers.log)", config.name, codes)
    window = float(trace.duration_s)
    base = {
        "config": config.name,
        "batch": "/".join(map(str, config.batch)),
        "batch_timeout_s": config.batch_timeout_s,
        "peak_rps": trace.peak_rps,
        "mean_rps": trace.mean_rps,
        "requests": int(times.size),
    }
    wheres = [*(s.name for s in stages), "end-to-end"]
    rows = []
    for w, f in zip(wheres, figures(load.stage_s, load.stage_end_s, load.e2e_s, window), strict=True):
        rows.append({**base, "where": w, "source": "real", **f})
    sim_batches = {}
    for kind in PROFILES:
        sim = simulate(specs[kind], stages, config, trace, settings.arrivals, settings.seed)
        if kind == HEADLINE:
            sim_batches = sim.mean_batch
            if not np.allclose(sim.entry_s, times):
                raise RlscaleError("the simulator's arrivals differ from the generator's schedule")
        for w, f in zip(wheres, figures(sim.stage_s, sim.stage_end_s, sim.e2e_s, window), strict=True):
            rows.append({**base, "where": w, "source": kind, **f})
    late = load.lateness_s[~np.isnan(load.lateness_s)]
    errors = [e for e in load.errors if e]
    diagnostics = {
        "config": config.name,
        "settings": asdict(config),
        "server": {
            s.name: server_summary(b, a, load.wall_s, c) for s, b, a, c in zip(stages, before, after, cpu, strict=True)
        },
        "server_exit_codes": codes,
        "server_pids": pids,
        "sim_mean_batch": sim_batches,
        "lateness_s": {
            "p50": float(np.percentile(late, 50)) if late.size else math.nan,
            "p99": float(np.percentile(late, 99)) if late.size else math.nan,
            "max": float(late.max()) if late.size else math.nan,
        },
        "generator_cpu_s": load.cpu_s,
        "generator_wall_s": load.wall_s,
        "generator_cores": load.cpu_s / load.wall_s if load.wall_s else math.nan,
        "errors": len(errors),
        "first_errors": errors[:5],
    }
    if settings.keep_requests:
        write_requests(settings.out / f"requests-{config.name}.csv", load, [s.name for s in stages])
    return rows, diagnostics


def write_requests(path: Path, load: LoadResult, names: Sequence[str]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scheduled_s", "lateness_s", *(f"{n}_s" for n in names), "e2e_s", "error"])
    for i in range(load.scheduled_s.size):
        writer.writerow(
            [
                f"{load.scheduled_s[i]:.6f}",
                f"{load.lateness_s[i]:.6f}",
                *(f"{load.stage_s[s, i]:.6f}" for s in range(len(names))),
                f"{load.e2e_s[i]:.6f}",
                load.errors[i],
            ]
        )
    return atomic_write_text(path, out.getvalue())


def capacity_rps(points: dict[str, list[dict[str, Any]]]) -> float:
    """The bottleneck stage's capacity at batch 1: 1 / the largest served p50 of one item."""
    return 1.0 / max(next(p["p50_s"] for p in pts if p["batch"] == 1) for pts in points.values())


def run(settings: Settings) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """The whole experiment (module docstring); writes everything into ``settings.out``."""
    out = settings.out
    loadavg_start = _loadavg()
    max_batch = max(max(c.batch) for c in settings.configs)
    points = profile_stages(settings.stages, max_batch, out, settings.repeats)
    specs = write_specs(settings.stages, sorted({b for c in settings.configs for b in c.batch}), out)
    measured = capacity_rps(points["served"])
    capacity = settings.capacity_rps or measured
    log.info("bottleneck capacity at batch 1: %.0f rps measured (served p50), %.0f rps used", measured, capacity)
    rows: list[dict] = []
    runs: list[dict] = []
    for config in settings.configs:
        trace = window_trace(settings.trace, settings.window_start_s, settings.window_s, config.utilisation * capacity)
        config_rows, diagnostics = run_config(settings, config, trace, specs)
        rows += config_rows
        runs.append(diagnostics)
    meta = {
        "stages": [asdict(s) for s in settings.stages],
        "trace": settings.trace,
        "window": [settings.window_start_s, settings.window_start_s + settings.window_s],
        "arrivals": settings.arrivals,
        "seed": settings.seed,
        "capacity_rps_batch1_served_p50": measured,
        "capacity_rps_used": capacity,
        "loadavg_start": loadavg_start,
        "cpu": _cpu_model(),
        "loadavg_end": _loadavg(),
    }
    return rows, runs, meta


def _cpu_model() -> str:
    from rlscale.profiling.results import cpu_model

    return cpu_model()


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def write_results(out: Path, rows: list[dict], runs: list[dict], meta: dict[str, Any], stages: Sequence[Stage]) -> str:
    """``results.csv``, ``results.md``, ``run.json`` and ``sim_vs_real.png``; the markdown."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / "results.csv", text.getvalue())
    names = [s.name for s in stages]
    md = markdown(rows, names, runs)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "run.json", json.dumps({"meta": meta, "runs": runs}, indent=1, default=float) + "\n")
    plot(rows, names, out / "sim_vs_real.png")
    return md


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m experiments.sim_to_real",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--out", default="out/sim-to-real", help="output folder (default out/sim-to-real)")
    parser.add_argument("--trace", default="bursty", help="bundled trace or CSV the window is cut from (bursty)")
    parser.add_argument("--window-start", type=int, default=360, help="the window's first second (default 360)")
    parser.add_argument("--window-s", type=int, default=120, help="the window's length in seconds (default 120)")
    parser.add_argument(
        "--arrivals",
        choices=("even", "poisson"),
        default="poisson",
        help="arrival process, the simulator's: poisson (default; with even spacing and a deterministic service time "
        "the simulator has no queue below saturation) or even",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals (Poisson) and the simulator (0)")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per profile point (default 100)")
    parser.add_argument(
        "--configs", help=f"configurations to run, comma-separated (default all: {','.join(c.name for c in CONFIGS)})"
    )
    parser.add_argument(
        "--capacity-rps",
        type=float,
        help="scale the loads to this bottleneck capacity (requests/s) instead of the measured one",
    )
    parser.add_argument("--quick", action="store_true", help="two configurations, 20 s windows (a smoke run)")
    parser.add_argument("--keep-requests", action="store_true", help="also write every request (requests-*.csv)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        configs = QUICK_CONFIGS if args.quick else CONFIGS
        if args.configs:
            known = {c.name: c for c in CONFIGS}
            unknown = [n for n in args.configs.split(",") if n not in known]
            if unknown:
                raise RlscaleError(f"--configs: unknown {', '.join(unknown)}; known: {', '.join(known)}")
            configs = tuple(known[n] for n in args.configs.split(","))
        window_s = 20 if args.quick and args.window_s == 120 else args.window_s
        if not 1 <= window_s <= 3600:
            raise RlscaleError(f"--window-s must be 1..3600, got {window_s}")
        if len(os.sched_getaffinity(0)) < len({s.cpu for s in STAGES}):
            raise RlscaleError(f"needs {len({s.cpu for s in STAGES})} CPUs, this process may use fewer")
        settings = Settings(
            out=output_folder(Path(args.out)),
            configs=configs,
            trace=args.trace,
            window_start_s=args.window_start,
            window_s=window_s,
            arrivals=args.arrivals,
            seed=args.seed,
            repeats=args.repeats,
            keep_requests=args.keep_requests,
            capacity_rps=args.capacity_rps,
        )
        rows, runs, meta = run(settings)
        print(write_results(settings.out, rows, runs, meta, settings.stages))
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
