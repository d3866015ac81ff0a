"""The simulator's metrics: the interval summary (`IntervalMetrics`) and the run summary (the record's metric
fields), both computed by the same functions from the same per-request outcome arrays (`RequestOutcomes`).

An interval summarises the requests that completed in it (and those that arrived or were dropped in it); the run
summarises every request of the run. Both go through `summarise_requests` (completed, late, dropped, violation
rate, accuracy, end-to-end p50/p99), `stage_latency_s` and `p50_p99` (numpy's default linear percentile,
bit for bit, without its per-call overhead), and `objective`.

Rules, one for both summaries:

- **Accuracy.** The ``accuracy`` field is the mean pipeline accuracy (the spec's method) of the requests
  completed, NaN when none completed. The objective's accuracy term is that mean; with none completed it is the
  *expected* accuracy of the configuration in force: for an interval, the configuration in force during it; for a
  run, the mean over the trace's intervals of the configurations' expected accuracies. (Before the split the run
  summary used 0 there while an interval used the configuration's accuracy; a run with no completed request now
  scores like the mean of its intervals' accuracy terms.)
- **Cost** is allocated cores, time-averaged (DESIGN.md section 3): every replica's cores from the decision that
  created it until it has retired and finished its last batch, so starting and draining replicas count. The run's
  cost is the mean over the trace's intervals (drain intervals excluded: they hold the last configuration and are
  not the policy's choice).
- **Per-request SLOs.** Where the spec has a ``request_slo``, a completed request is late when it finished after its
  own deadline (arrival + its remaining budget, `rlscale.sim.arrivals`), and an interval reports the remaining
  budgets of its arrivals (``budget_min_s``, ``budget_p5_s``, ``budget_p50_s``). A request whose budget was
  used up on arrival is dropped then (`rlscale.sim.engine`). Without one, late is ``e2e > sla_s``, as before.
- **Pools.** A stage's fields are over all its pools; each pool also has its own (`rlscale.types.PoolMetrics`). A
  request's accuracy combines the variants that served it, so a mix's measured accuracy is what its requests
  met; its expected accuracy weights each pool by its share (`rlscale.model.expected_accuracy`). The run record
  of a spec with pools (some stage's ``max_pools > 1``) adds ``mixed_share``, the share of the trace's intervals
  in which some stage's configuration in force ran two or more pools.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscale.model import expected_accuracy, objective_of
from rlscale.model import score as model_score
from rlscale.sim.arrivals import RequestTable
from rlscale.sim.engine import IntervalCounters, RequestOutcomes
from rlscale.spec import PipelineSpec
from rlscale.types import IntervalMetrics, PipelineConfig, PoolMetrics, StageMetrics
from rlscale.workload import Trace

# strictly later than the SLA (a float margin so a request finishing exactly at the SLA is on time)
_LATE_EPS_S = 1e-12


def p50_p99(values: np.ndarray) -> tuple[float, float]:
    """Median and 99th percentile, equal to ``np.percentile(values, [50, 99])`` (linear); NaN if empty.

    One sort and scalar arithmetic: ``np.percentile`` costs ~20 us of overhead per call, a visible share of an
    interval's simulation. The interpolation is numpy's (``_lerp``), so the two agree to the last bit.
    """
    n = values.size
    if n == 0:
        return math.nan, math.nan
    v = np.sort(values)
    out = []
    for q in (0.5, 0.99):
        pos = (n - 1) * q
        lo = int(pos)
        g = pos - lo
        a = float(v[lo])
        b = float(v[lo + 1]) if lo + 1 < n else a
        d = b - a
        out.append(b - d * (1 - g) if g >= 0.5 else a + d * g)
    return out[0], out[1]


def pipeline_accuracy(spec: PipelineSpec, outcomes: RequestOutcomes, ids: np.ndarray) -> np.ndarray:
    """Per-request pipeline accuracy of requests ``ids`` by the spec's method (``sum`` of ranks or ``product``)."""
    if spec.objective.accuracy_method == "sum":
        return outcomes.acc_rank[:, ids].sum(axis=0)
    return outcomes.acc_raw[:, ids].prod(axis=0)


def e2e_latency_s(requests: RequestTable, outcomes: RequestOutcomes, ids: np.ndarray) -> np.ndarray:
    """End-to-end latency of completed requests ``ids``."""
    return outcomes.finish_s[-1][ids] - requests.entry_s[ids]


def stage_latency_s(outcomes: RequestOutcomes, stage: int, ids: np.ndarray) -> np.ndarray:
    """Latency at one stage (queue wait + service) of requests ``ids`` served there."""
    return outcomes.finish_s[stage][ids] - outcomes.stage_in_s[stage][ids]


@dataclass(frozen=True)
class RequestSummary:
    """Per-request metrics of a set of requests (an interval's or a run's).

    Attributes:
        arrivals: requests counted in the violation rate's denominator.
        completed: requests that left the last stage.
        dropped: requests dropped at any stage.
        late: completed requests whose end-to-end latency exceeded the SLA (per-request SLOs: their own budget).
        sla_violation_rate: (late + dropped) / arrivals, 0 when nothing arrived.
        accuracy: mean pipeline accuracy of the completed requests; NaN if none.
        e2e_p50_s / e2e_p99_s: end-to-end latency percentiles of the completed requests; NaN if none.
    """

    arrivals: int
    completed: int
    dropped: int
    late: int
    sla_violation_rate: float
    accuracy: float
    e2e_p50_s: float
    e2e_p99_s: float


def summarise_requests(
    spec: PipelineSpec,
    requests: RequestTable,
    outcomes: RequestOutcomes,
    completed_id: np.ndarray,
    dropped: int,
    arrivals: int,
) -> RequestSummary:
    """Summarise the requests ``completed_id`` together with ``dropped`` drops out of ``arrivals`` arrivals."""
    e2e = e2e_latency_s(requests, outcomes, completed_id)
    if requests.budget_s is None:
        late = int(np.count_nonzero(e2e > spec.sla_s + _LATE_EPS_S))
    else:
        late = int(np.count_nonzero(e2e > requests.budget_s[completed_id] + _LATE_EPS_S))
    acc = pipeline_accuracy(spec, outcomes, completed_id)
    p50, p99 = p50_p99(e2e)
    return RequestSummary(
        arrivals=arrivals,
        completed=int(completed_id.size),
        dropped=dropped,
        late=late,
        sla_violation_rate=(late + dropped) / arrivals if arrivals else 0.0,
        accuracy=float(acc.mean()) if acc.size else math.nan,
        e2e_p50_s=p50,
        e2e_p99_s=p99,
    )


def objective(spec: PipelineSpec, summary: RequestSummary, expected_accuracy: float, cost_cores: float, batch: float):
    """`rlscale.model.objective_of` with A the completed requests' accuracy, else ``expected_accuracy``."""
    acc = summary.accuracy if summary.completed else expected_accuracy
    return objective_of(spec, acc, cost_cores, batch)


def score(spec: PipelineSpec, objective_value: float, summary: RequestSummary) -> float:
    """`rlscale.model.score` at the summary's violation rate (DESIGN.md section 3)."""
    return model_score(spec, objective_value, summary.sla_violation_rate)


def interval_metrics(
    spec: PipelineSpec,
    trace: Trace,
    requests: RequestTable,
    outcomes: RequestOutcomes,
    counters: IntervalCounters,
    config: PipelineConfig,
) -> IntervalMetrics:
    """One interval's metrics from its raw counters; ``config`` is the configuration in force during it."""
    t0, t1 = counters.start_s, counters.end_s
    stage_metrics = []
    for s, c in enumerate(counters.stages):
        lat_p50, lat_p99 = p50_p99(stage_latency_s(outcomes, s, c.served_id))
        utilisation = min(1.0, c.busy_s / c.serving_s) if c.serving_s > 0 else 0.0
        if len(c.pools) == 1:  # the stage's figures are its pool's
            p = c.pools[0]
            pools = (
                PoolMetrics(
                    p.variant, p.share, int(c.served_id.size), c.dropped, lat_p99, c.queue_len, utilisation,
                    c.replicas_serving,
                ),
            )  # fmt: skip
        else:
            pools = tuple(
                PoolMetrics(
                    variant=p.variant,
                    share=p.share,
                    served=int(p.served_id.size),
                    dropped=p.dropped,
                    latency_p99_s=p50_p99(stage_latency_s(outcomes, s, p.served_id))[1],
                    queue_len=p.queue_len,
                    utilisation=min(1.0, p.busy_s / p.serving_s) if p.serving_s > 0 else 0.0,
                    replicas_serving=p.replicas_serving,
                )
                for p in c.pools
            )
        stage_metrics.append(
            StageMetrics(
                served=int(c.served_id.size),
                dropped=c.dropped,
                latency_p50_s=lat_p50,
                latency_p99_s=lat_p99,
                queue_len=c.queue_len,
                utilisation=utilisation,
                replicas_serving=c.replicas_serving,
                mean_batch=c.batched / c.batches if c.batches else math.nan,
                pools=pools,
            )
        )
    dropped = sum(c.dropped for c in counters.stages)
    summary = summarise_requests(spec, requests, outcomes, counters.completed_id, dropped, counters.arrivals)
    cost = counters.core_s / (t1 - t0)
    # the expected accuracy is only needed (and only computed) when nothing completed
    expected = expected_accuracy(spec, config) if not summary.completed else math.nan
    obj = objective(spec, summary, expected, cost, config.total_batch)
    lo, hi = int(math.floor(t0)), int(math.ceil(t1))
    window = trace.rps[lo:hi]
    budgets = {}
    if requests.budget_s is not None:
        arrived = requests.budget_s[counters.first_id : counters.end_id]
        if arrived.size:
            p5, p50 = np.percentile(arrived, [5, 50])
            budgets = {"budget_min_s": float(arrived.min()), "budget_p5_s": float(p5), "budget_p50_s": float(p50)}
    return IntervalMetrics(
        start_s=t0,
        end_s=t1,
        arrivals=summary.arrivals,
        completed=summary.completed,
        dropped=summary.dropped,
        late=summary.late,
        sla_violation_rate=summary.sla_violation_rate,
        e2e_p50_s=summary.e2e_p50_s,
        e2e_p99_s=summary.e2e_p99_s,
        accuracy=summary.accuracy,
        cost_cores=cost,
        objective=obj,
        score=score(spec, obj, summary),
        stages=tuple(stage_metrics),
        arrival_rps_max=float(window.max()) if window.size else 0.0,
        **budgets,
    )


def stage_config_summary(
    configs: Sequence[PipelineConfig], stage: int, weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """How stage ``stage`` ran over a run: the configurations in force, weighted by how long each was.

    Returns:
        ``variant_mode`` and ``batch_mode``: the variant and the batch size in force longest (ties: the one in force
        last; with pools, the first pool's); ``cores_mean``: cores per replica (the first pool's) and
        ``replicas_mean``: replicas (over every pool), time-weighted means; ``allocated_cores_mean``: replicas x
        cores over every pool, time-weighted. Empty configs give None modes and 0 means.
    """
    if not configs:
        return {
            "variant_mode": None,
            "batch_mode": None,
            "cores_mean": 0.0,
            "replicas_mean": 0.0,
            "allocated_cores_mean": 0.0,
        }
    w = np.asarray(weights if weights is not None else [1.0] * len(configs), dtype=float)
    if w.size != len(configs) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        w = np.ones(len(configs))
    scs = [c.stages[stage] for c in configs]

    def mode(values: list) -> Any:
        time_in: dict[Any, float] = {}
        for v, wi in zip(values, w, strict=True):
            time_in[v] = time_in.get(v, 0.0) + float(wi)
        best = max(time_in.values())
        return next(v for v in reversed(values) if time_in[v] == best)

    def mean(values: list[float]) -> float:
        return float(np.average(np.asarray(values, dtype=float), weights=w))

    return {
        "variant_mode": mode([sc.pools[0].variant for sc in scs]),
        "batch_mode": mode([sc.pools[0].batch for sc in scs]),
        "cores_mean": mean([sc.pools[0].cores for sc in scs]),
        "replicas_mean": mean([sc.total_replicas for sc in scs]),
        "allocated_cores_mean": mean([sc.total_cores for sc in scs]),
    }


def run_summary(
    spec: PipelineSpec,
    requests: RequestTable,
    outcomes: RequestOutcomes,
    intervals: Sequence[IntervalMetrics],
    configs: Sequence[PipelineConfig],
) -> dict[str, Any]:
    """The run's metric fields of the summary record.

    Args:
        intervals: every interval simulated, drain included.
        configs: the configuration in force during each interval of the trace (drain excluded).
    """
    n = requests.n_requests
    completed_id = np.flatnonzero(~np.isnan(outcomes.finish_s[-1]))
    dropped = int(np.count_nonzero(outcomes.dropped_at >= 0))
    summary = summarise_requests(spec, requests, outcomes, completed_id, dropped, n)
    trace_iv = intervals[: len(configs)]
    cost = float(np.mean([m.cost_cores for m in trace_iv])) if trace_iv else 0.0
    mean_batch = float(np.mean([c.total_batch for c in configs])) if configs else 0.0
    expected = (
        float(np.mean([expected_accuracy(spec, c) for c in configs])) if configs and not summary.completed else 0.0
    )
    obj = objective(spec, summary, expected, cost, mean_batch)
    weights = [m.end_s - m.start_s for m in trace_iv] if len(trace_iv) == len(configs) else None
    stages = []
    for s, st in enumerate(spec.stages):
        served_id = np.flatnonzero(~np.isnan(outcomes.finish_s[s]))
        p50, p99 = p50_p99(stage_latency_s(outcomes, s, served_id))
        stages.append(
            {
                "stage": st.name,
                "served": int(served_id.size),
                "dropped": int(np.count_nonzero(outcomes.dropped_at == s)),
                "p50_latency_s": p50,
                "p99_latency_s": p99,
                "mean_queue_len": float(np.mean([m.stages[s].queue_len for m in trace_iv])) if trace_iv else 0.0,
                "max_queue_len": int(max((m.stages[s].queue_len for m in trace_iv), default=0)),
                "utilisation": float(np.mean([m.stages[s].utilisation for m in trace_iv])) if trace_iv else 0.0,
                **stage_config_summary(configs, s, weights),
            }
        )
    pooled = {}
    if spec.pooled:
        pooled["mixed_share"] = mixed_share(configs)
    return {
        **pooled,
        "requests": n,
        "completed": summary.completed,
        "dropped": summary.dropped,
        "late": summary.late,
        "in_flight": n - summary.completed - summary.dropped,
        "in_flight_share": (n - summary.completed - summary.dropped) / n if n else 0.0,
        "sla_violation_rate": summary.sla_violation_rate,
        "accuracy": summary.accuracy,
        "cost_cores": cost,
        "objective": obj,
        "score": score(spec, obj, summary),
        "p50_latency_s": summary.e2e_p50_s,
        "p99_latency_s": summary.e2e_p99_s,
        "stages": stages,
    }


def mixed_share(configs: Sequence[PipelineConfig]) -> float:
    """The share of ``configs`` (one per interval) in which some stage ran two or more pools (0 when empty)."""
    return sum(1 for c in configs if c.most_pools > 1) / len(configs) if configs else 0.0
