"""The system side of the simulator: replicas, reconfiguration (rollouts) and what replicas cost.

- Reconfiguration is make-before-break. Changing only the replica count adds replicas that serve after the
  variant's ``startup_s`` (removals stop taking work at once and finish their batch). Changing variant, batch or
  cores rolls the stage out: a new replica set serves after ``startup_s``; the serving set keeps serving until
  then. A rollout ordered while another is still starting cancels the starting set and keeps the serving one
  until the newest set is ready, so a stage is never left without serving replicas by reconfiguring.
  Batch size is a container setting, so it changes by rollout too, as on Kubernetes.
- Cost: each replica's cores count from the decision that created it until it has retired and finished its last
  batch, so starting and draining replicas are paid for (allocated cores, DESIGN.md section 3).
- In-place resize (the spec's ``in_place_resize``). A change of a pool's cores alone (same variant and batch) does
  not roll out: every live replica (serving or still starting) is resized in place, serving at the new cores
  ``resize_s`` after the decision and at the old ones until then; a batch runs at the cores in force when it
  starts, so a batch in progress at the resize finishes at its old speed. The replicas are charged the new cores
  from the decision (the request Kubernetes patches is what the pod holds), with no overlap cost. A replica-count
  change in the same decision adds or retires replicas as a scaling does (new ones start at the new cores). A
  resize ordered before an earlier one applied replaces it (the earlier one never serves).
- Pools. A stage holds one `PoolState` per pool, each with its own replicas and queue. A stage whose spec allows
  one pool (``max_pools: 1``, one Kubernetes Deployment) has one pool state for good, whatever variant it runs:
  everything above applies to it unchanged, a variant change included. A stage with ``max_pools > 1`` (one
  Deployment per variant) keys its pools by variant, and each reconfigures on its own by the rules above: a
  batch or cores change is a rollout of that pool, a replica change a scaling; a pool that appears pays its
  variant's ``startup_s``; a removed pool stops receiving requests when the stage's dispatcher switches to the
  new shares, drains its queue on its own replicas, and its replicas retire once the queue is empty
  (`rlscale.sim.engine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rlscale.errors import RlscaleError
from rlscale.spec import StageSpec
from rlscale.types import StageConfig, VariantPool

_INF = math.inf


class Replica:
    """One replica: its setting, service tables, accuracy and lifetime (allocated, ready, retired, free).

    ``lat[k]`` is the service time of a batch of k (`service_tables`): the profile's p99 (``deterministic``), or
    its mean, which ``noise[k]`` (run-to-run factors, mean 1) scales per batch (``empirical``; ``noise`` is None
    when there is nothing to draw). ``overhead_s`` is the serving cost of one request on its core (0: none).
    """

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
        "resize_at_s",
        "resized_lat",
        "charges",
        "empirical",
        "noise",
        "resized_noise",
        "overhead_s",
        "resized_overhead_s",
        "delay_s",
        "jitter_s",
    )

    def __init__(
        self, stage: StageSpec, sc: VariantPool, alloc_s: float, ready_s: float, seq: int, empirical: bool = False
    ) -> None:
        self.variant = sc.variant
        self.cores = sc.cores
        self.batch = sc.batch
        self.empirical = empirical
        # service time of a batch of k requests, k = 0..b (index 0 unused), and its run-to-run factors
        self.lat, self.noise = service_tables(stage, sc, empirical)
        self.overhead_s = stage.latency.overhead_s(sc.variant, sc.cores)
        self.delay_s = stage.latency.delay_s(sc.variant, sc.cores)
        self.jitter_s = stage.latency.jitter_s(sc.variant, sc.cores)
        self.acc_rank = stage.rank_accuracy(sc.variant)
        self.acc_raw = stage.variant(sc.variant).accuracy
        self.alloc_s = alloc_s
        self.ready_s = ready_s
        self.retire_s = _INF
        self.free_s = ready_s
        self.seq = seq
        self.resize_at_s = _INF  # batches starting from then run at `resized_lat` (an in-place resize)
        self.resized_lat: list[float] = self.lat
        self.resized_noise = self.noise
        self.resized_overhead_s = self.overhead_s
        self.charges: list[tuple[float, int]] | None = None  # (from_s, cores) after each in-place resize

    def resize(self, stage: StageSpec, sc: VariantPool, now_s: float, resize_s: float) -> None:
        """Resize in place to ``sc.cores``: charged from ``now_s``, serving from ``now_s + resize_s``."""
        if self.resize_at_s <= now_s:  # an earlier resize has applied
            self.lat, self.noise, self.overhead_s = self.resized_lat, self.resized_noise, self.resized_overhead_s
        if self.charges is None:
            self.charges = [(self.alloc_s, self.cores)]
        self.charges.append((now_s, sc.cores))
        self.cores = sc.cores
        self.resized_lat, self.resized_noise = service_tables(stage, sc, self.empirical)
        self.resized_overhead_s = stage.latency.overhead_s(sc.variant, sc.cores)
        self.delay_s = stage.latency.delay_s(sc.variant, sc.cores)
        self.jitter_s = stage.latency.jitter_s(sc.variant, sc.cores)
        self.resize_at_s = now_s + resize_s

    def service_s(self, k: int, start_s: float, draw) -> float:
        """How long a batch of ``k`` starting at ``start_s`` takes: at the cores in force then (an in-place resize
        applies to batches starting from `resize_at_s`), scaled, under the empirical service model, by a run-to-run
        factor drawn with ``draw()`` (uniform in [0, 1))."""
        if start_s < self.resize_at_s:
            service, noise = self.lat[k], self.noise
        else:
            service, noise = self.resized_lat[k], self.resized_noise
        if noise is not None and noise[k] is not None:
            factors = noise[k]
            service *= factors[int(draw() * len(factors))]
        return service

    def core_seconds(self, lo: float, hi: float) -> float:
        """Cores allocated over ``[lo, hi)`` (inside its lifetime), by the cores charged at each moment."""
        if self.charges is None:
            return (hi - lo) * self.cores
        total = 0.0
        for i, (start, cores) in enumerate(self.charges):
            end = self.charges[i + 1][0] if i + 1 < len(self.charges) else _INF
            a, b = max(lo, start), min(hi, end)
            if b > a:
                total += (b - a) * cores
        return total

    def dealloc_s(self) -> float:
        """When its cores are released: after retiring and finishing the batch in hand."""
        return max(self.retire_s, self.free_s) if self.retire_s < _INF else _INF

    def available_s(self) -> float:
        return self.free_s if self.free_s > self.ready_s else self.ready_s


def service_tables(stage: StageSpec, sc: VariantPool, empirical: bool) -> tuple[list[float], list | None]:
    """A replica's service times by batch size k = 0..b (index 0 unused) and, for the ``empirical`` model, the
    run-to-run factors to scale each batch by (`rlscale.profiles.LatencyModel.noise`; None: nothing to draw).

    ``deterministic``: the p99 of the profile (``latency_s``), a fixed time, as the simulator always had it.
    ``empirical``: the mean (``mean_s``), times a factor drawn per batch among the factors of the nearest point
    with runs; a variant without runs draws nothing (its mean, which a p99-only profile answers with its p99).
    """
    latency, v, c = stage.latency, sc.variant, sc.cores
    if not empirical:
        return [0.0] + [latency.latency_s(v, k, c) for k in range(1, sc.batch + 1)], None
    lat = [0.0] + [latency.mean_s(v, k, c) for k in range(1, sc.batch + 1)]
    noise: list[list[float] | None] = [None]
    for k in range(1, sc.batch + 1):
        factors = latency.noise(v, k, c)
        noise.append(factors.tolist() if factors is not None and factors.size else None)
    return lat, (noise if any(f is not None for f in noise) else None)


@dataclass
class PoolState:
    """One pool of a stage: its replicas and its queue (parallel lists, sorted by arrival time at the stage).

    With a serving overhead (`rlscale.sim.engine`), ``q_t``/``q_id`` hold the requests not yet decoded and
    ``d_t``/``d_id`` those decoded and waiting for a batch (by the time their decoding ends, sorted); without,
    ``d_t`` stays empty.

    Attributes:
        key: the pool's variant in a stage with ``max_pools > 1``; ``""`` for the one pool of the other stages.
        setting: the pool's configuration in the target (None: removed from it, draining or gone).
        last: the last configuration applied to it (what a reconfiguration starts from).
        drain_from_s: when the dispatcher stopped sending it requests (inf: it still may).
        last_take_s: when it last took a request off its queue (into a batch, or dropped).
    """

    spec: StageSpec
    key: str
    setting: VariantPool | None
    last: VariantPool
    replicas: list[Replica] = field(default_factory=list)
    q_t: list[float] = field(default_factory=list)
    q_id: list[int] = field(default_factory=list)
    d_t: list[float] = field(default_factory=list)
    d_id: list[int] = field(default_factory=list)
    drain_from_s: float = _INF
    last_take_s: float = -_INF


@dataclass
class StageState:
    """One stage: its pools (in the target's order, then those draining) and, where it may run several, the
    dispatcher state (`rlscale.sim.engine`).

    Attributes:
        dispatched: whether the spec lets the stage run several pools (one pool per variant, a dispatcher).
        pools: the pool states.
        dispatch: the dispatcher in force (`rlscale.sim.dispatch.SmoothWeightedRoundRobin`; None when not
            dispatched: everything goes to the one pool).
        pending: ``(time_s, dispatcher)`` the dispatcher switches to at ``time_s`` (the new pools are ready).
    """

    spec: StageSpec
    dispatched: bool = False
    pools: list[PoolState] = field(default_factory=list)
    dispatch: object = None
    pending: tuple[float, object] | None = None

    @property
    def replicas(self) -> list[Replica]:
        """Every replica of every pool."""
        if len(self.pools) == 1:
            return self.pools[0].replicas
        return [r for p in self.pools for r in p.replicas]

    @property
    def q_t(self) -> list[float]:
        """Arrival times of every queued request, pool after pool (then, where a serving overhead applies, the
        decoding end times of the decoded ones, which are queued too)."""
        if len(self.pools) == 1 and not self.pools[0].d_t:
            return self.pools[0].q_t
        return [t for p in self.pools for t in (*p.q_t, *p.d_t)]

    def pool(self, key: str) -> PoolState | None:
        """The pool state called ``key``, if any."""
        for p in self.pools:
            if p.key == key:
                return p
        return None


def check_stage_config(stage: StageSpec, sc: StageConfig) -> None:
    """Raise if ``sc`` names an unknown variant, has a non-positive batch or core count, or runs more pools than
    the stage's ``max_pools``."""
    if len(sc.pools) > stage.max_pools:
        raise RlscaleError(f"stage {stage.name}: {len(sc.pools)} pools but max_pools is {stage.max_pools}: {sc}")
    for p in sc.pools:
        stage.variant(p.variant)
        if p.batch < 1 or p.replicas < 0 or p.cores < 1:
            raise RlscaleError(f"stage {stage.name}: invalid config {sc}")


def reconfigure_stage(
    st: PoolState,
    old: VariantPool,
    new: VariantPool,
    now_s: float,
    new_replica: Callable[..., Replica],
    resize_s: float | None = None,
) -> None:
    """Move one pool (a single-pool stage's only one) from ``old`` to ``new`` at ``now_s`` (see the module
    docstring).

    Args:
        new_replica: ``new_replica(stage_spec, config, alloc_s=, ready_s=)`` makes a replica with a fresh sequence
            number.
        resize_s: with in-place resizing, seconds until a cores-only change serves (None: it rolls out).
    """
    live = [r for r in st.replicas if r.retire_s == _INF]
    startup = st.spec.variant(new.variant).startup_s
    if resize_s is not None and (old.variant, old.batch) == (new.variant, new.batch) and old.cores != new.cores:
        for r in live:
            r.resize(st.spec, new, now_s, resize_s)
        old = new  # the replica count changes as a scaling, below
    if (old.variant, old.batch, old.cores) == (new.variant, new.batch, new.cores):
        if new.replicas > len(live):
            for _ in range(new.replicas - len(live)):
                st.replicas.append(new_replica(st.spec, new, alloc_s=now_s, ready_s=now_s + startup))
        else:
            # retire the youngest first: cancels pending scale-ups before touching serving replicas
            for r in sorted(live, key=lambda r: (r.ready_s, r.seq), reverse=True)[: len(live) - new.replicas]:
                r.retire_s = now_s
        return
    ready = now_s + startup
    for r in st.replicas:
        if r.ready_s > now_s:  # still starting up (an earlier target): cancelled
            r.retire_s = min(r.retire_s, now_s)
        elif r.retire_s > now_s:
            # serving replicas keep serving until the new set is ready, even those an earlier rollout
            # had scheduled to retire sooner: that rollout's replacements were just cancelled
            r.retire_s = ready
    for _ in range(new.replicas):
        st.replicas.append(new_replica(st.spec, new, alloc_s=now_s, ready_s=ready))


def allocated_core_seconds(t0: float, t1: float, replicas: list[Replica]) -> float:
    """Core-seconds allocated in ``[t0, t1)``: from each replica's creation until its cores are released."""
    total = 0.0
    for r in replicas:
        lo = max(t0, r.alloc_s)
        hi = min(t1, r.dealloc_s())
        if hi > lo:
            total += (hi - lo) * r.cores if r.charges is None else r.core_seconds(lo, hi)
    return total


def serving(t0: float, t1: float, replicas: list[Replica]) -> tuple[float, int]:
    """Replica-seconds able to serve in ``[t0, t1)``, and the replicas able to serve at ``t1``."""
    serving_s = 0.0
    serving_now = 0
    for r in replicas:
        lo = max(t0, r.ready_s)
        hi = min(t1, r.retire_s)
        if hi > lo:
            serving_s += hi - lo
        if r.ready_s <= t1 and r.retire_s > t1:
            serving_now += 1
    return serving_s, serving_now
