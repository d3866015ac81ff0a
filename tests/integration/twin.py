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

With the spec's ``in_place_resize`` on, the twin also keeps the pods (`Pods`: the ReplicaSet controller and the
kubelet, for the pipeline's Deployments). A pod template that changes is a new ReplicaSet (`Pods.replicasets`)
whose pods replace the old ones (the simulator times the rollout); ``spec.replicas`` is met by creating pods from
the template or deleting the youngest; a pod's CPU request changed through ``pods/resize`` is in force (its
``status.containerStatuses[].resources``) ``resize_s`` simulated seconds later. The cores the simulator runs a
stage (or pool) with are its pods' cores in force: when they change while the template stays, the twin changes
the serving replicas' cores in place (no rollout: they keep serving); while its pods disagree (new pods from the
template, not resized yet) the stage keeps the cores it had. Whether the server offers ``pods/resize`` at all is
the API emulator's (`tests.integration.servers.ApiServer.server_version`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from rlscale.kube.actuator import DeploymentActuator, KubeApiError
from rlscale.kube.objects import (
    LABEL_PIPELINE,
    pool_names,
    selected_pods,
    serving_container,
    template_cores,
)
from rlscale.kube.prometheus import le_label
from rlscale.sim.cluster import Simulator
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, StageConfig
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


def template_hash(deployment: dict[str, Any]) -> str:
    """The ``pod-template-hash`` of a Deployment's pod template: it changes exactly when the template does."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def pod_cores_in_force(pod: dict[str, Any], spec: PipelineSpec) -> Fraction | None:
    """The CPU request the kubelet has applied to a pod's serving container (``status.containerStatuses``)."""
    try:
        _, container = serving_container(pod, spec.kubernetes)
    except Exception:  # noqa: BLE001 - a pod without containers has no cores in force
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container.get("name"):
            return template_cores({"spec": {"containers": [status]}}, spec.kubernetes)
    return None


@dataclass
class PodsView:
    """One Deployment's pods after a `Pods.sync`: its template hash, whether the template changed in this sync (a
    rollout), and the cores its current pods run (None while they disagree, or it has none)."""

    template_hash: str
    rolled: bool
    cores: Fraction | None
    pods: int


@dataclass
class Pods:
    """The ReplicaSet controller and kubelet of the pipeline's Deployments, on the API emulator (see the module
    docstring). `sync` once per tick; ``replicasets``: Deployment -> template hashes it has had, in order."""

    spec: PipelineSpec
    actuator: DeploymentActuator
    core: Any
    replicasets: dict[str, list[str]] = field(default_factory=dict)
    created: int = 0
    deleted: int = 0
    _resizing: dict[str, tuple[Fraction, float]] = field(default_factory=dict)  # pod -> (cores wanted, since)

    def _status(self, pod: dict[str, Any], cores: Fraction) -> dict[str, Any]:
        _, container = serving_container(pod, self.spec.kubernetes)
        cpu = str(cores.numerator) if cores.denominator == 1 else f"{float(cores):g}"
        running = {"name": container.get("name"), "image": container.get("image", ""), "imageID": ""}
        running.update(ready=True, restartCount=0, resources={"requests": {"cpu": cpu}, "limits": {"cpu": cpu}})
        return {"status": {"phase": "Running", "containerStatuses": [running]}}

    def sync(self, now_s: float) -> dict[str, PodsView]:
        """Bring the pods to their Deployments (create, delete, apply resizes due by ``now_s``); per Deployment
        what it runs."""
        act, ns = self.actuator, self.actuator.namespace
        deps = act._call(act.api.list_namespaced_deployment, ns)["items"]
        pods = act._call(self.core.list_namespaced_pod, ns)["items"]
        out: dict[str, PodsView] = {}
        for dep in deps:
            meta = dep.get("metadata") or {}
            if (meta.get("labels") or {}).get(LABEL_PIPELINE) != self.spec.name:
                continue
            name, h = meta["name"], template_hash(dep)
            hashes = self.replicasets.setdefault(name, [])
            rolled = bool(hashes) and hashes[-1] != h
            if not hashes or rolled:
                hashes.append(h)
            mine = selected_pods(dep, pods)
            current = [p for p in mine if (p["metadata"].get("labels") or {}).get("pod-template-hash") == h]
            for pod in mine:  # the old ReplicaSet's pods go (the simulator times the rollout)
                if pod not in current:
                    self._delete(pod)
            want = int((dep.get("spec") or {}).get("replicas") or 0)
            for pod in sorted(current, key=lambda p: p["metadata"]["name"])[want:]:
                self._delete(pod)
                current.remove(pod)
            while len(current) < want:
                current.append(self._create(dep, h))
            in_force = {self._kubelet(pod, now_s) for pod in current}
            cores = in_force.pop() if len(in_force) == 1 else None
            out[name] = PodsView(h, rolled, cores, len(current))
        return out

    def _create(self, dep: dict[str, Any], h: str) -> dict[str, Any]:
        template = json.loads(json.dumps(dep["spec"]["template"]))
        self.created += 1
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), "pod-template-hash": h}
        name = f"{dep['metadata']['name']}-{h}-{self.created}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": template["spec"],
        }
        act = self.actuator
        act._call(self.core.create_namespaced_pod, act.namespace, pod)
        cores = template_cores(pod, self.spec.kubernetes)
        status = self._status(pod, cores)
        act._call(self.core.patch_namespaced_pod_status, name, act.namespace, status)
        return {**pod, **status}

    def _delete(self, pod: dict[str, Any]) -> None:
        self.deleted += 1
        self._resizing.pop(pod["metadata"]["name"], None)
        self.actuator._call(self.core.delete_namespaced_pod, pod["metadata"]["name"], self.actuator.namespace)

    def _kubelet(self, pod: dict[str, Any], now_s: float) -> Fraction | None:
        """The pod's cores in force at ``now_s``: a resize (desired != in force) takes ``resize_s``."""
        name = pod["metadata"]["name"]
        wanted, held = template_cores(pod, self.spec.kubernetes), pod_cores_in_force(pod, self.spec)
        if wanted is None or wanted == held:
            self._resizing.pop(name, None)
            return held
        since = self._resizing.get(name)
        if since is None or since[0] != wanted:
            since = self._resizing[name] = (wanted, now_s)
        if now_s - since[1] < self.spec.resize_s - 1e-9:
            return held
        act = self.actuator
        act._call(self.core.patch_namespaced_pod_status, name, act.namespace, self._status(pod, wanted))
        self._resizing.pop(name, None)
        return wanted


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
        self.pods: Pods | None = None
        self.resized_in_place = 0  # stage (or pool) cores changed in place in the simulator
        if spec.in_place_resize:
            import kubernetes

            self.pods = Pods(spec, actuator, kubernetes.client.CoreV1Api(actuator.api.api_client))

    # ------------------------------------------------------------------ one tick

    def tick(self) -> TwinTick:
        """Read the Deployments, simulate ``tick_s`` seconds, export what happened."""
        try:
            config, _ready = self.actuator.read()
            if self.pods is not None:
                config = self._in_place(config, self.pods.sync(self.sim.time_s))
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

    def _deployments(self, s: int) -> dict[str, str]:
        """Pool key (``""`` for a stage of one Deployment, else the variant) -> Deployment name, of stage ``s``."""
        st = self.spec.stages[s]
        if st.max_pools > 1:
            return {v: name for v, name in pool_names(self.spec, st).items()}
        return {"": self.actuator.deployment_name(st.name)}

    def _in_place(self, config: PipelineConfig, views: dict[str, PodsView]) -> PipelineConfig:
        """``config`` with each stage's (pool's) cores those its pods run; where only they changed and the template
        did not, the simulator's serving replicas change cores in place first (so `Simulator.apply` sees no
        rollout)."""
        stages = []
        for s, (old, new) in enumerate(zip(self.sim.config.stages, config.stages, strict=True)):
            deployments = self._deployments(s)
            old_pools = {(p.variant if len(deployments) > 1 else ""): p for p in old.pools}
            pools = []
            for p in new.pools:
                key = p.variant if len(deployments) > 1 else ""
                view, before = views.get(deployments.get(key, "")), old_pools.get(key)
                if view is None or before is None:
                    pools.append(p)
                    continue
                if view.cores is None or view.cores.denominator != 1:  # pods disagree: the cores stay
                    pools.append(p.with_(cores=before.cores) if not view.rolled else p)
                    continue
                cores = int(view.cores)
                same = (before.variant, before.batch) == (p.variant, p.batch)
                if same and not view.rolled and cores != before.cores:
                    self._resize_sim(s, key, cores)
                pools.append(p.with_(cores=cores))
            stages.append(StageConfig.of_pools(pools))
        return PipelineConfig(tuple(stages))

    def _resize_sim(self, s: int, key: str, cores: int) -> None:
        """Stage ``s``'s pool ``key`` serves with ``cores`` from now on, without a rollout: its live replicas keep
        serving, at the latency of the new cores."""
        stage_state = self.sim.engine.stages[s]
        pool = stage_state.pool(key)
        if pool is None:
            return
        st = self.spec.stages[s]
        for r in pool.replicas:
            if r.retire_s == math.inf:
                r.cores = cores
                r.lat = [0.0] + [st.latency.latency_s(r.variant, k, cores) for k in range(1, r.batch + 1)]
        pool.last = pool.last.with_(cores=cores)
        if pool.setting is not None:
            pool.setting = pool.setting.with_(cores=cores)
        old = self.sim.config.stages[s]
        pools = [p.with_(cores=cores) if (p.variant if stage_state.dispatched else "") == key else p for p in old.pools]
        stage = StageConfig.of_pools(pools)
        self.sim.config = PipelineConfig(tuple(stage if i == s else c for i, c in enumerate(self.sim.config.stages)))
        self.resized_in_place += 1
        log.debug("twin: stage %s pool %r now serves with %d cores (in place)", st.name, key, cores)

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
