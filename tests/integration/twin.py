"""A digital twin of a pipeline: the simulator in accelerated wall-clock time, run like a real deployment.

Test support, not part of the product (nothing under ``rlscale/`` imports it): the closed-loop tests run it.

The twin reads its configuration from the stage Deployments (as pods would: variant and batch from env vars,
cores from the CPU request, replicas from ``spec.replicas``), writes ``status.readyReplicas`` back, and exports
the standard metrics of `rlscale.kube.prometheus` on an HTTP port for Prometheus to scrape. The sidecar cannot
tell it from a real pipeline, which is what the closed-loop tests rely on.

Time runs ``speedup`` times faster than the wall clock. Counters advance by ``count / speedup`` so that
Prometheus' per-wall-second ``rate()`` reads requests per *simulated* second; latencies are simulated seconds.
A sidecar run with ``--interval I/speedup`` therefore sees the pipeline as one with interval ``I``.

Pooled stages (``max_pools > 1``) are read as the sidecar reads them (`DeploymentActuator.read`): the pools in
force are those whose Deployment has replicas and whose HTTPRoute backendRef has a weight, and the weights are
the shares the simulator's dispatcher splits the stage's requests by. Each pool's Deployment gets its own
``status``: a pool in force reports the replicas the simulator has serving for it; a *warm* pool (replicas, but
weight 0: the actuator's make-before-break) reports its replicas ready once its variant's ``startup_s`` has passed
since the twin first saw them, as pods would; a pool with 0 replicas reports 0. Limitation: when the weights then
shift to a warm pool, the simulator starts that pool's replicas afresh (it has no notion of pods warmed outside
its configuration), so the twin under-serves it for one ``startup_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from rlscale.kube.actuator import DeploymentActuator, KubeApiError
from rlscale.kube.prometheus import le_label
from rlscale.sim.cluster import Simulator
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig
from rlscale.workload import Trace

log = logging.getLogger(__name__)

STAGE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0)


class _Histogram:
    """Cumulative bucket counts with weighted observations (prometheus-client's Histogram counts each as 1)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.array(sorted(set(bounds)), dtype=float)
        self.counts = np.zeros(self.bounds.size + 1)  # last: +Inf
        self.total = 0.0

    def observe(self, values: np.ndarray, weight: float) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")  # value == bound falls in that bucket (le)
        self.counts += np.bincount(idx, minlength=self.counts.size) * weight
        self.total += float(values.sum()) * weight

    def buckets(self) -> list[tuple[str, float]]:
        cum = np.cumsum(self.counts)
        return [(le_label(b), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)] + [
            ("+Inf", float(cum[-1]))
        ]


class TwinMetrics:
    """A prometheus-client collector with the standard pipeline metrics, fed by the twin."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        names = [st.name for st in spec.stages]
        self.requests = dict.fromkeys(names, 0.0)
        self.busy_s = dict.fromkeys(names, 0.0)
        self.queue = dict.fromkeys(names, 0.0)
        self.stage_latency = {n: _Histogram((*STAGE_BUCKETS_S, spec.sla_s)) for n in names}
        self.e2e = _Histogram((*STAGE_BUCKETS_S, spec.sla_s, spec.drop_limit_s))
        self.dropped = 0.0

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = self.spec.name
        with self.lock:
            req = CounterMetricFamily("rlscale_requests", "requests arrived", labels=["pipeline", "stage"])
            busy = CounterMetricFamily("rlscale_busy_seconds", "replica-seconds serving", labels=["pipeline", "stage"])
            queue = GaugeMetricFamily("rlscale_queue_length", "requests waiting", labels=["pipeline", "stage"])
            lat = HistogramMetricFamily(
                "rlscale_request_latency_seconds", "stage latency", labels=["pipeline", "stage"]
            )
            for stage in self.requests:
                req.add_metric([p, stage], self.requests[stage])
                busy.add_metric([p, stage], self.busy_s[stage])
                queue.add_metric([p, stage], self.queue[stage])
                h = self.stage_latency[stage]
                lat.add_metric([p, stage], h.buckets(), h.total)
            e2e = HistogramMetricFamily("rlscale_e2e_latency_seconds", "end-to-end latency", labels=["pipeline"])
            e2e.add_metric([p], self.e2e.buckets(), self.e2e.total)
            dropped = CounterMetricFamily("rlscale_dropped_requests", "requests dropped", labels=["pipeline"])
            dropped.add_metric([p], self.dropped)
        yield from (req, busy, queue, lat, e2e, dropped)


@dataclass
class TwinTick:
    """What one tick simulated (for tests and logs)."""

    time_s: float
    config: PipelineConfig
    arrivals: int
    late: int
    dropped: int
    replicas_serving: tuple[int, ...]


class Twin:
    """The simulator behind Deployments and a metrics endpoint, in accelerated time.

    Args:
        spec: the pipeline.
        trace: the workload (simulated seconds).
        actuator: reads the Deployments (its API client is the twin's; it never patches them, only their status).
        initial: the configuration in force at time 0 (normally what the Deployments say).
        speedup: simulated seconds per wall-clock second.
        tick_s: simulated seconds per tick (the twin re-reads the Deployments every tick).
        seed / arrivals: as for `Simulator`.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        trace: Trace,
        actuator: DeploymentActuator,
        initial: PipelineConfig,
        *,
        speedup: float = 10.0,
        tick_s: float = 1.0,
        seed: int = 0,
        arrivals: str = "poisson",
    ) -> None:
        self.spec = spec
        self.actuator = actuator
        self.speedup = float(speedup)
        self.tick_s = float(tick_s)
        self.sim = Simulator(spec, trace, initial, seed=seed, arrivals=arrivals, interval_s=tick_s)
        self.metrics = TwinMetrics(spec)
        self.ticks: list[TwinTick] = []
        self.read_errors = 0
        self.tick_wall_s: list[float] = []  # wall-clock seconds each tick took
        self.max_lag_s = 0.0  # how far the twin fell behind its accelerated clock (0: it kept up)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self._status_written: dict[str, int | None] = {}
        self._warm_since: dict[tuple[str, str], float] = {}  # (stage, variant) -> sim time first seen warm

    # ------------------------------------------------------------------ one tick

    def tick(self) -> TwinTick:
        """Read the Deployments, simulate ``tick_s`` seconds, export what happened."""
        try:
            config, _ready = self.actuator.read()
            self.sim.apply(config)
        except KubeApiError as exc:  # keep running the last config, as pods would
            self.read_errors += 1
            log.debug("twin: cannot read the Deployments (%s); keeping %s", exc, self.sim.config)
        sim = self.sim
        t0 = sim.time_s
        m = sim.step()
        t1 = sim.time_s
        w = 1.0 / self.speedup
        fin = sim.finish_s
        with self.metrics.lock:
            for s, (st, sm) in enumerate(zip(self.spec.stages, m.stages, strict=True)):
                served = (fin[s] >= t0) & (fin[s] < t1)
                arrived = m.arrivals if s == 0 else int(np.count_nonzero((fin[s - 1] >= t0) & (fin[s - 1] < t1)))
                self.metrics.requests[st.name] += arrived * w
                self.metrics.busy_s[st.name] += sm.utilisation * sm.replicas_serving * self.tick_s * w
                self.metrics.queue[st.name] = float(sm.queue_len)
                self.metrics.stage_latency[st.name].observe(fin[s, served] - sim.stage_in_s[s, served], w)
            done = (fin[-1] >= t0) & (fin[-1] < t1)
            self.metrics.e2e.observe(fin[-1, done] - sim.entry_s[done], w)
            self.metrics.dropped += m.dropped * w
        self._write_status(m)
        tick = TwinTick(t1, sim.config, m.arrivals, m.late, m.dropped, tuple(sm.replicas_serving for sm in m.stages))
        self.ticks.append(tick)
        return tick

    def _ready_by_deployment(self, m) -> dict[str, int]:
        """Deployment name -> ready replicas to report, after the interval ``m``."""
        out: dict[str, int] = {}
        for st, sm in zip(self.spec.stages, m.stages, strict=True):
            if st.max_pools == 1:
                out[self.actuator.deployment_name(st.name)] = sm.replicas_serving
                continue
            state = self.actuator._seen_pools.get(st.name)  # what the last read found (test support may peek)
            if state is None:
                continue
            serving = {p.variant: p.replicas_serving for p in sm.pools if p.share > 0}
            for v, name in state.names.items():
                replicas, weight = state.configs[v].replicas, state.weights[v]
                key = (st.name, v)
                if replicas > 0 and weight == 0:  # warm: ready once its pods would have started
                    since = self._warm_since.setdefault(key, self.sim.time_s)
                    out[name] = replicas if self.sim.time_s - since >= st.variant(v).startup_s else 0
                    continue
                self._warm_since.pop(key, None)
                out[name] = serving.get(v, 0) if replicas > 0 else 0
        return out

    def _write_status(self, m) -> None:
        try:
            ready = self._ready_by_deployment(m)
        except KubeApiError as exc:
            log.debug("twin: cannot name the Deployments: %s", exc)
            return
        for name, n in ready.items():
            if self._status_written.get(name) == n:
                continue
            try:
                body = {"status": {"readyReplicas": n, "replicas": n, "updatedReplicas": n}}
                self.actuator.api.patch_namespaced_deployment_status(name, self.actuator.namespace, body)
                self._status_written[name] = n
            except Exception as exc:  # noqa: BLE001 - status is informative; the next tick writes it again
                log.debug("twin: cannot write status of %s: %s", name, exc)

    # ------------------------------------------------------------------ running

    def start(self, port: int, address: str = "127.0.0.1") -> None:
        """Serve the metrics on ``address:port`` and run ticks in a background thread until the trace ends."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(self.metrics)
        self._server, _ = start_http_server(port, addr=address, registry=registry)
        self._thread = threading.Thread(target=self._run, name="twin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.tick_s / self.speedup
        next_t = time.monotonic()
        while not self._stop.is_set() and not self.sim.done:
            started = time.monotonic()
            self.tick()
            self.tick_wall_s.append(time.monotonic() - started)
            next_t += period
            self.max_lag_s = max(self.max_lag_s, time.monotonic() - next_t)
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
