"""The system side of the simulator: replicas, reconfiguration (rollouts) and what replicas cost.

- Reconfiguration is make-before-break. Changing only the replica count adds replicas that serve after the
  variant's ``startup_s`` (removals stop taking work at once and finish their batch). Changing variant, batch or
  cores rolls the stage out: a new replica set serves after ``startup_s``; the serving set keeps serving until
  then. A rollout ordered while another is still starting cancels the starting set and keeps the serving one
  until the newest set is ready, so a stage is never left without serving replicas by reconfiguring.
  Batch size is a container setting, so it changes by rollout too, as on Kubernetes.
- Cost: each replica's cores count from the decision that created it until it has retired and finished its last
  batch, so starting and draining replicas are paid for (allocated cores, DESIGN.md section 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rlscale.errors import RlscaleError
from rlscale.spec import StageSpec
from rlscale.types import StageConfig

_INF = math.inf


class Replica:
    """One replica: its setting, latency table, accuracy and lifetime (allocated, ready, retired, free)."""

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
class StageState:
    """One stage's replicas and its queue (parallel lists, sorted by arrival time at this stage)."""

    spec: StageSpec
    replicas: list[Replica] = field(default_factory=list)
    q_t: list[float] = field(default_factory=list)
    q_id: list[int] = field(default_factory=list)


def check_stage_config(stage: StageSpec, sc: StageConfig) -> None:
    """Raise if ``sc`` names an unknown variant or has a non-positive batch or core count."""
    stage.variant(sc.variant)
    if sc.batch < 1 or sc.replicas < 0 or sc.cores < 1:
        raise RlscaleError(f"stage {stage.name}: invalid config {sc}")


def reconfigure_stage(
    st: StageState, old: StageConfig, new: StageConfig, now_s: float, new_replica: Callable[..., Replica]
) -> None:
    """Move one stage from ``old`` to ``new`` at ``now_s`` (see the module docstring).

    Args:
        new_replica: ``new_replica(stage_spec, config, alloc_s=, ready_s=)`` makes a replica with a fresh sequence
            number.
    """
    live = [r for r in st.replicas if r.retire_s == _INF]
    startup = st.spec.variant(new.variant).startup_s
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
            total += (hi - lo) * r.cores
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
