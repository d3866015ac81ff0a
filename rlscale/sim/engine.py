"""Discrete-event simulator of a chain pipeline, per request, deterministic for a seed (DESIGN.md section 4).

Semantics:

- Arrivals: ``rps[t]`` requests in second t, spread evenly inside the second (``t + i/rps``, IPA's load
  generator) or, with ``arrivals="poisson"``, a Poisson process of rate ``rps[t]`` in that second.
- Each stage has one FIFO queue (ordered by arrival at the stage). An idle replica takes up to b queued requests
  at once when b are waiting; otherwise it waits until b are queued or the oldest has waited
  ``batch_timeout_s``, whichever is first, and takes what is there. A batch of k requests takes ``l(v, k, c)``.
- A request older than ``drop_limit_s`` (since it entered the pipeline) when its batch would start is dropped;
  it counts as an SLA violation.
- Reconfiguration is make-before-break. Changing only the replica count adds replicas that serve after the
  variant's ``startup_s`` (removals stop taking work at once and finish their batch). Changing variant, batch or
  cores rolls the stage out: a new replica set serves after ``startup_s``; the serving set keeps serving until
  then. A rollout ordered while another is still starting cancels the starting set and keeps the serving one
  until the newest set is ready, so a stage is never left without serving replicas by reconfiguring.
  Batch size is a container setting, so it changes by rollout too, as on Kubernetes.
- Cost: each replica's cores count from the decision that created it until it has retired and finished its last
  batch, so starting and draining replicas are paid for.

Engine: stages are simulated one after the other over each interval; stage s+1 consumes stage s's departures.
This is exact for a feed-forward chain because a stage's behaviour up to time T depends only on its own inputs up
to T. Within a stage, one loop iteration forms one batch: the replica that is available first takes it (a heap of
availability times); per-request bookkeeping is done with numpy after the loop.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageConfig, StageMetrics
from rlscale.workload import Trace

ARRIVAL_MODES = ("even", "poisson")
HISTORY_S = 3600
_INF = math.inf


def p50_p99(values: np.ndarray) -> tuple[float, float]:
    """Median and 99th percentile with numpy's default (linear) interpolation, from one sort; NaN if empty.

    ``np.percentile`` costs ~20 us of overhead per call, a visible share of an interval's simulation.
    """
    n = values.size
    if n == 0:
        return math.nan, math.nan
    v = np.sort(values)
    out = []
    for q in (0.5, 0.99):
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        out.append(float(v[lo] + (v[hi] - v[lo]) * (pos - lo)))
    return out[0], out[1]


class _Replica:
    __slots__ = (
        "variant",
        "cores",
        "batch",
        "lat",
        "acc_rank",
        "acc_raw",
        "ready_s",
        "retire_s",
        "free_s",
        "alloc_s",
        "seq",
    )

    def __init__(self, stage: StageSpec, sc: StageConfig, alloc_s: float, ready_s: float, seq: int) -> None:
        self.variant = sc.variant
        self.cores = sc.cores
        self.batch = sc.batch
        # latency of a batch of k requests, k = 0..b (index 0 unused)
        self.lat = [0.0] + [stage.latency.latency_s(sc.variant, k, sc.cores) for k in range(1, sc.batch + 1)]
        self.acc_rank = stage.rank_accuracy(sc.variant)
        self.acc_raw = stage.variant(sc.variant).accuracy
        self.alloc_s = alloc_s
        self.ready_s = ready_s
        self.retire_s = _INF
        self.free_s = ready_s
        self.seq = seq

    def dealloc_s(self) -> float:
        """When its cores are released: after retiring and finishing the batch in hand."""
        return max(self.retire_s, self.free_s) if self.retire_s < _INF else _INF

    def available_s(self) -> float:
        return self.free_s if self.free_s > self.ready_s else self.ready_s


@dataclass
class _StageState:
    spec: StageSpec
    replicas: list[_Replica] = field(default_factory=list)
    # queue: parallel lists, sorted by arrival time at this stage
    q_t: list[float] = field(default_factory=list)
    q_id: list[int] = field(default_factory=list)


class Simulator:
    """A `Cluster` backed by the discrete-event simulation of one trace.

    Args:
        spec: the pipeline.
        trace: the workload.
        initial: configuration in force (and warm) at time 0.
        seed: seed of the generator every random draw comes from.
        arrivals: ``even`` (IPA's generator) or ``poisson``.
        interval_s: adaptation interval; defaults to the spec's.
        log_batches: keep every batch as ``(stage, start_s, finish_s, size, replica_seq, variant)`` in
            ``batch_log`` (for tests and debugging; off by default because it costs time).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        trace: Trace,
        initial: PipelineConfig,
        *,
        seed: int = 0,
        arrivals: str = "even",
        interval_s: float | None = None,
        log_batches: bool = False,
    ) -> None:
        if arrivals not in ARRIVAL_MODES:
            raise RlscaleError(f"arrivals must be one of {', '.join(ARRIVAL_MODES)}, got {arrivals!r}")
        if len(initial.stages) != len(spec.stages):
            raise RlscaleError(f"initial config has {len(initial.stages)} stages, pipeline has {len(spec.stages)}")
        self.spec = spec
        self.trace = trace
        self.interval_s = float(interval_s or spec.interval_s)
        self.rng = np.random.default_rng(seed)
        self._seq = 0
        self.entry_s, self.counts = self._arrival_times(trace.rps, arrivals)
        self.n_requests = int(self.entry_s.size)
        self.deadline_s = self.entry_s + spec.drop_limit_s
        self._deadline = self.deadline_s.tolist()  # the hot loop indexes a list: faster than numpy scalars
        n_stages = len(spec.stages)
        self.finish_s = np.full((n_stages, self.n_requests), np.nan)
        self.stage_in_s = np.full((n_stages, self.n_requests), np.nan)
        self.acc_rank = np.zeros((n_stages, self.n_requests))
        self.acc_raw = np.ones((n_stages, self.n_requests))
        self.batch_size = np.zeros((n_stages, self.n_requests), dtype=np.int32)
        self.dropped_at = np.full(self.n_requests, -1, dtype=np.int8)
        self.drop_time_s = np.full(self.n_requests, np.nan)
        self.stages = [_StageState(st) for st in spec.stages]
        self.config = initial
        self.time_s = 0.0
        self._next_arrival = 0  # index of the first request not yet fed to stage 0
        self._last_done = 0
        self._done_t: list[np.ndarray] = []  # last-stage departures not yet reported: finish times
        self._done_id: list[np.ndarray] = []
        self.last: IntervalMetrics | None = None
        self.history: list[IntervalMetrics] = []
        self.reconfigurations = 0
        self.events = 0
        self.batch_log: list[tuple[int, float, float, int, int, str]] | None = [] if log_batches else None
        for st, sc in zip(self.stages, initial.stages, strict=True):
            self._check_stage_config(st.spec, sc)
            for _ in range(sc.replicas):
                st.replicas.append(self._new_replica(st.spec, sc, alloc_s=0.0, ready_s=0.0))

    # ------------------------------------------------------------------ setup

    def _arrival_times(self, rps: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode == "poisson":
            counts = self.rng.poisson(rps)
        else:
            counts = np.rint(rps).astype(np.int64)
        total = int(counts.sum())
        seconds = np.repeat(np.arange(counts.size, dtype=float), counts)
        if mode == "poisson":
            offsets = self.rng.random(total)
            order = np.lexsort((offsets, seconds))
            times = seconds[order] + offsets[order]
        else:
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            idx = np.arange(total) - starts
            times = seconds + idx / np.repeat(np.maximum(counts, 1), counts)
        return times, counts

    def _new_replica(self, stage: StageSpec, sc: StageConfig, alloc_s: float, ready_s: float) -> _Replica:
        self._seq += 1
        return _Replica(stage, sc, alloc_s, ready_s, self._seq)

    @staticmethod
    def _check_stage_config(stage: StageSpec, sc: StageConfig) -> None:
        stage.variant(sc.variant)
        if sc.batch < 1 or sc.replicas < 0 or sc.cores < 1:
            raise RlscaleError(f"stage {stage.name}: invalid config {sc}")

    # ------------------------------------------------------------------ Cluster protocol

    @property
    def duration_s(self) -> float:
        return float(self.trace.duration_s)

    @property
    def done(self) -> bool:
        """True once the trace has been fully played (decisions stop here; `drain` finishes the rest)."""
        return self.time_s >= self.duration_s - 1e-9

    def in_flight(self) -> int:
        fed = self._next_arrival
        finished = int(np.count_nonzero(~np.isnan(self.finish_s[-1, :fed])))
        dropped = int(np.count_nonzero(self.dropped_at[:fed] >= 0))
        return fed - finished - dropped

    def observe(self) -> PipelineState:
        t = int(math.ceil(self.time_s - 1e-9))
        lo = max(0, t - HISTORY_S)
        hist = self.trace.rps[lo : min(t, self.trace.rps.size)].astype(float)
        return PipelineState(
            time_s=self.time_s,
            interval_s=self.interval_s,
            arrival_rps=hist,
            config=self.config,
            last=self.last,
            in_flight=self.in_flight(),
        )

    def apply(self, config: PipelineConfig) -> None:
        """Start moving to ``config`` at the current time (make-before-break)."""
        if len(config.stages) != len(self.stages):
            raise RlscaleError(f"config has {len(config.stages)} stages, pipeline has {len(self.stages)}")
        if config == self.config:
            return
        now = self.time_s
        for st, old, new in zip(self.stages, self.config.stages, config.stages, strict=True):
            self._check_stage_config(st.spec, new)
            if old == new:
                continue
            live = [r for r in st.replicas if r.retire_s == _INF]
            startup = st.spec.variant(new.variant).startup_s
            if (old.variant, old.batch, old.cores) == (new.variant, new.batch, new.cores):
                if new.replicas > len(live):
                    for _ in range(new.replicas - len(live)):
                        st.replicas.append(self._new_replica(st.spec, new, alloc_s=now, ready_s=now + startup))
                else:
                    # retire the youngest first: cancels pending scale-ups before touching serving replicas
                    for r in sorted(live, key=lambda r: (r.ready_s, r.seq), reverse=True)[: len(live) - new.replicas]:
                        r.retire_s = now
            else:
                ready = now + startup
                for r in st.replicas:
                    if r.ready_s > now:  # still starting up (an earlier target): cancelled
                        r.retire_s = min(r.retire_s, now)
                    elif r.retire_s > now:
                        # serving replicas keep serving until the new set is ready, even those an earlier rollout
                        # had scheduled to retire sooner: that rollout's replacements were just cancelled
                        r.retire_s = ready
                for _ in range(new.replicas):
                    st.replicas.append(self._new_replica(st.spec, new, alloc_s=now, ready_s=ready))
        self.config = config
        self.reconfigurations += 1

    def drain(self) -> None:
        """After the trace: hold the configuration until every request has completed or been dropped.

        Bounded by the drop limit plus three intervals, so a stage left with no replicas cannot loop forever.
        """
        limit = self.duration_s + self.spec.drop_limit_s + 3 * self.interval_s
        while self.in_flight() > 0 and self.time_s < limit:
            self.step()

    def step(self) -> IntervalMetrics:
        """Simulate ``[time_s, time_s + interval_s)`` and return its metrics."""
        start = self.time_s
        end = start + self.interval_s
        metrics = self._run_interval(start, end)
        self.time_s = end
        self.last = metrics
        self.history.append(metrics)
        return metrics

    # ------------------------------------------------------------------ engine

    def _run_interval(self, t0: float, t1: float) -> IntervalMetrics:
        # feed the pipeline: requests entering in [t0, t1)
        first = self._next_arrival
        last = int(np.searchsorted(self.entry_s, t1, side="left"))
        self._next_arrival = last
        new_t = self.entry_s[first:last]
        new_id = np.arange(first, last)
        self.stage_in_s[0, first:last] = new_t
        stage_metrics = []
        core_seconds = 0.0
        for s, st in enumerate(self.stages):
            if new_t.size:
                st.q_t.extend(new_t.tolist())
                st.q_id.extend(new_id.tolist())
                if s > 0:  # departures of the previous stage come unordered across replicas
                    order = sorted(range(len(st.q_t)), key=st.q_t.__getitem__)
                    st.q_t = [st.q_t[i] for i in order]
                    st.q_id = [st.q_id[i] for i in order]
            out_t, out_id, sm, core_s = self._run_stage(s, st, t0, t1)
            stage_metrics.append(sm)
            core_seconds += core_s
            if s + 1 < len(self.stages):
                self.stage_in_s[s + 1, out_id] = out_t
            new_t, new_id = out_t, out_id
        self._done_t.append(new_t)
        self._done_id.append(new_id)
        return self._interval_metrics(t0, t1, first, last, stage_metrics, core_seconds)

    def _run_stage(self, s: int, st: _StageState, t0: float, t1: float):
        timeout = self.spec.batch_timeout_s
        deadline = self._deadline
        q_t, q_id = st.q_t, st.q_id
        n = len(q_t)
        heap = [(r.available_s(), r.seq, r) for r in st.replicas if r.retire_s > t0 or r.free_s > t0]
        heap = [h for h in heap if h[0] < h[2].retire_s]
        heapq.heapify(heap)
        head = 0
        b_start: list[float] = []  # per batch: start, finish, size, replica
        b_finish: list[float] = []
        b_size: list[int] = []
        b_rep: list[_Replica] = []
        served_pos: list[int] = []  # queue positions that were served (in batch order)
        dropped_pos: list[int] = []
        drop_times: list[float] = []
        while head < n and heap:
            avail, seq, r = heap[0]
            if avail >= r.retire_s:
                heapq.heappop(heap)
                continue
            if avail >= t1:
                break
            a0 = q_t[head]
            t = avail if avail > a0 else a0
            if t >= t1:
                break
            if t >= r.retire_s:
                heapq.heappop(heap)
                continue
            # the oldest waiting requests that passed the drop limit are dropped
            while deadline[q_id[head]] < t:
                dropped_pos.append(head)
                drop_times.append(t)
                head += 1
                if head == n:
                    break
                a0 = q_t[head]
                t = avail if avail > a0 else a0
            if head == n or t >= t1:
                break
            b = r.batch
            last = head + b - 1
            if last < n and q_t[last] <= t:
                start = t
                k = b
            else:
                due = a0 + timeout
                if t >= due:
                    start = t
                else:
                    fill = q_t[last] if last < n else _INF
                    start = due if due < fill else fill
                k = -1
            if start >= t1:
                break  # later arrivals (next interval) may still join this batch: decide it then
            if start >= r.retire_s:
                heapq.heappop(heap)  # the replica retires before the batch would start
                continue
            if k < 0:
                k = bisect_right(q_t, start, head, min(head + b, n)) - head
            # requests inside the batch that expired while it was filling are dropped, not served
            pos = range(head, head + k)
            if deadline[q_id[head + k - 1]] < start or deadline[q_id[head]] < start:
                keep = [p for p in pos if deadline[q_id[p]] >= start]
                for p in pos:
                    if deadline[q_id[p]] < start:
                        dropped_pos.append(p)
                        drop_times.append(start)
                head += k
                if not keep:
                    continue
                served_pos.extend(keep)
                k_eff = len(keep)
            else:
                served_pos.extend(pos)
                head += k
                k_eff = k
            finish = start + r.lat[k_eff]
            r.free_s = finish
            b_start.append(start)
            b_finish.append(finish)
            b_size.append(k_eff)
            b_rep.append(r)
            heapq.heapreplace(heap, (finish if finish > r.ready_s else r.ready_s, seq, r))

        # per-request bookkeeping, vectorised
        ids = np.asarray(q_id[:head], dtype=np.int64)
        t_in = np.asarray(q_t[:head])
        served = np.asarray(served_pos, dtype=np.int64)
        sizes = np.asarray(b_size, dtype=np.int64)
        out_id = ids[served] if served.size else np.empty(0, dtype=np.int64)
        out_t = np.repeat(np.asarray(b_finish), sizes) if sizes.size else np.empty(0)
        if out_id.size:
            self.finish_s[s, out_id] = out_t
            self.acc_rank[s, out_id] = np.repeat([r.acc_rank for r in b_rep], sizes)
            self.acc_raw[s, out_id] = np.repeat([r.acc_raw for r in b_rep], sizes)
            self.batch_size[s, out_id] = np.repeat(sizes, sizes)
        if self.batch_log is not None:
            self.batch_log.extend(
                (s, b0, b1, k, r.seq, r.variant) for b0, b1, k, r in zip(b_start, b_finish, b_size, b_rep, strict=True)
            )
        if dropped_pos:
            d_id = ids[np.asarray(dropped_pos, dtype=np.int64)]
            self.dropped_at[d_id] = s
            self.drop_time_s[d_id] = drop_times
        self.events += head
        st.q_t = q_t[head:]
        st.q_id = q_id[head:]

        # stage metrics
        lat = out_t - t_in[served] if served.size else np.empty(0)
        busy = float(np.sum(np.asarray(b_finish) - np.asarray(b_start))) if b_start else 0.0
        serving_time = 0.0
        serving_now = 0
        for r in st.replicas:
            lo = max(t0, r.ready_s)
            hi = min(t1, r.retire_s)
            if hi > lo:
                serving_time += hi - lo
            if r.ready_s <= t1 and r.retire_s > t1:
                serving_now += 1
        core_s = self._allocated_core_seconds(t0, t1, st.replicas)
        # forget replicas that are gone for good
        st.replicas = [r for r in st.replicas if r.dealloc_s() > t1]
        lat_p50, lat_p99 = p50_p99(lat)
        sm = StageMetrics(
            served=int(out_id.size),
            dropped=len(dropped_pos),
            latency_p50_s=lat_p50,
            latency_p99_s=lat_p99,
            queue_len=int(bisect_right(st.q_t, t1)),
            utilisation=min(1.0, busy / serving_time) if serving_time > 0 else 0.0,
            replicas_serving=serving_now,
            mean_batch=float(sizes.mean()) if sizes.size else math.nan,
        )
        return out_t, out_id, sm, core_s

    def _allocated_core_seconds(self, t0: float, t1: float, replicas: list[_Replica]) -> float:
        total = 0.0
        for r in replicas:
            lo = max(t0, r.alloc_s)
            hi = min(t1, r.dealloc_s())
            if hi > lo:
                total += (hi - lo) * r.cores
        return total

    def _interval_metrics(
        self, t0: float, t1: float, first: int, last: int, stage_metrics: list[StageMetrics], core_seconds: float
    ) -> IntervalMetrics:
        spec = self.spec
        # completions: last-stage departures with finish in [t0, t1)
        done_t = np.concatenate(self._done_t) if self._done_t else np.empty(0)
        done_id = np.concatenate(self._done_id).astype(np.int64) if self._done_id else np.empty(0, dtype=np.int64)
        now = done_t < t1
        c_t, c_id = done_t[now], done_id[now]
        self._done_t, self._done_id = [done_t[~now]], [done_id[~now]]
        e2e = c_t - self.entry_s[c_id]
        late = int(np.count_nonzero(e2e > spec.sla_s + 1e-12))
        if spec.objective.accuracy_method == "sum":
            acc = self.acc_rank[:, c_id].sum(axis=0)
        else:
            acc = self.acc_raw[:, c_id].prod(axis=0)
        dropped = sum(m.dropped for m in stage_metrics)
        arrivals = last - first
        violation = (late + dropped) / arrivals if arrivals else 0.0
        cost = core_seconds / (t1 - t0)
        accuracy = float(acc.mean()) if acc.size else math.nan
        # with nothing completed the accuracy term uses the configuration in force
        acc_term = accuracy if acc.size else spec.accuracy(self.config.variants)
        objective = (
            spec.objective.alpha * acc_term
            - spec.objective.beta * cost
            - spec.objective.gamma * (self.config.total_batch)
        )
        e2e_p50, e2e_p99 = p50_p99(e2e)
        lo, hi = int(math.floor(t0)), int(math.ceil(t1))
        window = self.trace.rps[lo:hi]
        return IntervalMetrics(
            start_s=t0,
            end_s=t1,
            arrivals=arrivals,
            completed=int(c_id.size),
            dropped=dropped,
            late=late,
            sla_violation_rate=violation,
            e2e_p50_s=e2e_p50,
            e2e_p99_s=e2e_p99,
            accuracy=accuracy,
            cost_cores=cost,
            objective=objective,
            score=objective - spec.objective.sla_penalty * violation,
            stages=tuple(stage_metrics),
            arrival_rps_max=float(window.max()) if window.size else 0.0,
        )
