"""The control step: observe, decide, guard, apply. The only implementation of rlscale's loop (DESIGN section 1).

The simulator runner, the Gymnasium environment and the Kubernetes sidecar all call `step` (or `decide`, where
they observe on their own), so ``simulate`` and ``compare`` measure exactly the decision path the sidecar deploys:

```
 Cluster.observe() -> PipelineState -> Policy.decide() -> proposal -> Guard.project() -> Limits.apply()
                   -> Cluster.apply() -> Outcome
```

After the guard, every decision of every policy (guarded or not) passes the spec's hard limits (`Limits`): the
core budget is a hard cap (a configuration over it is replaced by the maximum-capacity configuration within it,
`rlscale.model.fit_budget`), then the reconfiguration budget of the spec's ``damping`` section (`Damper`: a
minimum dwell after a rollout, at most N rollouts per stage per window, scale-down stabilisation as in the HPA's
``behavior``; scaling up is never delayed). The damping is off unless the spec sets it. The limits and their state
are held by the caller, never by this module: a `Controller` owns its policy, guard and `Limits` (one per episode
and per sidecar), as Ray Serve's autoscaling state is held by its controller.

A *guard* (the safety layer, `ilp_baseline.safety.SafetyLayer`) is optional and explicit: every policy name has a
default (`guard_default`), a flag changes it, and every result records it. Faults split as in kopf: `step` lets the
cluster's own errors out of ``observe`` (`rlscale.errors.TemporaryError` / `PermanentError`: the caller holds, and
backs off or not), wraps a policy's or a guard's exception in `DecisionError` (the caller holds and counts it), and
returns what ``apply`` reported in the `Outcome`, whose `OutcomeKind` says what the step did.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from rlscale.interfaces import Cluster, Policy
from rlscale.model import fit_budget, replicas_for, stage_capacity_rps
from rlscale.predictors import last_interval_peak_rps
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

# policies whose name means "behind the safety layer" by default; every other policy runs as published (the IPA
# ILP, FA2, RIM, the HPA and the static ones plan their own feasible configurations), unless a flag says otherwise
GUARDED_BY_DEFAULT = frozenset({"ppo"})


def guard_default(policy: str) -> bool:
    """Whether ``policy`` runs behind the guard unless a flag says otherwise (``ppo``: yes; ``ppo-raw``: no)."""
    return policy in GUARDED_BY_DEFAULT


@dataclass(frozen=True)
class Projection:
    """What the guard did to one proposal.

    Attributes:
        load_rps: the load the feasible set was taken at (the protected floor).
        feasible_input: the proposal was already feasible and came back unchanged.
        infeasible: nothing was feasible at the load: the result is the maximum-capacity configuration.
        distance: weighted distance from the proposal to the result (0 when unchanged).
        changed_stages: the stages the guard moved.
        capacity_rps: the result's capacity when ``infeasible`` (else NaN).
        ms: time the projection took.
    """

    load_rps: float
    feasible_input: bool
    infeasible: bool = False
    distance: float = 0.0
    changed_stages: tuple[str, ...] = ()
    capacity_rps: float = float("nan")
    ms: float = 0.0

    def explain(self) -> str:
        """A clause for a decision log line (empty when the proposal passed unchanged)."""
        if self.infeasible:
            return f"safety: nothing is feasible at {self.load_rps:.1f} rps, max capacity"
        if not self.feasible_input:
            return f"safety moved {', '.join(self.changed_stages)} (distance {self.distance:.2f})"
        return ""


@runtime_checkable
class Guard(Protocol):
    """Projects a proposed configuration onto the feasible set (the safety layer)."""

    def project(self, proposed: PipelineConfig, state: PipelineState) -> tuple[PipelineConfig, Projection]: ...


class DecisionError(Exception):
    """The policy or the guard raised while deciding; the configuration in force should be held.

    Attributes:
        cause: the exception they raised.
    """

    def __init__(self, who: str, cause: BaseException) -> None:
        super().__init__(f"{who} failed to decide: {type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass(frozen=True)
class LimitReport:
    """What the hard limits did to one decision (`Limits.apply`).

    Attributes:
        budget_capped: the decision exceeded the core budget and was replaced by the maximum-capacity
            configuration within it.
        damped: the stages whose change the damping held back or softened.
        reasons: one clause per intervention, for logs.
    """

    budget_capped: bool = False
    damped: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def explain(self) -> str:
        """A clause for a decision log line (empty when the limits changed nothing)."""
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class Decision:
    """A policy's proposal, what the guard made of it, and what the hard limits made of that.

    Attributes:
        proposed: the policy's proposal.
        config: the configuration chosen (after the guard and the limits).
        projection: the guard's report (None: no guard).
        decision_s: time the decision took.
        limits: the limits' report (None: no limits were applied).
        planned_rps: the load the policy planned for, where it says (its ``last_load_rps``), else None.
    """

    proposed: PipelineConfig
    config: PipelineConfig
    projection: Projection | None
    decision_s: float
    limits: LimitReport | None = None
    planned_rps: float | None = None


class OutcomeKind(StrEnum):
    """What one control step did."""

    UNCHANGED = "unchanged"
    """The decision keeps the configuration in force, and nothing was off-spec: nothing was applied."""
    APPLIED = "applied"
    """The decision changed the configuration: it was applied."""
    REPAIRED = "repaired"
    """The decision keeps the configuration in force, and it was applied to the stages the cluster reported
    off-spec."""


@dataclass(frozen=True)
class Outcome:
    """One control step.

    Attributes:
        state: what the policy saw.
        decision: the proposal, the configuration chosen and the projection.
        changed: the chosen configuration differs from the one in force (so it was applied).
        applied: what ``Cluster.apply`` reported (the Kubernetes actuator's outcome; None in the simulator, or
            when nothing was applied).
        repaired: the stages the cluster reported off-spec (`Cluster.off_spec`: a pool left warm, a switch of
            pools under way, pods drifted from their cores) when the step decided; the decision was applied to
            them even when it keeps the configuration in force, so the cluster converges to what was decided.
    """

    state: PipelineState
    decision: Decision
    changed: bool
    applied: Any = None
    repaired: tuple[str, ...] = ()

    @property
    def config(self) -> PipelineConfig:
        return self.decision.config

    @property
    def kind(self) -> OutcomeKind:
        if self.changed:
            return OutcomeKind.APPLIED
        return OutcomeKind.REPAIRED if self.applied is not None else OutcomeKind.UNCHANGED


class Controller:
    """What a policy name means in every command: the policy, the guard in front of it (None: unguarded) and the
    hard limits after it (None: none), with their state: the one owner of the loop's state (no module keeps any).

    It is a `Policy` itself (``decide`` returns the guarded configuration and keeps the `Decision` in ``last``), so
    code that only needs a configuration takes it as it is; the runner, the env and the sidecar call `step`.

    Args:
        policy: the policy that proposes.
        guard: the safety layer in front of it, or None.
        limits: the spec's hard limits (`Limits`: the core budget and the damping, stateful), or None. One
            controller runs one episode or one sidecar: `fresh_limits` gives it its own for a new one.
    """

    def __init__(self, policy: Policy, guard: Guard | None = None, limits: Limits | None = None) -> None:
        self.policy = policy
        self.guard = guard
        self.limits = limits
        self.name = policy.name
        self.last: Decision | None = None

    @property
    def guard_name(self) -> str:
        """``safety`` or ``none``, as records say."""
        return "safety" if self.guard is not None else "none"

    def fresh_limits(self, spec: PipelineSpec) -> Limits:
        """New `Limits` of ``spec`` for a new episode or sidecar, kept as this controller's."""
        self.limits = Limits(spec)
        return self.limits

    def decide(self, state: PipelineState) -> PipelineConfig:
        self.last = decide(self.policy, self.guard, state)
        return self.last.config

    def step(self, cluster: Cluster, state: PipelineState | None = None) -> Outcome:
        """One control step on ``cluster`` with this controller's policy, guard and limits (`step`)."""
        outcome = step(cluster, self.policy, self.guard, state=state, limits=self.limits)
        self.last = outcome.decision
        return outcome

    def warm_start(self, state: PipelineState) -> Decision:
        """The first decision of a run, on its warm state: decided and limited as every step is (the budget cap;
        the damping does not count it: a warm install is no rollout), for the caller to install warm."""
        decision = decide(self.policy, self.guard, state)
        if self.limits is not None:
            config, report = self.limits.apply(state, decision.config, warm=True)
            decision = _limited(decision, config, report, 0.0)
        self.last = decision
        return decision


def as_controller(policy: Policy) -> Controller:
    """``policy`` if it is a `Controller`, else the policy with no guard."""
    return policy if isinstance(policy, Controller) else Controller(policy)


def decide(policy: Policy, guard: Guard | None, state: PipelineState) -> Decision:
    """The policy's proposal for ``state``, projected by ``guard`` when there is one, timed.

    Raises:
        DecisionError: the policy or the guard raised (a bug, or a load that is no data).
    """
    t0 = time.perf_counter()
    try:
        proposed = policy.decide(state)
    except Exception as exc:  # noqa: BLE001 - reported as a value the caller holds on
        raise DecisionError(policy.name, exc) from exc
    config, projection = proposed, None
    if guard is not None:
        try:
            config, projection = guard.project(proposed, state)
        except Exception as exc:  # noqa: BLE001
            raise DecisionError(f"{policy.name} + safety", exc) from exc
    return Decision(proposed, config, projection, time.perf_counter() - t0, planned_rps=planned_load_rps(policy))


def planned_load_rps(policy: object) -> float | None:
    """The load ``policy`` planned its last decision for, where it says (``last_load_rps``), else None."""
    value = getattr(policy, "last_load_rps", None)
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _limited(decision: Decision, config: PipelineConfig, report: LimitReport, spent_s: float) -> Decision:
    return Decision(
        decision.proposed, config, decision.projection, decision.decision_s + spent_s, report, decision.planned_rps
    )


def rollout_key(sc: StageConfig) -> tuple:
    """What a rollout changes: variant, batch size and cores per replica (new pods, a model load); for a stage with
    pools, the sorted keys of its pools. Equal keys mean no rollout; a pool leaving the mix changes the key
    without rolling anything out (`rolled_out` says which pools roll out)."""
    return tuple(sorted((p.variant, p.batch, p.cores) for p in sc.pools))


def rolled_out(old: StageConfig, new: StageConfig, *, in_place: bool = False) -> tuple[str, ...]:
    """The variants of ``new``'s pools that roll out from ``old``: a pool that appears (a variant ``old`` does not
    run) or whose batch size or cores per replica change. A share or replica change, or a pool leaving, is not a
    rollout. For single-pool stages: the new variant when the variant, batch or cores change.

    Args:
        in_place: the spec's ``in_place_resize``: a change of cores alone resizes the pods in place and is no
            rollout (`resized`).
    """
    if in_place:
        batch = {p.variant: p.batch for p in old.pools}
        return tuple(p.variant for p in new.pools if batch.get(p.variant) != p.batch)
    before = {p.variant: (p.batch, p.cores) for p in old.pools}
    return tuple(p.variant for p in new.pools if before.get(p.variant) != (p.batch, p.cores))


def resized(old: StageConfig, new: StageConfig) -> tuple[str, ...]:
    """The variants of ``new``'s pools whose cores per replica change and nothing else that rolls out (same variant
    and batch): what an in-place resize applies to where the spec enables it."""
    before = {p.variant: (p.batch, p.cores) for p in old.pools}
    out = []
    for p in new.pools:
        was = before.get(p.variant)
        if was is not None and was[0] == p.batch and was[1] != p.cores:
            out.append(p.variant)
    return tuple(out)


def is_rollout(old: PipelineConfig, new: PipelineConfig, *, in_place: bool = False) -> bool:
    """Whether moving from ``old`` to ``new`` rolls out new pods in some stage (`rolled_out`: a pool's variant,
    batch or cores change, or a pool appears; with ``in_place``, the spec's ``in_place_resize``, a cores change
    alone does not); a change that is not a rollout only scales replicas, shifts shares or resizes in place."""
    return any(rolled_out(a, b, in_place=in_place) for a, b in zip(old.stages, new.stages, strict=True))


class Damper:
    """The reconfiguration budget of the spec's ``damping`` section (`rlscale.spec.DampingSpec`), per stage.

    Rules, per stage, comparing the decision with the configuration in force at the state's time ``t``:

    - a *rollout* (`rolled_out`: a pool appears, or a pool's batch or cores change) is held back when the
      stage's last rollout was less than ``min_dwell_s`` ago, or when it already rolled out ``max_rollouts`` times
      within the last ``rollout_window_s``. Held back, the stage keeps its pools (variant, batch and cores) and
      each takes as many replicas as it needs to carry its share of what the decision would have carried (never
      fewer than it has: scaling up is never delayed). When even ``max_replicas`` of them cannot, the rollout
      goes through (the SLA first).
    - a *scale-down* of a pool's replicas (same variant, batch and cores) goes only down to the highest replica
      count recommended for that pool within the last ``scale_down_stabilization_s`` (the HPA's stabilisation
      window). Shares move freely.
    - scaling up is never delayed.

    Stateful (the rollout times and recent recommendations, bounded by the windows): one per episode or cluster.

    Args:
        spec: the pipeline (its ``damping`` and ``objective.rho_max``).
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.damping = spec.damping
        n = len(spec.stages)
        self._last_rollout = [-math.inf] * n
        self._rollouts: list[deque[float]] = [deque() for _ in range(n)]
        # per stage: (time, (variant, batch, cores) of a pool, its replicas), one entry per pool and decision
        self._recommended: list[deque[tuple[float, tuple[str, int, int], int]]] = [deque() for _ in range(n)]

    def apply(self, state: PipelineState, config: PipelineConfig) -> tuple[PipelineConfig, list[str], list[str]]:
        """``config`` damped against ``state.config``: (the result, the stages held back, a reason per stage)."""
        d, t, rho = self.damping, state.time_s, self.spec.objective.rho_max
        out, damped, reasons = [], [], []
        for s, (st, cur, new) in enumerate(zip(self.spec.stages, state.config.stages, config.stages, strict=True)):
            recs = self._recommended[s]
            for p in new.pools:  # one recommendation per pool (keyed by its variant, batch and cores)
                recs.append((t, (p.variant, p.batch, p.cores), p.replicas))
            while recs and recs[0][0] <= t - d.scale_down_stabilization_s:
                recs.popleft()
            rolls = self._rollouts[s]
            while rolls and rolls[0] <= t - d.rollout_window_s:
                rolls.popleft()
            if rolled_out(cur, new, in_place=self.spec.in_place_resize):
                why = ""
                if t - self._last_rollout[s] < d.min_dwell_s:
                    why = f"dwell {d.min_dwell_s:g}s"
                elif d.max_rollouts and len(rolls) >= d.max_rollouts:
                    why = f"{d.max_rollouts} rollouts per {d.rollout_window_s:g}s"
                if why:
                    held = self._hold(st, cur, new, rho)
                    if held is not None:
                        out.append(held)
                        damped.append(st.name)
                        reasons.append(f"damping held {st.name}'s rollout ({why})")
                        continue
                self._last_rollout[s] = t
                rolls.append(t)
                out.append(new)
                continue
            if d.scale_down_stabilization_s > 0:
                stable = self._stabilised(cur, new, recs)
                if stable != new:
                    out.append(stable)
                    damped.append(st.name)
                    kept = ", ".join(str(p.replicas) for p in stable.pools)
                    reasons.append(f"damping kept {st.name} at {kept} replicas (stabilisation)")
                    continue
            out.append(new)
        return PipelineConfig(tuple(out)), damped, reasons

    @staticmethod
    def _stabilised(cur: StageConfig, new: StageConfig, recs) -> StageConfig:
        """``new`` (no rollout from ``cur``) with each pool scaling down only to the highest replica count
        recommended for it within the window (never above what it runs now)."""
        running = {p.variant: p.replicas for p in cur.pools}
        pools = []
        for p in new.pools:
            n = p.replicas
            if n < running.get(p.variant, 0):
                key = (p.variant, p.batch, p.cores)
                recent = max(r for _t, k, r in recs if k == key)
                n = min(running[p.variant], max(n, recent))
            pools.append(p if n == p.replicas else p.with_(replicas=n))
        return StageConfig(tuple(pools))

    @staticmethod
    def _hold(st, cur: StageConfig, new: StageConfig, rho: float) -> StageConfig | None:
        """The stage in force, each pool scaled to carry its share of what ``new`` would have carried; None when
        it cannot."""
        target = stage_capacity_rps(st, new, rho)
        pools = []
        for p in cur.pools:
            per_replica = st.latency.throughput_rps(p.variant, p.batch, p.cores) * rho
            need = float(replicas_for(p.share * target, per_replica, 0)) if per_replica > 0 else math.inf
            replicas = max(p.replicas, need)
            if replicas > st.max_replicas:
                return None
            pools.append(p.with_(replicas=int(replicas)))
        return StageConfig(tuple(pools))


class Limits:
    """The hard limits every decision passes after the guard, for every policy: the core budget cap, then the
    damping (`Damper`, when the spec's ``damping`` sets any limit). The budget wins: when damping would take a
    decision over the budget, the undamped decision stands.

    Counts what it did: ``budget_capped`` (decisions over the budget, replaced) and ``damped`` (decisions the
    damping changed).

    Args:
        spec: the pipeline.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.damper = Damper(spec) if spec.damping.enabled else None
        self.budget_capped = 0
        self.damped = 0

    def apply(
        self, state: PipelineState, config: PipelineConfig, *, warm: bool = False
    ) -> tuple[PipelineConfig, LimitReport]:
        """The decision ``config`` within the limits, and what they did.

        Args:
            warm: the run's first decision, installed warm: the budget cap applies, the damping does not (a warm
                install is no rollout, and no recommendation of a running stage).
        """
        reasons: list[str] = []
        capped = fit_budget(self.spec, config, last_interval_peak_rps(state))
        budget_capped = capped != config
        if budget_capped:
            self.budget_capped += 1
            reasons.append(
                f"{config.total_cores} cores > budget {self.spec.core_budget}: max capacity within the budget"
            )
        result, damped = capped, ()
        if self.damper is not None and not warm and len(state.config.stages) == len(capped.stages):
            damped_config, stages, why = self.damper.apply(state, capped)
            if stages and damped_config.total_cores <= self.spec.core_budget:
                result, damped = damped_config, tuple(stages)
                reasons.extend(why)
                self.damped += 1
        return result, LimitReport(budget_capped, damped, tuple(reasons))


def step(
    cluster: Cluster,
    policy: Policy,
    guard: Guard | None = None,
    state: PipelineState | None = None,
    limits: Limits | None = None,
) -> Outcome:
    """Observe (unless ``state`` is given), decide, guard, pass the hard limits, and apply the result when it
    differs from the configuration in force, or to the stages the cluster reports off-spec.

    Args:
        limits: the hard limits, held by the caller (a `Controller`'s); None: none.

    Raises:
        DecisionError: see `decide` (the limits' errors too). Whatever ``cluster.observe`` raises passes through.
    """
    if state is None:
        state = cluster.observe()
    decision = decide(policy, guard, state)
    if limits is not None:
        t0 = time.perf_counter()
        try:
            config, report = limits.apply(state, decision.config)
        except Exception as exc:  # noqa: BLE001
            raise DecisionError(f"{policy.name} + limits", exc) from exc
        decision = _limited(decision, config, report, time.perf_counter() - t0)
    changed = decision.config != state.config
    # a cluster whose objects are off-spec (Kubernetes: a switch of pools under way, a pool left warm, pods that
    # drifted) is moved to the decision even when the decision keeps the configuration in force: one path for the
    # decision and the repair, so a policy that holds completes what it started (the simulator has no such state)
    repaired = tuple(sorted(getattr(cluster, "off_spec", None) or {}))
    applied = cluster.apply(decision.config) if changed or repaired else None
    return Outcome(state, decision, changed, applied, repaired)
