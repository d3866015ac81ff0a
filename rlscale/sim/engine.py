"""The simulator's event loop: requests through a chain of stages, per request (DESIGN.md section 4).

Each stage has one FIFO queue (ordered by arrival at the stage) per pool. An idle replica takes up to b queued requests
at once when b are waiting; otherwise it waits until b are queued or the oldest has waited ``batch_timeout_s``,
whichever is first, and takes what is there. A batch of k requests takes the service time of ``l(v, k, c)`` (below). A
request older than ``drop_limit_s`` (since it entered the pipeline) when its batch would start is dropped; it counts
as an SLA violation. Replicas, rollouts and cost are `rlscale.sim.replicas`; arrivals are `rlscale.sim.arrivals`;
what the counters mean as metrics is `rlscale.sim.metrics`.

**Service model** (the spec's ``service_model``; `empirical_service` says which a stage runs). ``deterministic``: a
batch of k on (v, c) takes the profile's p99 ``latency_s(v, k, c)``, a fixed time (the model of IPA, FA2 and Sponge,
and of every bundled profile). ``empirical``: it takes ``mean_s(v, k, c) x f``, f drawn uniformly among the run-to-run
factors of the nearest point with run times (`rlscale.profiles.LatencyModel.noise`: its runs over their mean), one
draw per batch, when the batch starts. The draws of each stage come from a `numpy.random.Generator` of their own,
spawned from the run's (`rlscale.sim.cluster.Simulator`: a stream apart from the arrivals', which are therefore the
same under both models), in the order the batches are formed: deterministic for a seed. ``auto`` (the default) is
``empirical`` for a stage whose profile keeps run times and ``deterministic`` for the others. A variant without runs
draws nothing (its mean, which a p99-only profile answers with its p99).

**Serving overhead.** Where the profile has a positive ``overhead_s`` (`rlscale.profiles.LatencyModel.overhead_s`:
CPU seconds a request costs the server: HTTP, decoding, the event loop), each request costs that much on a replica's
core before the batcher sees it, as a server's event loop decodes a request before handing it to the batcher. The
model, per pool (`_run_pool_decode`):

- Requests wait *undecoded* in the pool's queue (by arrival at the stage), then *decoded* in the batcher's queue (by
  the time their decoding ended: the batcher's arrival time, from which ``batch_timeout_s`` counts, as `rlscale
  serve`'s batcher stamps a request when the event loop hands it over).
- A replica's core does one thing at a time, and never stops one for another: decode one request (``overhead_s``)
  or run one batch. **Decoding comes first**: a core that is free decodes the oldest undecoded request that has
  arrived; with none, it starts a batch by the batching rules above over the decoded requests, unless a request
  arrives before that batch would start, which it decodes first. A request past its drop limit when a core would
  decode it is dropped (never decoded); the decoded ones are dropped by the batching rules.
- With one replica this is exact: a single server whose decoding has non-preemptive priority over its batches.
  With batch 1 and timeout 0 the core does ``o + l`` of work a request, so the work a request finds is M/G/1's
  with service ``o + l``; its run starts once that work, its own decoding and the decoding of every request arriving
  meanwhile are done (a delay busy period): mean sojourn ``(E[W] + o) / (1 - lambda o) + l``, above M/D/1's
  with service ``o + l`` (tests/sim/test_service_model.py checks both, and the loop against a naive one-replica
  implementation). Requests that arrive while a batch runs are decoded when it ends, so a stage's departures and
  the next stage's arrivals spread as a real server's do, and larger batches form after a long one.
- Several replicas keep the pool's one-queue idealisation (as without overhead: the replica free first takes the
  next batch): the replica whose core is free first decodes the oldest undecoded request, and any replica may batch
  a decoded one. A Kubernetes Service spreads requests over replicas instead, each with its own event loop and
  batcher; the shared queues balance better than that, so with several replicas this is optimistic.
- Without overhead (every replica of a pool at 0) the pool runs the loop above, not this one: exactly today's
  engine. (This model with a zero overhead forms the same batches when ``batch_timeout_s`` is 0; with a timeout, a
  request arriving during a batch would start its timeout when the batch ends rather than on arrival.)
- ``busy_s`` counts batches only (the model's time, as `rlscale serve`'s ``rlscale_busy_seconds_total`` does);
  ``queue_len`` counts the undecoded requests that have arrived and the decoded ones waiting. A serving overhead
  with ``queue_discipline: edf`` is refused (not simulated).

**Time off the core.** Where the profile has ``delay_s`` or ``jitter_s`` (`rlscale.profiles`), a request leaves
the stage ``delay_s`` plus an exponential time of mean ``jitter_s`` after its batch ends (the network and the
caller's side of the call): its stage latency includes it, the next stage sees it arrive then, and no core is
taken. The exponential draws come from a stream a stage of their own, spawned after the service model's.

Stages are simulated one after the other over each interval; stage s+1 consumes stage s's departures. This is
exact for a feed-forward chain because a stage's behaviour up to time T depends only on its own inputs up to T.
Within a stage, one loop iteration forms one batch: the replica that is available first takes it (a heap of
availability times); per-request bookkeeping is done with numpy after the loop.

The engine consumes the request table and configuration changes and produces per-request outcomes
(`RequestOutcomes`, filled in as requests progress) and per-interval raw counters (`IntervalCounters`).

**Pools.** A stage whose spec allows several pools (``max_pools > 1``) has one pool per variant, each with its
own queue and replicas (`rlscale.sim.replicas`), and a dispatcher that sends each request arriving at the stage
to a pool by share, by smooth weighted round-robin (`rlscale.sim.dispatch`), in order of arrival at the stage. A
request's accuracy at a stage is that of the variant that served it. Choices:

- *When the split changes.* Like InfAdapter, the dispatcher keeps the shares in force until every pool the new
  configuration adds is ready (its first replica has started up), then switches to the new shares at once;
  with no new pool (shares, replicas, batch or cores of existing pools) it switches when the configuration is
  applied. A later decision replaces a switch still pending. Requests are dispatched when they are fed to
  their stage; one that arrives at the stage after the interval's end (its previous stage's batch straddles
  it) takes the shares in force at the interval's end.
- *A removed pool* keeps its replicas until the switch, then receives nothing more, serves the requests it
  holds on its own replicas (as a rollout's old replicas keep serving until they retire) and retires them
  once its queue is empty, at the last request it took (or at the switch, if it held none); they cost until
  then. A pool added back before it is gone reconfigures from the setting it drains with.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.sim.arrivals import RequestTable
from rlscale.sim.dispatch import SmoothWeightedRoundRobin
from rlscale.sim.replicas import (
    PoolState,
    Replica,
    StageState,
    allocated_core_seconds,
    check_stage_config,
    reconfigure_stage,
    serving,
)
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import PipelineConfig, StageConfig, VariantPool

_INF = math.inf
_NO_IDS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class RequestOutcomes:
    """Per-request outcomes, indexed ``[stage, request]`` or ``[request]``; filled in as the run proceeds.

    Attributes:
        finish_s: when the request left each stage (NaN: not served there, yet or ever).
        stage_in_s: when it entered each stage's queue (NaN: not yet or never).
        acc_rank / acc_raw: rank-normalised / raw accuracy of the variant that served it at each stage
            (0 / 1 where not served, the neutral element of ``sum`` / ``product``).
        batch_size: size of the batch it was served in at each stage (0: not served).
        dropped_at: stage where it was dropped, -1 if not dropped.
        drop_time_s: when it was dropped (NaN: not dropped).
    """

    finish_s: np.ndarray
    stage_in_s: np.ndarray
    acc_rank: np.ndarray
    acc_raw: np.ndarray
    batch_size: np.ndarray
    dropped_at: np.ndarray
    drop_time_s: np.ndarray

    @classmethod
    def empty(cls, n_stages: int, n_requests: int) -> RequestOutcomes:
        shape = (n_stages, n_requests)
        return cls(
            finish_s=np.full(shape, np.nan),
            stage_in_s=np.full(shape, np.nan),
            acc_rank=np.zeros(shape),
            acc_raw=np.ones(shape),
            batch_size=np.zeros(shape, dtype=np.int32),
            dropped_at=np.full(n_requests, -1, dtype=np.int8),
            drop_time_s=np.full(n_requests, np.nan),
        )


@dataclass(frozen=True)
class PoolCounters:
    """What one pool of a stage did in one interval (fields as `StageCounters`).

    Attributes:
        key: the pool's variant (stages with ``max_pools > 1``) or ``""`` (the one pool of the others).
        variant: the variant its replicas run (the newest setting's, for a pool rolling out).
        share: the share of the stage's requests the dispatcher sends it at the interval's end (0: draining).
    """

    key: str
    variant: str
    share: float
    served_id: np.ndarray
    dropped: int
    busy_s: float
    serving_s: float
    replicas_serving: int
    queue_len: int
    batches: int
    batched: int


@dataclass(frozen=True)
class StageCounters:
    """What one stage did in one interval: its pools' counters summed (``pools``: each pool's).

    Attributes:
        served_id: requests that finished service here, in batch order (they may finish after the interval).
        dropped: requests dropped while queued here.
        busy_s: replica-seconds spent on the batches started in the interval.
        serving_s: replica-seconds able to serve.
        replicas_serving: replicas able to serve at the end of the interval.
        queue_len: requests waiting at the end of the interval.
        batches / batched: batches started, and the requests in them.
        pools: each pool's counters, in the stage's pool order.
    """

    served_id: np.ndarray
    dropped: int
    busy_s: float
    serving_s: float
    replicas_serving: int
    queue_len: int
    batches: int
    batched: int
    pools: tuple[PoolCounters, ...] = ()

    @classmethod
    def of_pools(cls, pools: list[PoolCounters]) -> StageCounters:
        """The stage's counters: its pools' summed (served ids pool after pool)."""
        if len(pools) == 1:
            p = pools[0]
            return cls(
                p.served_id, p.dropped, p.busy_s, p.serving_s, p.replicas_serving, p.queue_len, p.batches,
                p.batched, tuple(pools),
            )  # fmt: skip
        return cls(
            served_id=np.concatenate([p.served_id for p in pools]) if pools else _NO_IDS,
            dropped=sum(p.dropped for p in pools),
            busy_s=sum(p.busy_s for p in pools),
            serving_s=sum(p.serving_s for p in pools),
            replicas_serving=sum(p.replicas_serving for p in pools),
            queue_len=sum(p.queue_len for p in pools),
            batches=sum(p.batches for p in pools),
            batched=sum(p.batched for p in pools),
            pools=tuple(pools),
        )


@dataclass(frozen=True)
class IntervalCounters:
    """Raw counters of one interval ``[start_s, end_s)``.

    Attributes:
        first_id / end_id: the requests that entered the pipeline are ids ``first_id .. end_id - 1``.
        completed_id: requests that left the last stage in the interval, in departure-batch order.
        core_s: allocated core-seconds over the interval, all stages.
    """

    start_s: float
    end_s: float
    first_id: int
    end_id: int
    completed_id: np.ndarray
    core_s: float
    stages: tuple[StageCounters, ...]

    @property
    def arrivals(self) -> int:
        return self.end_id - self.first_id


class Engine:
    """The event loop over a request table, with configuration changes applied between intervals.

    Args:
        spec: the pipeline.
        requests: the request table.
        initial: configuration in force (and warm) at time 0.
        log_batches: keep every batch as ``(stage, start_s, finish_s, size, replica_seq, variant)`` in
            ``batch_log`` (for tests and debugging; off by default because it costs time).
        service_rng: where the ``empirical`` service model's draws come from (each such stage draws from a stream
            of its own, spawned from it); None: a generator seeded with 0.

    Raises:
        RlscaleError: a stage orders its queue by deadline (``edf``) and its profile has a serving overhead (not
            simulated).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        requests: RequestTable,
        initial: PipelineConfig,
        *,
        log_batches: bool = False,
        service_rng: np.random.Generator | None = None,
    ) -> None:
        self.spec = spec
        for st in spec.stages:
            if st.queue_discipline == "edf" and has_overhead(st):
                raise RlscaleError(
                    f"stage {st.name}: a serving overhead (the profile's overhead_s) is not simulated with "
                    "queue_discipline edf; use fifo or a profile without overhead_s"
                )
        self._empirical = {st.name: empirical_service(spec, st) for st in spec.stages}
        root = service_rng or np.random.default_rng(0)
        rngs = root.spawn(len(spec.stages))
        # the delay's exponential part (a profile's jitter_s): one stream a stage, spawned after the service
        # model's so that those are the same with or without it
        self._jitter = root.spawn(len(spec.stages))
        self._draws = [
            _uniforms(rng).__next__ if self._empirical[st.name] else None
            for rng, st in zip(rngs, spec.stages, strict=True)
        ]
        self.requests = requests
        self.outcomes = RequestOutcomes.empty(len(spec.stages), requests.n_requests)
        self._deadline = requests.drop_deadline_s.tolist()  # the hot loop indexes a list: faster than numpy
        self._slo: list[float] | None = None  # SLO deadlines, for the stages that order their queues by them
        if any(st.queue_discipline == "edf" for st in spec.stages):
            slo = requests.slo_deadline_s
            self._slo = (slo if slo is not None else requests.entry_s + spec.sla_s).tolist()
        self._resize_s = spec.resize_s if spec.in_place_resize else None
        self.stages = [StageState(st, dispatched=st.max_pools > 1) for st in spec.stages]
        self.fed = 0  # index of the first request not yet fed to stage 0
        self.events = 0
        self.batch_log: list[tuple[int, float, float, int, int, str]] | None = [] if log_batches else None
        self._seq = 0
        self._done_t: list[np.ndarray] = []  # last-stage departures not yet reported: finish times
        self._done_id: list[np.ndarray] = []
        for st, sc in zip(self.stages, initial.stages, strict=True):
            check_stage_config(st.spec, sc)
            for p in sc.pools:
                pool = PoolState(st.spec, p.variant if st.dispatched else "", p, p)
                for _ in range(p.replicas):
                    pool.replicas.append(self._new_replica(st.spec, p, alloc_s=0.0, ready_s=0.0))
                st.pools.append(pool)
            if st.dispatched:
                st.dispatch = SmoothWeightedRoundRobin.of_shares(
                    [p.variant for p in sc.pools], [p.share for p in sc.pools]
                )

    def _new_replica(self, stage: StageSpec, sc: VariantPool, alloc_s: float, ready_s: float) -> Replica:
        self._seq += 1
        return Replica(stage, sc, alloc_s, ready_s, self._seq, self._empirical[stage.name])

    def reconfigure(self, now_s: float, old: PipelineConfig, new: PipelineConfig) -> None:
        """Start moving every stage from ``old`` to ``new`` at ``now_s`` (make-before-break)."""
        for st, sc in zip(self.stages, new.stages, strict=True):
            check_stage_config(st.spec, sc)
        for st, o, n in zip(self.stages, old.stages, new.stages, strict=True):
            if st.dispatched:
                self._reconfigure_pools(st, n, now_s)
            elif o != n:
                reconfigure_stage(st.pools[0], o.only, n.only, now_s, self._new_replica, self._resize_s)
                st.pools[0].setting = st.pools[0].last = n.only

    def _reconfigure_pools(self, st: StageState, new: StageConfig, now_s: float) -> None:
        """Move a pooled stage's pools to ``new``'s, each by its variant, and schedule the dispatcher's switch."""
        target = {p.variant: p for p in new.pools}
        live = st.dispatch.keys
        for pool in st.pools:
            if pool.key not in target and pool.setting is not None:
                pool.setting = None  # removed: drains once the dispatcher no longer sends it requests
        ready_s = now_s
        for key, p in target.items():
            pool = st.pool(key)
            if pool is None:
                pool = PoolState(st.spec, key, p, p)
                st.pools.append(pool)
                for _ in range(p.replicas):
                    pool.replicas.append(self._new_replica(st.spec, p, alloc_s=now_s, ready_s=now_s + _startup(st, p)))
            else:
                if pool.last != p or pool.setting is None:  # back in the target: from what it drains with
                    reconfigure_stage(pool, pool.last, p, now_s, self._new_replica, self._resize_s)
                pool.setting, pool.last, pool.drain_from_s = p, p, _INF
            if key not in live:  # the dispatcher waits for the pool's first replica to be ready
                starting = [r.ready_s for r in pool.replicas if r.retire_s == _INF]
                ready_s = max(ready_s, min(starting, default=now_s))
        order = {key: i for i, key in enumerate(target)}
        st.pools.sort(key=lambda pool: order.get(pool.key, len(order)))
        switch = SmoothWeightedRoundRobin.of_shares(list(target), [p.share for p in target.values()])
        st.pending = None
        if ready_s <= now_s:
            self._switch(st, switch, now_s)
        else:
            st.pending = (ready_s, switch)
            for pool in st.pools:  # neither in the target nor receiving requests: nothing to wait for
                if pool.setting is None and pool.key not in live:
                    pool.drain_from_s = min(pool.drain_from_s, now_s)

    @staticmethod
    def _switch(st: StageState, dispatch: SmoothWeightedRoundRobin, at_s: float) -> None:
        """The stage's dispatcher becomes ``dispatch`` at ``at_s``; pools it leaves out start draining."""
        st.dispatch, st.pending = dispatch, None
        for pool in st.pools:
            if pool.key not in dispatch.keys:
                pool.drain_from_s = min(pool.drain_from_s, at_s)

    def _dispatch(self, st: StageState, new_t: np.ndarray, new_id: np.ndarray, t1: float) -> None:
        """Send the requests arriving at a pooled stage to its pools, in order of arrival, by share."""
        order = np.argsort(new_t, kind="stable")
        times, ids = new_t[order].tolist(), new_id[order].tolist()
        by_key: dict[str, tuple[list[float], list[int]]] = {}
        if st.pending is None and len(st.dispatch.keys) == 1:
            by_key[st.dispatch.keys[0]] = (times, ids)
        else:
            for t, i in zip(times, ids, strict=True):
                if st.pending is not None and st.pending[0] <= t and st.pending[0] < t1:
                    self._switch(st, st.pending[1], st.pending[0])
                key = st.dispatch.pick()
                q = by_key.setdefault(key, ([], []))
                q[0].append(t)
                q[1].append(i)
        for key, (q_t, q_id) in by_key.items():
            pool = st.pool(key)
            pool.q_t.extend(q_t)
            pool.q_id.extend(q_id)
            if pool.q_t and len(pool.q_t) > len(q_t) and pool.q_t[-len(q_t) - 1] > q_t[0]:
                order_q = sorted(range(len(pool.q_t)), key=pool.q_t.__getitem__)
                pool.q_t = [pool.q_t[j] for j in order_q]
                pool.q_id = [pool.q_id[j] for j in order_q]

    def in_flight(self) -> int:
        """Requests fed to the pipeline that have neither completed nor been dropped."""
        fed = self.fed
        finished = int(np.count_nonzero(~np.isnan(self.outcomes.finish_s[-1, :fed])))
        dropped = int(np.count_nonzero(self.outcomes.dropped_at[:fed] >= 0))
        return fed - finished - dropped

    def run_interval(self, t0: float, t1: float) -> IntervalCounters:
        """Simulate ``[t0, t1)``: feed the requests entering in it, then run each stage in order."""
        out = self.outcomes
        first = self.fed
        last = int(np.searchsorted(self.requests.entry_s, t1, side="left"))
        self.fed = last
        new_t = self.requests.entry_s[first:last]
        new_id = np.arange(first, last)
        out.stage_in_s[0, first:last] = new_t
        hopeless = 0
        budget = self.requests.budget_s
        if budget is not None and new_t.size:
            # a request whose budget the network used up is dropped as it arrives: serving it cannot meet its SLO
            spent = budget[first:last] <= 0
            if spent.any():
                d_id = new_id[spent]
                out.dropped_at[d_id] = 0
                out.drop_time_s[d_id] = new_t[spent]
                hopeless = int(d_id.size)
                new_t, new_id = new_t[~spent], new_id[~spent]
        counters = []
        core_s = 0.0
        for s, st in enumerate(self.stages):
            if st.dispatched:
                if new_t.size:
                    self._dispatch(st, new_t, new_id, t1)
                if st.pending is not None and st.pending[0] < t1:  # no request came after the switch
                    self._switch(st, st.pending[1], st.pending[0])
            elif new_t.size:
                pool = st.pools[0]
                pool.q_t.extend(new_t.tolist())
                pool.q_id.extend(new_id.tolist())
                if s > 0:  # departures of the previous stage come unordered across replicas
                    order = sorted(range(len(pool.q_t)), key=pool.q_t.__getitem__)
                    pool.q_t = [pool.q_t[i] for i in order]
                    pool.q_id = [pool.q_id[i] for i in order]
            outs = [self._pool_runner(st, pool)(s, st, pool, t0, t1) for pool in st.pools]
            if len(outs) == 1:
                new_t, new_id = outs[0][0], outs[0][1]
            else:
                new_t = np.concatenate([o[0] for o in outs])
                new_id = np.concatenate([o[1] for o in outs])
            counters.append(StageCounters.of_pools([o[2] for o in outs]))
            if s == 0 and hopeless:
                counters[0] = replace(counters[0], dropped=counters[0].dropped + hopeless)
            if st.dispatched:
                _retire_drained(st)
            for pool in st.pools:
                core_s += allocated_core_seconds(t0, t1, pool.replicas)
                # forget replicas that are gone for good
                pool.replicas = [r for r in pool.replicas if r.dealloc_s() > t1]
            if st.dispatched:  # forget pools that are gone for good
                st.pools = [p for p in st.pools if p.setting is not None or p.replicas or p.q_t or p.d_t]
            if s + 1 < len(self.stages):
                out.stage_in_s[s + 1, new_id] = new_t
        # completions: last-stage departures with finish in [t0, t1); later ones are reported with their interval
        self._done_t.append(new_t)
        self._done_id.append(new_id)
        done_t = np.concatenate(self._done_t)
        done_id = np.concatenate(self._done_id)
        now = done_t < t1
        later = ~now
        self._done_t, self._done_id = [done_t[later]], [done_id[later]]
        return IntervalCounters(t0, t1, first, last, done_id[now], core_s, tuple(counters))

    def _pool_runner(self, st: StageState, pool: PoolState):
        """The loop that runs ``pool`` over an interval: EDF's, FIFO's with the serving overhead where a replica
        of the pool has one (or decoded requests are left from one), else FIFO's."""
        if st.spec.queue_discipline == "edf":
            return self._run_pool_edf
        if pool.d_t or any(r.overhead_s > 0 or r.resized_overhead_s > 0 for r in pool.replicas):
            return self._run_pool_decode
        return self._run_pool

    def _run_pool(
        self, s: int, st: StageState, pool: PoolState, t0: float, t1: float
    ) -> tuple[np.ndarray, np.ndarray, PoolCounters]:
        timeout = self.spec.batch_timeout_s
        deadline = self._deadline
        draw = self._draws[s]
        entry_order = s == 0  # the queue is in order of entry into the pipeline, hence of drop deadline
        q_t, q_id = pool.q_t, pool.q_id
        n = len(q_t)
        earliest = min(map(deadline.__getitem__, q_id)) if q_id and not entry_order else _INF  # of any queued
        heap = [(r.available_s(), r.seq, r) for r in pool.replicas if r.retire_s > t0 or r.free_s > t0]
        heap = [h for h in heap if h[0] < h[2].retire_s]
        heapq.heapify(heap)
        head = 0
        b_start: list[float] = []  # per batch: start, finish, size, replica
        b_finish: list[float] = []
        b_size: list[int] = []
        b_rep: list[Replica] = []
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
            # requests inside the batch that expired while it was filling are dropped, not served (the first
            # stage's queue is in order of drop deadline, so its first and last tell; a later stage's need not be)
            pos = range(head, head + k)
            if (
                (deadline[q_id[head + k - 1]] < start or deadline[q_id[head]] < start)
                if entry_order
                else start > earliest and any(deadline[q_id[p]] < start for p in pos)
            ):
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
            finish = start + r.service_s(k_eff, start, draw)
            r.free_s = finish
            b_start.append(start)
            b_finish.append(finish)
            b_size.append(k_eff)
            b_rep.append(r)
            heapq.heapreplace(heap, (finish if finish > r.ready_s else r.ready_s, seq, r))

        ids = np.asarray(q_id[:head], dtype=np.int64)
        out_id = ids[np.asarray(served_pos, dtype=np.int64)] if served_pos else _NO_IDS
        d_id = ids[np.asarray(dropped_pos, dtype=np.int64)] if dropped_pos else _NO_IDS
        pool.q_t = q_t[head:]
        pool.q_id = q_id[head:]
        return self._pool_outcomes(s, st, pool, t0, t1, out_id, (b_start, b_finish, b_size, b_rep), d_id, drop_times)

    def _run_pool_decode(
        self, s: int, st: StageState, pool: PoolState, t0: float, t1: float
    ) -> tuple[np.ndarray, np.ndarray, PoolCounters]:
        """`_run_pool` for a pool whose replicas pay a serving overhead (the module docstring, *Serving overhead*).

        ``pool.q_t``/``q_id`` are the requests not yet decoded (by arrival at the stage), ``pool.d_t``/``d_id`` the
        decoded ones (by the end of their decoding, the time the batcher sees them arrive). One iteration is one
        action of the replica whose core is free first: decode the oldest undecoded request, or start a batch.
        """
        timeout = self.spec.batch_timeout_s
        deadline = self._deadline
        draw = self._draws[s]
        q_t, q_id = pool.q_t, pool.q_id
        d_t, d_id = list(pool.d_t), list(pool.d_id)
        n = len(q_t)
        heap = [(r.available_s(), r.seq, r) for r in pool.replicas if r.retire_s > t0 or r.free_s > t0]
        heap = [h for h in heap if h[0] < h[2].retire_s]
        heapq.heapify(heap)
        head = 0  # the oldest request not yet decoded
        dh = 0  # the oldest decoded request not yet taken
        b_start: list[float] = []
        b_finish: list[float] = []
        b_size: list[int] = []
        b_rep: list[Replica] = []
        served: list[int] = []  # request ids, in batch order
        dropped: list[int] = []
        drop_times: list[float] = []
        while heap and (head < n or dh < len(d_t)):
            avail, seq, r = heap[0]
            if avail >= r.retire_s:
                heapq.heappop(heap)
                continue
            if avail >= t1:
                break
            t = avail
            if head < n and q_t[head] <= t:
                # decoding comes first: the core decodes the requests that have arrived, one after the other for as
                # long as it stays the core free first (without going through the heap)
                nxt = (heap[1] if len(heap) == 2 or heap[1] < heap[2] else heap[2]) if len(heap) > 1 else None
                while True:
                    i = q_id[head]
                    head += 1
                    if deadline[i] < t:  # past its drop limit: dropped, never decoded
                        dropped.append(i)
                        drop_times.append(t)
                    else:
                        end = t + (r.overhead_s if t < r.resize_at_s else r.resized_overhead_s)
                        if not d_t or end >= d_t[-1]:
                            d_t.append(end)
                            d_id.append(i)
                        else:
                            j = bisect_right(d_t, end, dh)
                            d_t.insert(j, end)
                            d_id.insert(j, i)
                        t = end
                    if head == n or q_t[head] > t or t >= t1 or t >= r.retire_s:
                        break
                    if nxt is not None and (t > nxt[0] or (t == nxt[0] and seq > nxt[1])):
                        break
                if t > avail:
                    r.free_s = t
                heapq.heapreplace(heap, (t, seq, r))
                continue
            # the batch the replica would start, by the batching rules over the decoded requests
            nd = len(d_t)
            start = _INF
            k = 0
            if dh < nd:
                a0 = d_t[dh]
                tb = t if t > a0 else a0
                if tb < t1:  # the oldest decoded requests that passed the drop limit are dropped
                    while deadline[d_id[dh]] < tb:
                        dropped.append(d_id[dh])
                        drop_times.append(tb)
                        dh += 1
                        if dh == nd:
                            break
                        a0 = d_t[dh]
                        tb = t if t > a0 else a0
                if dh < nd:
                    b = r.batch
                    last = dh + b - 1
                    if last < nd and d_t[last] <= tb:
                        start, k = tb, b
                    else:
                        due = a0 + timeout
                        if tb >= due:
                            start = tb
                        else:
                            fill = d_t[last] if last < nd else _INF
                            start = due if due < fill else fill
                        k = -1
            # decoding comes first: a request that arrives by the time the batch would start is decoded before it
            if head < n and q_t[head] <= start:
                ta = q_t[head]
                at = t if t > ta else ta
                if at >= t1:
                    break
                if at >= r.retire_s:
                    heapq.heappop(heap)
                    continue
                i = q_id[head]
                head += 1
                if deadline[i] < at:  # past its drop limit: dropped, never decoded
                    dropped.append(i)
                    drop_times.append(at)
                    continue
                end = at + (r.overhead_s if at < r.resize_at_s else r.resized_overhead_s)
                if not d_t or end >= d_t[-1]:
                    d_t.append(end)
                    d_id.append(i)
                else:
                    j = bisect_right(d_t, end, dh)
                    d_t.insert(j, end)
                    d_id.insert(j, i)
                r.free_s = end
                heapq.heapreplace(heap, (end, seq, r))
                continue
            if start >= t1:
                break  # later arrivals (next interval) may still join this batch, or be decoded first
            if start >= r.retire_s:
                heapq.heappop(heap)
                continue
            if k < 0:
                k = bisect_right(d_t, start, dh, min(dh + r.batch, nd)) - dh
            keep = []
            for j in range(dh, dh + k):  # requests that expired while the batch was filling are dropped
                if deadline[d_id[j]] < start:
                    dropped.append(d_id[j])
                    drop_times.append(start)
                else:
                    keep.append(d_id[j])
            dh += k
            if not keep:
                continue
            served.extend(keep)
            k_eff = len(keep)
            finish = start + r.service_s(k_eff, start, draw)
            r.free_s = finish
            b_start.append(start)
            b_finish.append(finish)
            b_size.append(k_eff)
            b_rep.append(r)
            heapq.heapreplace(heap, (finish, seq, r))

        pool.q_t, pool.q_id = q_t[head:], q_id[head:]
        pool.d_t, pool.d_id = d_t[dh:], d_id[dh:]
        out_id = np.asarray(served, dtype=np.int64) if served else _NO_IDS
        d_ids = np.asarray(dropped, dtype=np.int64) if dropped else _NO_IDS
        return self._pool_outcomes(s, st, pool, t0, t1, out_id, (b_start, b_finish, b_size, b_rep), d_ids, drop_times)

    def _pool_outcomes(
        self,
        s: int,
        st: StageState,
        pool: PoolState,
        t0: float,
        t1: float,
        out_id: np.ndarray,
        batches: tuple[list[float], list[float], list[int], list[Replica]],
        d_id: np.ndarray,
        drop_times: list[float],
    ) -> tuple[np.ndarray, np.ndarray, PoolCounters]:
        """Write one pool's interval into the per-request outcomes and count it: ``out_id`` were served in the
        batches ``(start, finish, size, replica)`` (in order), ``d_id`` dropped at ``drop_times``; ``pool``'s
        queue already holds what is left."""
        b_start, b_finish, b_size, b_rep = batches
        out = self.outcomes
        sizes = np.asarray(b_size, dtype=np.int64)
        out_t = np.repeat(np.asarray(b_finish), sizes) if b_size else np.empty(0)
        if b_size and any(r.delay_s or r.jitter_s for r in pool.replicas):  # time off the core: it leaves later
            out_t = out_t + np.repeat([r.delay_s for r in b_rep], sizes)
            jitter = np.repeat([r.jitter_s for r in b_rep], sizes)
            if jitter.any():
                out_t = out_t + jitter * self._jitter[s].exponential(1.0, out_t.size)
        if out_id.size:
            out.finish_s[s, out_id] = out_t
            out.acc_rank[s, out_id] = np.repeat([r.acc_rank for r in b_rep], sizes)
            out.acc_raw[s, out_id] = np.repeat([r.acc_raw for r in b_rep], sizes)
            out.batch_size[s, out_id] = np.repeat(sizes, sizes)
        if self.batch_log is not None:
            self.batch_log.extend(
                (s, b0, b1, k, r.seq, r.variant) for b0, b1, k, r in zip(b_start, b_finish, b_size, b_rep, strict=True)
            )
        if d_id.size:
            out.dropped_at[d_id] = s
            out.drop_time_s[d_id] = drop_times
        taken = int(out_id.size + d_id.size)
        self.events += taken
        if taken:
            pool.last_take_s = max(max(b_start, default=-_INF), max(drop_times, default=-_INF))

        busy_s = float(np.sum(np.asarray(b_finish) - np.asarray(b_start))) if b_start else 0.0
        serving_s, serving_now = serving(t0, t1, pool.replicas)
        counters = PoolCounters(
            key=pool.key,
            variant=pool.last.variant,
            share=st.dispatch.share(pool.key) if st.dispatched else 1.0,
            served_id=out_id,
            dropped=int(d_id.size),
            busy_s=busy_s,
            serving_s=serving_s,
            replicas_serving=serving_now,
            queue_len=int(bisect_right(pool.q_t, t1)) + len(pool.d_t),
            batches=len(b_size),
            batched=int(sizes.sum()),
        )
        return out_t, out_id, counters

    def _run_pool_edf(
        self, s: int, st: StageState, pool: PoolState, t0: float, t1: float
    ) -> tuple[np.ndarray, np.ndarray, PoolCounters]:
        """`_run_pool` for a pool whose queue is earliest-deadline-first (``queue_discipline: edf``).

        The batching rule is FIFO's, on the waiting requests in order of arrival: a replica takes a batch when b
        are waiting, or when the oldest has waited ``batch_timeout_s``. What it takes differs: the (up to) b
        waiting requests with the earliest SLO deadlines (ties: the earlier arrival at the stage), of those that
        have arrived when the batch starts. A replica that looks at the queue first drops every waiting request
        past its drop limit (FIFO drops those at the head). With one SLA for every request the deadlines are in
        order of pipeline entry, so on a stage whose queue is in that order (the first stage; any stage whose
        upstream keeps the order) EDF forms exactly FIFO's batches.
        """
        timeout = self.spec.batch_timeout_s
        drop_at, slo = self._deadline, self._slo
        draw = self._draws[s]
        q_t, q_id = pool.q_t, pool.q_id
        n = len(q_t)
        heap = [(r.available_s(), r.seq, r) for r in pool.replicas if r.retire_s > t0 or r.free_s > t0]
        heap = [h for h in heap if h[0] < h[2].retire_s]
        heapq.heapify(heap)
        taken = bytearray(n)
        by_drop = [(drop_at[i], pos) for pos, i in enumerate(q_id)]  # lazy: entries of taken requests are skipped
        heapq.heapify(by_drop)
        by_slo: list[tuple[float, float, int]] = []  # (SLO deadline, arrival, position) of the admitted requests
        admitted = 0  # positions below it are (or were) in by_slo
        head = 0  # the oldest waiting request is the first position >= head not taken
        b_start: list[float] = []
        b_finish: list[float] = []
        b_size: list[int] = []
        b_rep: list[Replica] = []
        served: list[int] = []
        dropped: list[int] = []
        drop_times: list[float] = []

        def oldest() -> int:
            nonlocal head
            while head < n and taken[head]:
                head += 1
            return head

        def drop_expired(t: float) -> bool:
            hit = False
            while by_drop and by_drop[0][0] < t:
                _d, pos = heapq.heappop(by_drop)
                if not taken[pos]:
                    taken[pos] = 1
                    dropped.append(q_id[pos])
                    drop_times.append(t)
                    hit = True
            return hit

        while heap:
            avail, seq, r = heap[0]
            if avail >= r.retire_s:
                heapq.heappop(heap)
                continue
            if avail >= t1:
                break
            h = oldest()
            if h == n:
                break
            t = max(avail, q_t[h])
            if t >= t1:
                break
            if t >= r.retire_s:
                heapq.heappop(heap)
                continue
            while drop_expired(t):
                h = oldest()
                if h == n:
                    break
                t = max(avail, q_t[h])
            if h == n or t >= t1:
                break
            b = r.batch
            a0 = q_t[h]
            last, k = h, 0  # the b-th waiting request in order of arrival
            while last < n:
                if not taken[last]:
                    k += 1
                    if k == b:
                        break
                last += 1
            if last < n and q_t[last] <= t:
                start = t
            else:
                due = a0 + timeout
                fill = q_t[last] if last < n else _INF
                start = t if t >= due else (due if due < fill else fill)
            if start >= t1:
                break  # later arrivals (next interval) may still join this batch: decide it then
            if start >= r.retire_s:
                heapq.heappop(heap)
                continue
            while admitted < n and q_t[admitted] <= start:
                heapq.heappush(by_slo, (slo[q_id[admitted]], q_t[admitted], admitted))
                admitted += 1
            batch, later = [], []
            while by_slo and len(batch) < b:
                entry = heapq.heappop(by_slo)
                if taken[entry[2]]:
                    continue
                (later if entry[1] > start else batch).append(entry)
            for entry in later:  # admitted for a later start of another replica: not yet arrived here
                heapq.heappush(by_slo, entry)
            keep = []
            for _slo, _t, pos in batch:
                taken[pos] = 1
                if drop_at[q_id[pos]] < start:
                    dropped.append(q_id[pos])
                    drop_times.append(start)
                else:
                    keep.append(q_id[pos])
            if not keep:
                continue
            served.extend(keep)
            k_eff = len(keep)
            finish = start + r.service_s(k_eff, start, draw)
            r.free_s = finish
            b_start.append(start)
            b_finish.append(finish)
            b_size.append(len(keep))
            b_rep.append(r)
            heapq.heapreplace(heap, (finish if finish > r.ready_s else r.ready_s, seq, r))

        left = [pos for pos in range(n) if not taken[pos]]
        pool.q_t = [q_t[pos] for pos in left]
        pool.q_id = [q_id[pos] for pos in left]
        out_id = np.asarray(served, dtype=np.int64) if served else _NO_IDS
        d_id = np.asarray(dropped, dtype=np.int64) if dropped else _NO_IDS
        return self._pool_outcomes(s, st, pool, t0, t1, out_id, (b_start, b_finish, b_size, b_rep), d_id, drop_times)


def empirical_service(spec: PipelineSpec, stage: StageSpec) -> bool:
    """Whether ``stage`` draws its service times (the ``empirical`` model): the spec's ``service_model``, where
    ``auto`` is ``empirical`` for a stage whose profile keeps run times and ``deterministic`` otherwise."""
    if spec.service_model == "auto":
        return stage.latency.has_runs
    return spec.service_model == "empirical"


def has_overhead(stage: StageSpec) -> bool:
    """Whether some point of the stage's profile has a positive serving overhead."""
    return any(p.overhead_s for p in stage.latency.points.values())


def _uniforms(rng: np.random.Generator, chunk: int = 4096) -> Iterator[float]:
    """Uniform draws in [0, 1) from ``rng``, drawn ``chunk`` at a time (one Python float per call of ``next``)."""
    while True:
        yield from rng.random(chunk).tolist()


def _startup(st: StageState, pool: VariantPool) -> float:
    return st.spec.variant(pool.variant).startup_s


def _retire_drained(st: StageState) -> None:
    """Retire the replicas of every removed pool whose queue is empty since the dispatcher left it out: at the
    last request it took, or when it was left out if it took none since."""
    for pool in st.pools:
        if pool.setting is None and pool.drain_from_s < _INF and not pool.q_t and not pool.d_t:
            at_s = max(pool.drain_from_s, pool.last_take_s)
            for r in pool.replicas:
                if r.retire_s > at_s:
                    r.retire_s = at_s
