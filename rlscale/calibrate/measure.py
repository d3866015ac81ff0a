"""Profile each stage twice with `rlscale profile`'s machinery (`rlscale.profiling`), at every batch size from 1 to
the largest a configuration uses (the simulator runs a partial batch of k at ``l(k)``), one core:

- **in-process**: the model alone, in a fresh worker pinned to the CPU its server will run on, thread pools capped
  (`rlscale.profiling.inprocess.run_point`): the service time of a batch.
- **served**: over the Open Inference Protocol against the stage's server (`rlscale.profiling.served`), the client
  on another CPU: what one request of b items costs from a client, HTTP, JSON and the server included. When
  calibrate runs the server, its process's CPU time over the batch-1 requests (``/proc``) gives the **serving
  overhead**: CPU seconds a request beyond the model (`StageProfile.overhead_s`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.calibrate.servers import StageServer
from rlscale.calibrate.settings import StageTarget
from rlscale.profiling.results import Measurement

log = logging.getLogger("rlscale.calibrate")

SERVED_TIMEOUT_S = 60.0

OVERHEAD_LOAD = "server CPU a request beyond the model's own CPU, under load (its metrics, 8 in flight)"
OVERHEAD_CPU = "server CPU a request at batch 1 (/proc) minus the model's in-process mean"
OVERHEAD_LATENCY = "served mean minus in-process mean at batch 1 (client-side latency at no load)"
OVERHEAD_NONE = "not measured (no factory to profile the model alone)"


@dataclass
class StageProfile:
    """A stage's measurements.

    Attributes:
        target: the stage.
        in_process: the model alone, one `Measurement` per batch (empty without a factory).
        served: one request of b items through the server, per batch.
        server_cpu_per_request_s: the server process's CPU seconds a request at batch 1 (None: not our server).
        under_load_overhead_s: the server process's CPU seconds a request beyond the model's own CPU, under
            load, from its metrics (`rlscale.profiling.overhead.measure_overhead`; None where it exports none).
        overhead_s: the serving cost of one request on the replica's core beyond the model (seconds; None: not
            measured).
        overhead_how: how ``overhead_s`` was measured (`OVERHEAD_CPU`, `OVERHEAD_LATENCY`, `OVERHEAD_NONE`).
        cpu: the CPU the in-process worker and the server ran on.
    """

    target: StageTarget
    in_process: list[Measurement] = field(default_factory=list)
    served: list[Measurement] = field(default_factory=list)
    server_cpu_per_request_s: float | None = None
    under_load_overhead_s: float | None = None
    overhead_s: float | None = None
    overhead_how: str = OVERHEAD_NONE
    cpu: int | None = None

    def at(self, where: str, batch: int) -> Measurement:
        """The ``in-process`` or ``served`` measurement of ``batch``."""
        points = self.in_process if where == "in-process" else self.served
        return next(m for m in points if m.batch == batch)

    def service_runs(self, where: str = "in-process") -> list[Measurement]:
        """The runs a calibrated profile's distribution is made of: ``in-process``, the model alone (the serving
        overhead apart, `overhead_s`), where profiled (else the served requests); ``served``, the served requests
        (the no-load overhead inside each)."""
        return self.in_process if where == "in-process" and self.in_process else self.served

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.target.name,
            "variant": self.target.variant,
            "factory": self.target.factory,
            "url": self.target.url,
            "cpu": self.cpu,
            "overhead_s": self.overhead_s,
            "overhead_how": self.overhead_how,
            "server_cpu_per_request_s": self.server_cpu_per_request_s,
            "under_load_overhead_s": self.under_load_overhead_s,
            "in_process": [m.to_dict() for m in self.in_process],
            "served": [m.to_dict() for m in self.served],
        }


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """While inside, the calling thread runs on ``cpu`` only (None: unchanged); its affinity is put back after."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def profile_in_process(
    target: StageTarget, cpu: int, batches: Sequence[int], warmup: int, repeats: int
) -> list[Measurement]:
    """The model alone at each batch, one core: each point in a fresh worker pinned to ``cpu``.

    Raises:
        rlscale.errors.ProfilingError: a point failed (the factory, the variant, the batch), one line.
    """
    from rlscale.profiling.inprocess import DEFAULT_POINT_TIMEOUT_S, run_point
    from rlscale.profiling.worker import PointTask

    assert target.factory is not None
    out = []
    for b in batches:
        task = PointTask(target.factory, target.variant, int(b), 1, (cpu,), int(warmup), int(repeats))
        result = run_point(task, DEFAULT_POINT_TIMEOUT_S)
        out.append(Measurement(target.variant, int(b), 1, tuple(result["samples_s"]), result["worker"]))
    return out


def profile_served(
    target: StageTarget,
    url: str,
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    client_cpu: int | None,
    server: StageServer | None = None,
) -> tuple[list[Measurement], float | None]:
    """One request of b items at each batch, from a client pinned to ``client_cpu``; with ``server`` (ours), also
    its process's CPU seconds a request at batch 1.

    Returns:
        The measurements, and the server's CPU a request at batch 1 (None without ``server``).
    """
    from rlscale.profiling.served import V2Client, input_tensor
    from rlscale.profiling.served import profile_served as measure

    client = V2Client(url, target.model_name, timeout_s=SERVED_TIMEOUT_S)
    client.check_ready()
    tensor = input_tensor(client.metadata())
    ordered = sorted(set(batches))
    out: list[Measurement] = []
    cpu_per_request = None
    with pinned(client_cpu):
        cpu0 = server.cpu_s() if server is not None else math.nan
        for m in measure(client, tensor, target.variant, ordered, 1, warmup=warmup, repeats=repeats):
            if m.batch == ordered[0] == 1 and server is not None:
                # requests at batch 1: the warm-up (the first one checked, the rest untimed) and the timed ones
                used = server.cpu_s() - cpu0
                requests = max(warmup, 1) + repeats if warmup else repeats
                cpu_per_request = used / requests if math.isfinite(used) else None
            out.append(m)
    return out, cpu_per_request


def under_load_overhead_s(target: StageTarget, url: str, metrics_url: str, client_cpu: int | None) -> float | None:
    """The server's CPU seconds a request beyond the model's own, with several in flight, from its metrics
    (`rlscale.profiling.overhead.measure_overhead`, whose under-load run this reads); None where it cannot tell (no
    metrics, or only the model's wall time: then the figure is a lower bound, and the no-load /proc one is used)."""
    from rlscale.profiling.overhead import MODEL_CPU, MetricsReader, measure_overhead
    from rlscale.profiling.served import V2Client, input_tensor

    client = V2Client(url, target.model_name, timeout_s=SERVED_TIMEOUT_S)
    with pinned(client_cpu):
        result = measure_overhead(client, input_tensor(client.metadata()), target.variant, MetricsReader(metrics_url))
    if result.under_load is None or result.model_metric != MODEL_CPU:
        log.info("%s: no serving overhead under load from %s (%s)", target.name, metrics_url, result.note)
        return None
    log.info("%s: %s", target.name, result.summary())
    return result.under_load.overhead_s


def overhead(profile: StageProfile) -> tuple[float | None, str]:
    """The serving cost of one request beyond the model, and how it was measured: the server's CPU a request under
    load beyond the model's own CPU (both from its metrics), where the server exports them; else its CPU a
    request at batch 1 and no load (our server, /proc); else the served mean minus the in-process mean at batch 1
    (a team's server: client-side, at no load); at least 0; None without an in-process profile.

    Under load first: a server's own cost a request grows with its load (the sim-to-real run of issue 28 measured
    5.35 ms a request under load against 4.02 ms at no load for resnet-tiny-20), and the simulator charges it on
    the replica's core at every load. Beyond the model's own CPU, not its in-process mean: under load the server
    batches, so the model's cost a request is not the batch-1 mean."""
    if not profile.in_process:
        return None, OVERHEAD_NONE
    model_s = profile.at("in-process", 1).mean_s
    if profile.under_load_overhead_s is not None:
        return max(0.0, profile.under_load_overhead_s), OVERHEAD_LOAD
    if profile.server_cpu_per_request_s is not None:
        return max(0.0, profile.server_cpu_per_request_s - model_s), OVERHEAD_CPU
    return max(0.0, profile.at("served", 1).mean_s - model_s), OVERHEAD_LATENCY


def profile_stage(
    target: StageTarget,
    *,
    pipeline: str,
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    client_cpu: int,
    log_path: Path,
    progress: Callable[[str], None] = lambda detail: None,
) -> StageProfile:
    """Profile one stage at ``batches`` (1 among them) in-process (with a factory) and served (its server started
    here at the largest batch, timeout 0, unless the team runs it); the overhead from both (`overhead`)."""
    batches = sorted(set(batches))
    max_batch = batches[-1]
    cpu = target.cpu if target.cpu is not None else client_cpu
    profile = StageProfile(target, cpu=cpu)
    if target.factory is not None:
        shown = ",".join(map(str, batches))
        log.info("profiling %s (%s) in-process on CPU %d, batches %s", target.name, target.variant, cpu, shown)
        profile.in_process = profile_in_process(target, cpu, batches, warmup, repeats)
        progress(f"{target.name}: profiled in-process")
    if target.served_here:
        assert target.factory is not None and target.cpu is not None
        log.info("profiling %s served (batch %d, timeout 0), client on CPU %d", target.name, max_batch, client_cpu)
        server = StageServer(
            pipeline, target.name, target.factory, target.variant, target.cpu, max_batch, 0.0, log_path
        )
        with server:
            profile.served, profile.server_cpu_per_request_s = profile_served(
                target, server.url, batches, warmup, repeats, client_cpu, server
            )
            metrics = f"http://127.0.0.1:{server.metrics_port}/metrics"
            profile.under_load_overhead_s = under_load_overhead_s(target, server.url, metrics, client_cpu)
    else:
        assert target.url is not None
        log.info("profiling %s served by %s (model %s)", target.name, target.url, target.model_name)
        profile.served, _ = profile_served(target, target.url, batches, warmup, repeats, client_cpu)
    progress(f"{target.name}: profiled served")
    profile.overhead_s, profile.overhead_how = overhead(profile)
    return profile


def capacity_rps(profiles: Sequence[StageProfile]) -> float:
    """The bottleneck stage's capacity at batch 1: 1 / the largest served p50 of one item."""
    return 1.0 / max(p.at("served", 1).p50_s for p in profiles)


def percentile(m: Measurement, q: float) -> float:
    return float(np.percentile(m.samples_s, q))
