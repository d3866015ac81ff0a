"""The agent's action and observation codecs: what a trained agent observes of a pipeline's state and how its
action becomes a configuration, shared by the environment (`envs.pipeline_env`, which trains with them) and the
deployed agent (`agents.actor`, `agents.inference`).

Gym-free: this module imports neither gymnasium nor torch, so the agent's numpy inference (the sidecar, simulate,
compare, bench) imports it without them. A codec describes its spaces as plain values (`Codec.action_nvec`,
`Codec.observation_shape`, `Codec.observation_low` and `OBS_HIGH`); the environment turns them into Gymnasium spaces
(`envs.pipeline_env.action_space`, `envs.pipeline_env.observation_space`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from ilp_baseline.dp import solve_dp
from ilp_baseline.problem import InfeasibleLoad, cheapest_variants, planning_data
from rlscale.errors import RlscaleError
from rlscale.model import (
    is_valid_load,
    max_capacity,
    objective_value,
    pipeline_capacity_rps,
    plan_fixed_variants,
    replicas_for,
    resize_replicas,
    stage_capacity_rps,
)
from rlscale.predictors import last_interval_peak_rps
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

HISTORY_STEPS = 12
STEP_S = 10
STAGE_FEATURES = 8
PIPELINE_FEATURES = 5
OBS_HIGH = 10.0
CAPACITY_LEVELS = (0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Codec:
    """Observation and action encoding of one pipeline, shared by the env and by the deployed agent.

    This is the absolute codec of the agents trained before issue 15 (``PipelineEnv(action_design=None)``); today's
    agents use `ConditionedCodec`, whose direct action design is this class's action.

    Direct action: ``MultiDiscrete`` with four entries per stage s (S stages, 4S entries):

    | index | meaning | values |
    |---|---|---|
    | 4s | variant, least accurate first | 0 .. V_s-1 |
    | 4s+1 | batch size, index into the stage's batch sizes | 0 .. B_s-1 |
    | 4s+2 | cores per replica, index into the stage's cores | 0 .. C_s-1 |
    | 4s+3 | replica level k: replicas = ceil(level_k x L / throughput), L = last interval's peak load | 0 .. 5 |

    Replica levels: `CAPACITY_LEVELS` (0.75, 1, 1.25, 1.5, 2, 3). Proposals over the core budget are scaled down
    in proportion before the safety layer sees them.

    Absolute observation: ``Box(0, 10, (13 + 8S + 5,), float32)``:

    | index | meaning | unit | bounds |
    |---|---|---|---|
    | 0-11 | peak load of each 10 s step of the last 120 s, oldest first | rps / load_scale | [0, 10] |
    | 12 | predicted peak of the next 20 s (LSTM; else the last step's peak) | rps / load_scale | [0, 10] |
    | 13+8s | variant index / (V_s - 1) | - | [0, 1] |
    | 14+8s | batch index / (B_s - 1) | - | [0, 1] |
    | 15+8s | cores index / (C_s - 1) | - | [0, 1] |
    | 16+8s | replicas / max_replicas | - | [0, 1] |
    | 17+8s | utilisation in the last interval | busy / serving time | [0, 1] |
    | 18+8s | stage p99 latency / SLA | - | [0, 10] |
    | 19+8s | queue length / (10 x load_scale) | requests | [0, 10] |
    | 20+8s | replicas serving / max_replicas | - | [0, 1] |
    | 13+8S | SLA violation rate in the last interval | (late + dropped) / arrivals | [0, 1] |
    | 14+8S | end-to-end p99 / SLA | - | [0, 10] |
    | 15+8S | allocated cores / core budget (time-averaged) | - | [0, 10] |
    | 16+8S | requests in flight / (10 x load_scale) | requests | [0, 10] |
    | 17+8S | configured cores / core budget | - | [0, 10] |

    Attributes:
        spec: the pipeline.
        load_scale_rps: loads are divided by this (about the largest load the pipeline meets).
        capacity_levels: replica action k provisions ``capacity_levels[k] x`` the reference load.
    """

    spec: PipelineSpec
    load_scale_rps: float = 50.0
    capacity_levels: tuple[float, ...] = CAPACITY_LEVELS

    # ------------------------------------------------------------------ spaces

    @cached_property
    def variants(self) -> tuple[tuple[str, ...], ...]:
        """Each stage's variants, least accurate first (the action's variant index)."""
        return tuple(
            tuple(sorted(st.variant_names, key=lambda v, st=st: st.variant(v).accuracy)) for st in self.spec.stages
        )

    observation_low: ClassVar[float] = 0.0
    """The observations' lower bound (the upper one is `OBS_HIGH`)."""

    def action_nvec(self) -> tuple[int, ...]:
        """The choices of each sub-action: the action space is ``MultiDiscrete(action_nvec())``."""
        nvec = []
        for st in self.spec.stages:
            nvec += [len(st.variants), len(st.batch_sizes), len(st.cores), len(self.capacity_levels)]
        return tuple(nvec)

    def observation_shape(self) -> tuple[int]:
        """The observations' shape: the observation space is ``Box(observation_low, OBS_HIGH, shape, float32)``."""
        return (HISTORY_STEPS + 1 + STAGE_FEATURES * len(self.spec.stages) + PIPELINE_FEATURES,)

    # ------------------------------------------------------------------ encoding

    # the peak per-second load of the last interval: what replica actions and the safety floor refer to
    reference_load_rps = staticmethod(last_interval_peak_rps)

    def observe(self, state: PipelineState, predicted_rps: float | None = None) -> np.ndarray:
        spec, scale = self.spec, self.load_scale_rps
        steps = history_peaks(state)
        parts = [steps / scale, [(predicted_rps if predicted_rps is not None else steps[-1]) / scale]]
        last = state.last
        for s, (st, sc) in enumerate(zip(spec.stages, state.config.stages, strict=True)):
            m = last.stages[s] if last is not None else None
            parts.append(
                [
                    *self._position(s, sc),
                    sc.replicas / st.max_replicas,
                    _finite(m.utilisation) if m else 0.0,  # a cluster without the busy metric reports NaN
                    _finite(m.latency_p99_s / spec.sla_s) if m else 0.0,
                    (m.queue_len / (scale * STEP_S)) if m else 0.0,
                    (m.replicas_serving / st.max_replicas) if m else sc.replicas / st.max_replicas,
                ]
            )
        parts.append(
            [
                last.sla_violation_rate if last else 0.0,
                _finite(last.e2e_p99_s / spec.sla_s) if last else 0.0,
                last.cost_cores / spec.core_budget if last else 0.0,
                state.in_flight / (scale * STEP_S),
                state.config.total_cores / spec.core_budget,
            ]
        )
        obs = np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts])
        return np.clip(np.nan_to_num(obs, nan=0.0), 0.0, OBS_HIGH).astype(np.float32)

    def _position(self, s: int, sc: StageConfig) -> tuple[float, float, float]:
        """Stage ``s``'s variant, batch and cores as indices scaled to [0, 1] (0 for a value not in the spec); a stage
        of several pools shows its first (the observation the bundled agents were trained on)."""
        st, sc = self.spec.stages[s], sc.pools[0]
        return (
            self.variants[s].index(sc.variant) / max(1, len(st.variants) - 1),
            st.batch_sizes.index(sc.batch) / max(1, len(st.batch_sizes) - 1) if sc.batch in st.batch_sizes else 0,
            st.cores.index(sc.cores) / max(1, len(st.cores) - 1) if sc.cores in st.cores else 0,
        )

    def for_spec(self, spec: PipelineSpec) -> Codec:
        """This codec for ``spec`` (the same pipeline with other objective weights: an episode's, a user's)."""
        return dataclasses.replace(self, spec=spec)

    def decode(self, action: np.ndarray, state: PipelineState, predicted_rps: float | None = None) -> PipelineConfig:
        """The configuration an action asks for, at the current reference load, kept within the core budget
        (``predicted_rps`` is not used by this action design)."""
        spec = self.spec
        a = np.asarray(action, dtype=np.int64).reshape(len(spec.stages), 4)
        load = self.reference_load_rps(state)
        stages = []
        for s, st in enumerate(spec.stages):
            v = self.variants[s][int(a[s, 0])]
            b = st.batch_sizes[int(a[s, 1])]
            c = st.cores[int(a[s, 2])]
            target = self.capacity_levels[int(a[s, 3])] * load
            n = float(
                replicas_for(target, st.latency.throughput_rps(v, b, c) * spec.objective.rho_max, st.min_replicas)
            )
            stages.append(StageConfig.one(v, b, int(min(st.max_replicas, n)), c))
        config = PipelineConfig(tuple(stages))
        total = config.total_cores
        if total > spec.core_budget:  # scale every stage down in proportion so the proposal fits the budget
            ratio = spec.core_budget / total
            config = PipelineConfig(
                tuple(
                    sc.with_(replicas=max(st.min_replicas, int(sc.replicas * ratio)))
                    for st, sc in zip(spec.stages, config.stages, strict=True)
                )
            )
        return config

    def encode(self, config: PipelineConfig, state: PipelineState) -> np.ndarray:
        """An action that decodes to (about) ``config``: for tests and for imitation warm starts."""
        load = self.reference_load_rps(state)
        out = []
        for s, (st, sc) in enumerate(zip(self.spec.stages, config.stages, strict=True)):
            h = st.latency.throughput_rps(sc.variant, sc.batch, sc.cores) * self.spec.objective.rho_max
            level = sc.replicas * h / load if load > 0 else 1.0
            k = int(np.argmin([abs(level - x) for x in self.capacity_levels]))
            out += [self.variants[s].index(sc.variant), st.batch_sizes.index(sc.batch), st.cores.index(sc.cores), k]
        return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------- the conditioned codec (issue 15)

HEADROOMS = (0.85, 0.9, 1.0, 1.15, 1.3, 1.5, 2.0)
"""Planner action: a stage is planned for ``headroom x`` the predicted load (0.9: ``ipa-hold``'s tuned headroom on
most pipelines)."""
HEADROOMS_V1 = (0.85, 1.0, 1.15, 1.3, 1.5, 2.0)
"""The headroom levels of the first planner agents (training runs whose settings record no codec levels)."""
HOLD_DELTA = 0.25
"""Planner action's third hold choice: keep the configuration in force (resizing replicas) unless re-planning gains
more than ``HOLD_DELTA x beta`` in objective (``ipa-hold``'s rule; 0.25 is its tuned delta on video and audio-qa)."""
HOLDS = ("hold", "replan", "hold-unless-gain")
"""Planner action's hold-or-replan choices, in index order (agents without ``hold_delta`` have the first two)."""
TILTS = (0.5, 1.0, 2.0)
"""Planner action: the planner maximises ``tilt x alpha x A - beta x C - gamma x B`` (more or less accuracy than
the one-interval optimum buys)."""
RATIO_RANGE = (1.0, 250.0)
"""Objective conditioning: alpha / beta is observed as ``ln(alpha/beta) / ln(250)`` (1 at the top of the training
range; larger ratios are observed beyond it)."""
PENALTY_RANGE = (30.0, 300.0)
"""Objective conditioning: sla_penalty / beta is observed as ``ln(sla_penalty/beta) / ln(300)``."""
OBJECTIVE_FEATURES = 4
PLAN_FEATURES = 4
BUDGET_FEATURES = 3  # only where the spec has per-request SLOs (``request_slo``)
ACTION_DESIGNS = ("planner", "direct")
PLAN_GRID_RPS = 0.05  # plans are cached by their loads rounded up to this grid, then resized to the exact loads
PLAN_CACHE = 4096


def budget_features(spec: PipelineSpec, state: PipelineState) -> list[float]:
    """The last interval's remaining budgets (SLA minus each request's network time), over the SLA: the 5th
    percentile (what the planners plan with, `rlscale.model.planning_budget_s`), the median and the minimum.
    1 each (the whole SLA) before the first interval or after one without arrivals."""
    last = state.last
    values = (last.budget_p5_s, last.budget_p50_s, last.budget_min_s) if last is not None else ()
    return [v / spec.sla_s if math.isfinite(v) else 1.0 for v in values] or [1.0] * BUDGET_FEATURES


def objective_features(spec: PipelineSpec) -> list[float]:
    """What a conditioned agent knows of the objective: ``ln(alpha/beta)/ln(250)``, ``ln(sla_penalty/beta)/ln(300)``,
    ``ln(1 + gamma/beta)`` and 1 for ``sla_mode: hard`` (0: priced). Only ratios to beta: scaling every weight by
    the same factor changes no decision, so it changes no observation either."""
    o = spec.objective
    beta = o.beta if o.beta > 0 else o.alpha / RATIO_RANGE[1] if o.alpha > 0 else 1.0
    ratio = max(o.alpha / beta, 1e-6)
    penalty = max(o.sla_penalty / beta, 1e-6)
    return [
        math.log(ratio) / math.log(RATIO_RANGE[1]),
        math.log(penalty) / math.log(PENALTY_RANGE[1]),
        math.log1p(o.gamma / beta),
        1.0 if o.sla_mode == "hard" else 0.0,
    ]


def beta_unit(spec: PipelineSpec) -> float:
    """One core's worth in objective units: beta, or (beta 0) alpha over the top of `RATIO_RANGE`."""
    o = spec.objective
    return o.beta if o.beta > 0 else max(o.alpha / RATIO_RANGE[1], 1e-9)


@dataclass(frozen=True)
class ConditionedCodec(Codec):
    """Observations that hold the objective's weights and no absolute load, and one of two action designs.

    Loads are observed relative to the capacity of the configuration in force (so an agent trained at one load
    level reads another the same way), plus the predicted load relative to the most the pipeline can carry (its
    maximum capacity within the core budget). The objective enters as `objective_features`. Where the spec has
    per-request SLOs (``request_slo``), the observation ends with the last interval's remaining-budget
    distribution (`budget_features`: its 5th percentile, median and minimum over the SLA); other pipelines'
    observations are unchanged.

    Action designs:

    - ``planner`` (per stage a headroom, then hold-or-replan, then an accuracy tilt): the agent sets what IPA's
      planner lacks and the exact DP produces the configuration. Each stage s is planned for ``HEADROOMS[k_s] x``
      the predicted load; *hold* keeps every stage's variant, batch and cores and resizes replicas
      (`rlscale.model.resize_replicas`; when that is infeasible it re-plans), *replan* takes the DP optimum with
      ``alpha`` multiplied by ``TILTS[t]``, and *hold-unless-gain* (agents with ``hold_delta``) holds unless the
      re-plan beats the hold by more than ``hold_delta x beta`` in objective, ``ipa-hold``'s rule (without it a
      hold can keep a configuration far from the optimum for a whole window).
    - ``direct``: as `Codec` (variant, batch, cores and a capacity level per stage).

    Attributes:
        action: ``planner`` or ``direct``.
        headrooms: the planner's headroom levels.
        tilts: the planner's accuracy tilts.
        hold_delta: the hold-unless-gain choice's threshold in cores (None: no such choice, the first agents).
    """

    action: str = "planner"
    headrooms: tuple[float, ...] = HEADROOMS
    tilts: tuple[float, ...] = TILTS
    hold_delta: float | None = HOLD_DELTA

    observation_low: ClassVar[float] = -OBS_HIGH

    def __post_init__(self) -> None:
        if self.action not in ACTION_DESIGNS:
            raise RlscaleError(f"unknown action design {self.action!r} (known: {', '.join(ACTION_DESIGNS)})")

    @cached_property
    def max_capacity_rps(self) -> float:
        return max(max_capacity(self.spec).capacity_rps, 1e-6)

    def for_spec(self, spec: PipelineSpec) -> Codec:
        new = dataclasses.replace(self, spec=spec)
        if "max_capacity_rps" in self.__dict__ and spec.stages == self.spec.stages:  # objective-only change
            new.__dict__["max_capacity_rps"] = self.__dict__["max_capacity_rps"]
        return new

    def action_nvec(self) -> tuple[int, ...]:
        if self.action == "direct":
            return super().action_nvec()
        holds = 2 if self.hold_delta is None else len(HOLDS)
        return (len(self.headrooms),) * len(self.spec.stages) + (holds, len(self.tilts))

    def observation_shape(self) -> tuple[int]:
        n = (
            HISTORY_STEPS
            + 2
            + STAGE_FEATURES * len(self.spec.stages)
            + PIPELINE_FEATURES
            + OBJECTIVE_FEATURES
            + PLAN_FEATURES
            + (BUDGET_FEATURES if self.spec.per_request_slo else 0)
        )
        return (n,)

    def observe(self, state: PipelineState, predicted_rps: float | None = None) -> np.ndarray:
        spec = self.spec
        rho = spec.objective.rho_max
        capacity = max(pipeline_capacity_rps(spec, state.config), 1e-3)
        steps = history_peaks(state)
        predicted = predicted_rps if predicted_rps is not None and math.isfinite(predicted_rps) else steps[-1]
        parts = [steps / capacity, [predicted / capacity, predicted / self.max_capacity_rps]]
        last = state.last
        backlog = capacity * STEP_S
        for s, (st, sc) in enumerate(zip(spec.stages, state.config.stages, strict=True)):
            m = last.stages[s] if last is not None else None
            parts.append(
                [
                    *self._position(s, sc),
                    stage_capacity_rps(st, sc, rho) / capacity,  # 1 for the bottleneck stage
                    _finite(m.utilisation) if m else 0.0,
                    _finite(m.latency_p99_s / spec.sla_s) if m else 0.0,
                    (m.queue_len / backlog) if m else 0.0,
                    (m.replicas_serving / max(1, sc.pools[0].replicas)) if m else 1.0,  # as trained: the first pool
                ]
            )
        parts.append(
            [
                last.sla_violation_rate if last else 0.0,
                _finite(last.e2e_p99_s / spec.sla_s) if last else 0.0,
                last.cost_cores / spec.core_budget if last else 0.0,
                state.in_flight / backlog,
                state.config.total_cores / spec.core_budget,
            ]
        )
        parts.append(objective_features(spec))
        parts.append(self.plan_features(state, predicted))
        if spec.per_request_slo:
            parts.append(budget_features(spec, state))
        obs = np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts])
        return np.clip(np.nan_to_num(obs, nan=0.0), -OBS_HIGH, OBS_HIGH).astype(np.float32)

    def plan_features(self, state: PipelineState, predicted_rps: float) -> list[float]:
        """What re-planning would buy at the predicted load (headroom 1, no tilt), the signal ``ipa-hold`` decides
        on: the objective gain of the DP's plan over holding (resizing replicas of the configuration in force),
        in cores (/ beta); 1 if holding is feasible (else 0); the plan's accuracy minus the configuration in
        force's; and the plan's cores minus the hold's, over the core budget. Zeros where the load is no data."""
        if not is_valid_load(predicted_rps):
            return [0.0] * PLAN_FEATURES
        spec = self.spec
        loads = (max(0.0, predicted_rps),) * len(spec.stages)
        plan = self._plan(loads, 1.0)
        held = resize_replicas(spec, state.config, loads)
        beta = beta_or_one(spec)
        if held is None:
            gain, feasible, extra = OBS_HIGH, 0.0, 0.0
        else:
            gain = (objective_value(spec, plan) - objective_value(spec, held)) / beta
            feasible, extra = 1.0, (plan.total_cores - held.total_cores) / spec.core_budget
        accuracy = spec.accuracy(_first_variants(plan)) - spec.accuracy(_first_variants(state.config))
        return [float(np.clip(gain, -OBS_HIGH, OBS_HIGH)), feasible, accuracy, extra]

    def decode(self, action: np.ndarray, state: PipelineState, predicted_rps: float | None = None) -> PipelineConfig:
        """The configuration an action asks for. Planner: at the predicted load (else the last interval's peak)."""
        if self.action == "direct":
            return super().decode(action, state, predicted_rps)
        spec = self.spec
        a = np.asarray(action, dtype=np.int64).ravel()
        n = len(spec.stages)
        base = predicted_rps if predicted_rps is not None else self.reference_load_rps(state)
        base = max(0.0, float(base)) if math.isfinite(base) else self.reference_load_rps(state)
        loads = tuple(self.headrooms[int(k)] * base for k in a[:n])
        hold, tilt = int(a[n]), self.tilts[int(a[n + 1])]
        if hold == 1:
            return self._plan(loads, tilt)
        held = resize_replicas(spec, state.config, loads)
        if held is None:
            return self._plan(loads, tilt)
        if hold == 2 and self.hold_delta is not None:
            plan = self._plan(loads, tilt)
            tilted = self._tilted(tilt)
            if objective_value(tilted, plan) - objective_value(tilted, held) > self.hold_delta * beta_or_one(spec):
                return plan
        return held

    def _plan(self, loads: tuple[float, ...], tilt: float) -> PipelineConfig:
        """The DP's plan for ``loads``: solved (and cached) at the loads rounded up to `PLAN_GRID_RPS`, then its
        replicas resized to the exact loads (so the IPA action plans as IPA does: a plan for the rounded loads alone
        cost sum-qa 0.01 a window against ``ipa``)."""
        cache = self._plans
        key = (tuple(_plan_grid(x) for x in loads), tilt)
        config = cache.get(key)
        if config is None:
            try:
                config = solve_dp(planning_data(self._tilted(tilt), key[0])).config
            except InfeasibleLoad:  # nothing carries it: the cheapest variants at their largest capacity
                config = plan_fixed_variants(self.spec, cheapest_variants(self.spec), max(key[0]))
            if len(cache) >= PLAN_CACHE:
                cache.clear()
            cache[key] = config
        exact = resize_replicas(self.spec, config, loads)
        return config if exact is None else exact

    @cached_property
    def _plans(self) -> dict:
        return {}

    def _tilted(self, tilt: float) -> PipelineSpec:
        if tilt == 1.0:
            return self.spec
        hit = self._tilted_specs.get(tilt)
        if hit is None:
            o = self.spec.objective
            hit = dataclasses.replace(self.spec, objective=dataclasses.replace(o, alpha=o.alpha * tilt))
            self._tilted_specs[tilt] = hit
        return hit

    @cached_property
    def _tilted_specs(self) -> dict:
        return {}

    def encode(self, config: PipelineConfig, state: PipelineState) -> np.ndarray:
        if self.action == "direct":
            return super().encode(config, state)
        raise RlscaleError("the planner action has no inverse (use the direct design for imitation)")


def beta_or_one(spec: PipelineSpec) -> float:
    """The cost weight a gain or gap in cores is priced at (1 where the spec's beta is 0): plan features, the hold
    threshold and the curriculum's gap."""
    return spec.objective.beta if spec.objective.beta > 0 else 1.0


def _plan_grid(load_rps: float) -> float:
    """``load_rps`` rounded up to the planner's grid (`PLAN_GRID_RPS`), so repeated loads reuse a plan."""
    return math.ceil(load_rps / PLAN_GRID_RPS - 1e-9) * PLAN_GRID_RPS


def history_peaks(state: PipelineState) -> np.ndarray:
    """The peak load of each `STEP_S` step of the last ``HISTORY_STEPS x STEP_S`` seconds, oldest first (a short
    history padded with its first second; zeros with none)."""
    hist = np.asarray(state.arrival_rps, dtype=float)[-HISTORY_STEPS * STEP_S :]
    if not hist.size:
        return np.zeros(HISTORY_STEPS)
    pad = HISTORY_STEPS * STEP_S - hist.size
    full = np.concatenate([np.full(pad, hist[0]), hist]) if pad > 0 else hist
    return full.reshape(HISTORY_STEPS, STEP_S).max(axis=1)


def _first_variants(config: PipelineConfig) -> tuple[str, ...]:
    """Each stage's first pool's variant: what the planner features compare (as the bundled agents were trained;
    a stage of several pools shows its first)."""
    return tuple(sc.pools[0].variant for sc in config.stages)


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0
