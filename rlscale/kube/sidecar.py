"""The sidecar loop: observe (Prometheus, Deployments) -> decide (any Policy) -> project (safety) -> apply.

Every step ends in a `StepReport` instead of an exception, so a fault never crashes the loop:

| what went wrong | report | next step |
|---|---|---|
| Prometheus unreachable, slow, or no data | ``held`` (config unchanged) | after a doubling backoff, jittered |
| a load figure that is NaN, ±Inf, negative or no number | ``held``: no data, never acted on | after the same backoff |
| Kubernetes 5xx, timeout (read or patch) | ``held`` / ``failed`` | after the same backoff |
| Kubernetes 429 (``throttled``) | ``held`` / ``failed``; no further call this step | the backoff, >= Retry-After |
| Kubernetes 409 | retried at once by the actuator after a re-read | normal interval |
| Kubernetes 401, 403, 404; a Deployment the spec forbids | ``failed``, one ERROR line per new fault | next interval |
| a route that does not keep its weights (``not_kept``) | ``failed``; no pool is scaled down | next interval |

The backoff doubles from one interval up to the cap, and each wait is drawn at random from its upper part
(``jitter``; "equal jitter" by default): sidecars that fail together (one Prometheus, one API server) do not all
retry at the same instant. A 429's ``Retry-After`` is a floor on the wait, honoured up to `MAX_RETRY_AFTER_S`.

Stopping (SIGTERM, SIGINT) sets an event: the current step finishes, then the loop returns 0.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

from rlscale import control
from rlscale.interfaces import Policy
from rlscale.kube.actuator import ERROR_KINDS, ApplyOutcome, KubeApiError
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.prometheus import MetricsUnavailable
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig

log = logging.getLogger(__name__)


class StepOutcome(StrEnum):
    """What one sidecar step did (a string enum: it compares equal to its value, the metrics label)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    HELD = "held"
    FAILED = "failed"


OUTCOMES = tuple(StepOutcome)

MAX_RETRY_AFTER_S = 600.0
"""The longest ``Retry-After`` (wall seconds) honoured: the API server's own flow control asks for about 1 s, and a
header that asks for hours (a misbehaving proxy) must not park the autoscaler that long; longer is read as this."""


@dataclass(frozen=True)
class SidecarSettings:
    """How the loop runs.

    Attributes:
        interval_s: pipeline seconds between decisions.
        max_backoff_s: the longest wait after repeated temporary faults (default: 6 intervals).
        speedup: pipeline seconds per wall-clock second (1 on a real cluster; see `KubernetesCluster`).
        jitter: the part of each backoff drawn at random, 0 to 1: the wait is uniform between ``(1 - jitter) x``
            and ``x``, the doubling backoff (0.5, "equal jitter": at least half of it; 0: no jitter; 1: "full
            jitter").
    """

    interval_s: float
    max_backoff_s: float | None = None
    speedup: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    @property
    def backoff_cap_s(self) -> float:
        return self.max_backoff_s if self.max_backoff_s is not None else 6 * self.interval_s


@dataclass
class StepReport:
    """What one step did: ``outcome`` is one of `OUTCOMES`; ``temporary`` asks for a backoff, and
    ``retry_after_s`` (wall seconds, from a 429's ``Retry-After``) for a wait at least that long."""

    outcome: StepOutcome
    message: str
    temporary: bool = False
    error_kinds: list[str] = field(default_factory=list)
    config: PipelineConfig | None = None
    distance: float = 0.0
    decision_s: float = 0.0
    apply: ApplyOutcome | None = None
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        self.outcome = StepOutcome(self.outcome)  # a value of the enum, or its string (ValueError otherwise)

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, StepOutcome(value) if name == "outcome" else value)


class SidecarMetrics:
    """The sidecar's own metrics (prometheus-client), in a registry of their own.

    | metric | type | labels |
    |---|---|---|
    | ``rlscale_sidecar_decisions_total`` | counter | outcome (applied, unchanged, dry_run, held, failed) |
    | ``rlscale_sidecar_decision_seconds`` | histogram | (observe excluded: decide + project) |
    | ``rlscale_sidecar_errors_total`` | counter | kind (metrics, policy, internal, and the API's, below) |
    | ``rlscale_sidecar_projection_distance`` | gauge | (the safety layer's move, 0 when the proposal was safe) |
    | ``rlscale_sidecar_stage_replicas`` (over every pool) / ``_stage_batch`` / ``_stage_cores`` (of the pool that
      serves the most requests) | gauge | stage |
    | ``rlscale_sidecar_stage_variant`` | gauge (each variant's share: 1 for a stage's one variant) | stage, variant |
    | ``rlscale_sidecar_pool_replicas`` / ``_pool_batch`` / ``_pool_cores`` | gauge (0 for a variant not in use) |
      stage, variant |
    | ``rlscale_sidecar_last_success_timestamp_seconds`` | gauge | |

    The errors' API kinds (`rlscale.kube.actuator.ERROR_KINDS`): conflict (409), throttled (429), server (5xx),
    timeout, unauthorized (401), forbidden (403), not_found (404), invalid (other 4xx), deployment (a Deployment
    the spec does not allow), not_kept (an HTTPRoute that did not keep the weights written).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("rlscale_sidecar_decisions", "decision steps by outcome", ["outcome"], registry=r)
        self.decision_seconds = Histogram(
            "rlscale_sidecar_decision_seconds",
            "time to decide and project one configuration",
            registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.errors = Counter("rlscale_sidecar_errors", "faults by kind", ["kind"], registry=r)
        self.distance = Gauge("rlscale_sidecar_projection_distance", "safety layer's move", registry=r)
        self.replicas = Gauge("rlscale_sidecar_stage_replicas", "chosen replicas", ["stage"], registry=r)
        self.batch = Gauge("rlscale_sidecar_stage_batch", "chosen batch size", ["stage"], registry=r)
        self.cores = Gauge("rlscale_sidecar_stage_cores", "chosen cores per replica", ["stage"], registry=r)
        self.variant = Gauge(
            "rlscale_sidecar_stage_variant",
            "the share of the stage's requests each variant serves (1 for a stage's one variant)",
            ["stage", "variant"],
            registry=r,
        )
        labels = ["stage", "variant"]
        self.pool_replicas = Gauge("rlscale_sidecar_pool_replicas", "chosen replicas per pool", labels, registry=r)
        self.pool_batch = Gauge(
            "rlscale_sidecar_pool_batch", "chosen batch size per pool (0: unused)", labels, registry=r
        )
        self.pool_cores = Gauge("rlscale_sidecar_pool_cores", "chosen cores per replica per pool", labels, registry=r)
        self.last_success = Gauge(
            "rlscale_sidecar_last_success_timestamp_seconds",
            "end of the last step that decided and applied (or kept) a configuration",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.decisions.labels(outcome)
        for kind in ("metrics", "policy", "internal", *ERROR_KINDS):
            self.errors.labels(kind)

    def serve(self, port: int, address: str = "127.0.0.1", health=None):
        """Expose ``/metrics`` and ``/healthz`` over HTTP; returns the server (``shutdown()`` stops it).

        Args:
            health: returns ``(ok, reason)``; ``/healthz`` answers 200 or 503 with the reason (liveness probes).
        """
        from http.server import ThreadingHTTPServer

        from prometheus_client.exposition import MetricsHandler

        base = MetricsHandler.factory(self.registry)

        class Handler(base):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/healthz":
                    return super().do_GET()
                ok, reason = health() if health is not None else (True, "ok")
                body = f"{reason}\n".encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:  # noqa: A002 - probes every 10 s are not news
                pass

        server = ThreadingHTTPServer((address, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="sidecar-metrics", daemon=True).start()
        return server

    def record(self, report: StepReport, spec: PipelineSpec) -> None:
        self.decisions.labels(report.outcome).inc()
        for kind in report.error_kinds:
            self.errors.labels(kind).inc()
        if report.config is None:  # nothing was decided (metrics, API reads or the policy failed)
            return
        self.decision_seconds.observe(report.decision_s)
        self.distance.set(report.distance)
        if report.outcome == "failed":  # decided, but the cluster refused it: the config gauges stay as they are
            return
        self.last_success.set(time.time())
        for st, sc in zip(spec.stages, report.config.stages, strict=True):
            pools = {p.variant: p for p in sc.pools}
            main = sc.main
            self.replicas.labels(st.name).set(sc.total_replicas)
            self.batch.labels(st.name).set(main.batch)
            self.cores.labels(st.name).set(main.cores)
            for v in st.variant_names:
                pool = pools.get(v)
                self.variant.labels(st.name, v).set(pool.share if pool is not None else 0.0)
                self.pool_replicas.labels(st.name, v).set(pool.replicas if pool is not None else 0)
                self.pool_batch.labels(st.name, v).set(pool.batch if pool is not None else 0)
                self.pool_cores.labels(st.name, v).set(pool.cores if pool is not None else 0)


def _changes(old: PipelineConfig, new: PipelineConfig, names: list[str]) -> str:
    parts = [f"{n}: {a} -> {b}" for n, a, b in zip(names, old.stages, new.stages, strict=True) if a != b]
    return "; ".join(parts) if parts else "no change"


class Sidecar:
    """Runs a policy against a `KubernetesCluster`, one step per interval.

    Args:
        cluster: the pipeline on Kubernetes.
        policy: what proposes the next configuration.
        safety: the safety layer every proposal is projected through (None: apply proposals as they are).
        settings: interval, backoff, speedup.
        metrics: where to count (a fresh `SidecarMetrics` if None).
        stop: set it to stop after the current step (the CLI sets it on SIGTERM).
        rng: draws the backoff jitter (default: seeded by the OS, so sidecars started together differ).
        limits: the spec's hard limits and their state (default: fresh ones for this sidecar).
    """

    def __init__(
        self,
        cluster: KubernetesCluster,
        policy: Policy,
        safety: control.Guard | None,
        settings: SidecarSettings,
        metrics: SidecarMetrics | None = None,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        limits: control.Limits | None = None,
    ) -> None:
        self.cluster = cluster
        self.controller = control.Controller(policy, safety, limits or control.Limits(cluster.spec))
        self.settings = settings
        self.metrics = metrics or SidecarMetrics()
        self.stop = stop or threading.Event()
        self.rng = rng if rng is not None else random.Random()
        self.spec = cluster.spec
        self._names = [st.name for st in self.spec.stages]
        self._failing = 0  # consecutive steps that asked for a backoff
        self._active_faults: dict[str, str] = {}  # stage (or "metrics") -> kind, to log a fault once
        self.steps = 0
        self.last_step_end: float | None = None  # monotonic time the last step ended
        self.next_delay_s = 0.0  # pipeline seconds the loop waits after the last step
        self.timeline = None  # a rlscale.timeline.TimelineWriter (``--timeline``): one row per decision

    @property
    def policy(self) -> Policy:
        """The policy that proposes (the controller's)."""
        return self.controller.policy

    @property
    def safety(self) -> control.Guard | None:
        """The guard in front of it (the controller's)."""
        return self.controller.guard

    def health(self) -> tuple[bool, str]:
        """Alive unless the loop has not finished a step for longer than its longest planned wait allows (a
        stuck call, a dead thread): three intervals, or the backoff cap (or the wait planned now, a long
        ``Retry-After``) plus one interval, whichever is longest."""
        if self.last_step_end is None:
            return True, "starting"
        s = self.settings
        limit = max(3 * s.interval_s, max(s.backoff_cap_s, self.next_delay_s) + s.interval_s) / s.speedup
        age = time.monotonic() - self.last_step_end
        if age > limit:
            return False, f"no step finished for {age:.0f}s (limit {limit:.0f}s)"
        return True, f"last step {age:.0f}s ago"

    # ------------------------------------------------------------------ one step

    def step(self) -> StepReport:
        """Observe, decide, project, apply. Never raises for cluster or metrics faults."""
        try:
            state = self.cluster.observe()
        except MetricsUnavailable as exc:
            return StepReport(
                "held", f"holding the current config: {exc}", temporary=exc.temporary, error_kinds=["metrics"]
            )
        except KubeApiError as exc:
            return StepReport(
                "held",
                f"holding: cannot read the Deployments: {exc}",
                temporary=exc.temporary,
                error_kinds=[exc.kind],
                retry_after_s=exc.retry_after_s,
            )
        except Exception as exc:  # noqa: BLE001 - a bug or a surprise answer must not stop the autoscaler
            log.debug("unexpected error while observing", exc_info=True)  # the traceback, with -v
            return StepReport(
                "held",
                f"holding: unexpected error while observing: {type(exc).__name__}: {exc}",
                temporary=True,
                error_kinds=["internal"],
            )
        try:  # the one control step (rlscale.control): decide, guard, and apply when the configuration changes
            step = self.controller.step(self.cluster, state=state)
        except control.DecisionError as exc:  # a policy bug must not take the pipeline's autoscaler down
            log.debug("%s", exc, exc_info=exc.cause)  # the traceback, with -v
            return StepReport("failed", f"holding the current config: {exc}", error_kinds=["policy"])
        if self.timeline is not None:
            self.timeline.record_step(step)
        decision, projection = step.decision, step.decision.projection
        config, decision_s = decision.config, decision.decision_s
        distance = projection.distance if projection is not None else 0.0
        why = f"; {projection.explain()}" if projection is not None and projection.explain() else ""
        limits = decision.limits  # what the budget cap and the damping did (rlscale.control.Limits)
        if limits is not None and limits.explain():
            why += f"; {limits.explain()}"
        last = state.last
        seen = (
            f"load {last.arrivals / state.interval_s:.1f} rps, e2e p99 {last.e2e_p99_s:.2f}s, "
            f"violations {100 * last.sla_violation_rate:.1f}%, queue {state.in_flight}"
            if last is not None
            else "no metrics yet"
        )
        base = StepReport(
            "unchanged",
            "",
            config=config,
            distance=distance,
            decision_s=decision_s,
        )
        if step.applied is None:
            base.message = f"{seen}; {self.policy.name} keeps {config}{why}"
            return base
        outcome = step.applied
        if step.changed:
            change = _changes(state.config, config, self._names)
        else:  # the policy keeps the configuration; the step moved the off-spec stages to it (control.step)
            change = f"keeps {config}, correcting off-spec {', '.join(step.repaired)}"
        base.apply = outcome
        base.error_kinds = ["conflict"] * sum(o.attempts - 1 for o in outcome.stages)  # 409s retried after re-reads
        done = ", ".join(f"{o.stage} {o.action}" for o in outcome.stages if o.action != "unchanged")
        if outcome.failed:
            base.outcome = "failed"
            base.temporary = outcome.temporary_failure
            base.retry_after_s = outcome.retry_after_s
            base.error_kinds += [o.kind for o in outcome.failed if o.kind and o.kind != "conflict"]
            failed = "; ".join(f"{o.stage}: {o.kind} ({o.message})" for o in outcome.failed)
            base.message = f"{seen}; {self.policy.name} wants {change}{why}; FAILED {failed}"
            return base
        base.outcome = "dry_run" if outcome.dry_run else "applied"
        verb = "would apply (dry run)" if outcome.dry_run else "applied"
        base.message = f"{seen}; {self.policy.name}: {change}{why}; {verb}: {done}"
        return base

    # ------------------------------------------------------------------ loop

    def _log(self, report: StepReport) -> None:
        faults = {}
        if report.outcome == "held":
            kind = report.error_kinds[0] if report.error_kinds else "metrics"
            faults[{"metrics": "Prometheus", "internal": "observing"}.get(kind, "the Kubernetes API")] = kind
        if "policy" in report.error_kinds:
            faults["policy"] = "policy"
        if report.apply is not None:
            faults.update({o.stage: o.kind for o in report.apply.failed})
        new = {k: v for k, v in faults.items() if self._active_faults.get(k) != v}
        for key, kind in self._active_faults.items():
            if key not in faults:
                log.info("recovered: %s works again (after %s errors)", key, kind)
        self._active_faults = faults
        if report.outcome in ("held", "failed"):
            level = logging.ERROR if new and not report.temporary else logging.WARNING
            if new or report.temporary:
                log.log(level, "%s", report.message)
            else:
                log.debug("%s", report.message)  # the same permanent fault again: said once already
        else:
            log.info("%s", report.message)

    def delay_after(self, report: StepReport) -> float:
        """Pipeline seconds to the next step: the interval, or after temporary faults a backoff that doubles from
        one interval up to the cap, jittered (`SidecarSettings.jitter`), and never shorter than a 429's
        ``Retry-After`` (up to `MAX_RETRY_AFTER_S` of wall time)."""
        s = self.settings
        if not report.temporary:
            self._failing = 0
            return s.interval_s
        self._failing += 1
        # the exponent is capped so that a long outage never overflows the float
        ceiling_s = min(s.backoff_cap_s, s.interval_s * 2 ** min(self._failing - 1, 60))
        delay_s = ceiling_s * (1.0 - s.jitter * self.rng.random())
        if report.retry_after_s is not None:
            delay_s = max(delay_s, min(report.retry_after_s, MAX_RETRY_AFTER_S) * s.speedup)
        return delay_s

    def run_once(self) -> StepReport:
        """One step, counted in the metrics and in `health` (``--once`` runs only this)."""
        report = self.step()
        self.steps += 1
        self.last_step_end = time.monotonic()
        self.metrics.record(report, self.spec)
        return report

    def run(self) -> int:
        """Step until stopped; returns the process exit code (0)."""
        while True:
            started = time.monotonic()
            report = self.run_once()
            self._log(report)
            if self.stop.is_set():
                return 0
            delay = self.next_delay_s = self.delay_after(report)
            if report.temporary:
                wall = "" if self.settings.speedup == 1 else f" ({delay / self.settings.speedup:.1f}s of wall time)"
                asked = "" if report.retry_after_s is None else f"; the API server asked {report.retry_after_s:g}s"
                log.info("backing off %.1fs%s%s", delay, wall, asked)
            remaining = max(0.0, started + delay / self.settings.speedup - time.monotonic())
            if self.stop.wait(remaining):
                log.info("stopping: the current step is done")
                return 0
