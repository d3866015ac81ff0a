"""The control step: observe, decide, guard, apply. The only implementation of rlscale's loop (DESIGN section 1).

The simulator runner, the Gymnasium environment and the Kubernetes sidecar all call `step` (or `decide`, where
they observe on their own), so ``simulate`` and ``compare`` measure exactly the decision path the sidecar deploys:

```
 Cluster.observe() -> PipelineState -> Policy.decide() -> proposal -> Guard.project() -> Cluster.apply() -> Outcome
```

A *guard* (the safety layer, `ilp_baseline.safety.SafetyLayer`) is optional and explicit: every policy name has a
default (`guard_default`), a flag changes it, and every result records it. Faults split as in kopf: `step` lets the
cluster's own errors out of ``observe`` (the caller decides to hold), wraps a policy's or a guard's exception in
`DecisionError` (the caller holds and counts it), and returns what ``apply`` reported in the `Outcome`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rlscale.interfaces import Cluster, Policy
from rlscale.types import PipelineConfig, PipelineState

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
class Decision:
    """A policy's proposal and what the guard made of it."""

    proposed: PipelineConfig
    config: PipelineConfig
    projection: Projection | None
    decision_s: float


@dataclass(frozen=True)
class Outcome:
    """One control step.

    Attributes:
        state: what the policy saw.
        decision: the proposal, the configuration chosen and the projection.
        changed: the chosen configuration differs from the one in force (so it was applied).
        applied: what ``Cluster.apply`` reported (the Kubernetes actuator's outcome; None in the simulator, or
            when nothing changed).
    """

    state: PipelineState
    decision: Decision
    changed: bool
    applied: Any = None

    @property
    def config(self) -> PipelineConfig:
        return self.decision.config


class Controller:
    """What a policy name means in every command: the policy and the guard in front of it (None: unguarded).

    It is a `Policy` itself (``decide`` returns the guarded configuration and keeps the `Decision` in ``last``), so
    code that only needs a configuration takes it as it is; the runner, the env and the sidecar use ``policy`` and
    ``guard`` through `step`.

    Args:
        policy: the policy that proposes.
        guard: the safety layer in front of it, or None.
    """

    def __init__(self, policy: Policy, guard: Guard | None = None) -> None:
        self.policy = policy
        self.guard = guard
        self.name = policy.name
        self.last: Decision | None = None

    @property
    def guard_name(self) -> str:
        """``safety`` or ``none``, as records say."""
        return "safety" if self.guard is not None else "none"

    def decide(self, state: PipelineState) -> PipelineConfig:
        self.last = decide(self.policy, self.guard, state)
        return self.last.config


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
    return Decision(proposed, config, projection, time.perf_counter() - t0)


def step(cluster: Cluster, policy: Policy, guard: Guard | None = None, state: PipelineState | None = None) -> Outcome:
    """Observe (unless ``state`` is given), decide, guard, and apply the result when it differs from the
    configuration in force.

    Raises:
        DecisionError: see `decide`. Whatever ``cluster.observe`` raises passes through.
    """
    if state is None:
        state = cluster.observe()
    decision = decide(policy, guard, state)
    changed = decision.config != state.config
    applied = cluster.apply(decision.config) if changed else None
    return Outcome(state, decision, changed, applied)
