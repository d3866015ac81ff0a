"""The Gymnasium environment: one step is one adaptation interval of a pipeline running on a `Cluster`.

Its observation and action codecs are `envs.codecs` (gym-free: the deployed agent imports them without gymnasium);
this module turns their spaces into Gymnasium's (`action_space`, `observation_space`) and registers the environment
ids of `envs.registration` when it is imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.codecs import (
    HOLD_DELTA,
    OBS_HIGH,
    PENALTY_RANGE,
    RATIO_RANGE,
    Codec,
    ConditionedCodec,
    beta_or_one,
    beta_unit,
)
from envs.curriculum import Curriculum
from envs.registration import register_envs
from rlscale import control
from rlscale.errors import RlscaleError
from rlscale.interfaces import Cluster, Predictor
from rlscale.model import score as score_of
from rlscale.sim.cluster import Simulator
from rlscale.sim.runner import play, warm_state
from rlscale.spec import PipelineSpec, load_spec
from rlscale.types import PipelineConfig, PipelineState
from rlscale.workload import TRAINING_DAYS, WINDOW_S, Trace, TrafficSource, TrainingSampler, load_trace

ClusterFactory = Callable[[PipelineSpec, Trace, PipelineConfig, int], Cluster]


def simulator_factory(spec: PipelineSpec, trace: Trace, initial: PipelineConfig, seed: int) -> Cluster:
    return Simulator(spec, trace, initial, seed=seed)


HARD_SHARE = 0.15
"""Share of sampled-weight training episodes in ``sla_mode: hard``."""
HARD_PENALTY = 3000.0
"""In ``hard`` episodes the reward charges violations at least ``HARD_PENALTY x beta`` per unit rate (1% of late
requests costs 30 cores): the lexicographic ranking as a reward."""


def action_space(codec: Codec) -> spaces.MultiDiscrete:
    """The codec's action space (`Codec.action_nvec`) as Gymnasium's."""
    return spaces.MultiDiscrete(np.array(codec.action_nvec(), dtype=np.int64))


def observation_space(codec: Codec) -> spaces.Box:
    """The codec's observation space (`Codec.observation_shape`, its bounds) as Gymnasium's."""
    return spaces.Box(low=codec.observation_low, high=OBS_HIGH, shape=codec.observation_shape(), dtype=np.float32)


def reward_terms(spec: PipelineSpec) -> tuple[float, float]:
    """``(offset, scale)``: the conditioned env's reward is ``(score - offset) / scale`` (then the shaping terms).

    ``offset`` is ``alpha x`` the accuracy of the least accurate variants (a constant of the episode), ``scale``
    is ``beta x max(1, (alpha/beta) x dA / 10)`` with dA the accuracy between the least and the most accurate
    variants: a reward of -1 is a core's cost, unless accuracy is worth more than ten cores, and then the accuracy
    range spans about ten. A positive factor per episode changes no optimal decision, and the agent observes the
    weights it depends on, so every weight setting trains at about the same reward scale.
    """
    o = spec.objective
    beta = beta_unit(spec)
    low = spec.accuracy([st.cheapest_variant for st in spec.stages])
    high = spec.accuracy([st.most_accurate_variant for st in spec.stages])
    return o.alpha * low, beta * max(1.0, (o.alpha / beta) * (high - low) / 10.0)


def _grid_log_uniform(rng: np.random.Generator, lo: float, hi: float, step: float = 0.03) -> float:
    """A draw log-uniform in ``[lo, hi]``, rounded to a grid of ``step`` in ln (so episodes share few specs)."""
    return _log_grid(rng.uniform(math.log(lo), math.log(hi)), lo, hi, step)


def _on_grid(x: float, lo: float, hi: float, step: float = 0.03) -> float:
    """``x`` rounded to the grid `_grid_log_uniform` draws on."""
    return _log_grid(math.log(x), lo, hi, step)


def _log_grid(ln_x: float, lo: float, hi: float, step: float) -> float:
    return float(min(hi, max(lo, math.exp(round(ln_x / step) * step))))


class TrainingTraces:
    """Training workloads: random windows of days 0-13 (or of ``days``), or of the training parts of ``sources``
    (`rlscale.workload.training_sources`: the user's own traffic), and synthetic variations of them (never
    evaluation windows).

    Variations (each with its probability): as sampled (0.4); scaled by U(0.5, 1.6) (0.2); shifted by
    U(0, 10) rps (0.1); with a step: a sudden rise of U(8, 25) rps for U(60, 400) s, the shape of IPA's bursty
    window (0.3). Shifts and steps are multiplied by the source's ``variation_scale`` (1 for the Twitter split; a
    CSV's mean load relative to the split's), so a trace ten times busier gets rises ten times larger. With
    ``load_scales`` ``(lo, hi)``, every window is then multiplied by a factor drawn log-uniform in ``[lo, hi]``
    (counts rounded to whole requests): other load levels than the trace's own.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        window_s: int = WINDOW_S,
        damping: int = 8,
        days: tuple[int, int] = (0, TRAINING_DAYS),
        sources: Sequence[TrafficSource] | None = None,
        load_scales: tuple[float, float] | None = None,
    ) -> None:
        self.rng = rng
        self.load_scales = load_scales
        self.sampler = TrainingSampler(rng, window_s=window_s, damping=damping, days=days, sources=sources)
        self.factor = 1.0  # the load scale of the last window sampled

    def sample(self, factor: float | None = None) -> Trace:
        """A training window; ``factor``: its load scale (else drawn from ``load_scales``, if set)."""
        source, base = self.sampler.draw()
        scale = source.variation_scale
        rps = base.rps.copy()
        u = self.rng.random()
        kind = "plain"
        if u < 0.2:
            rps = np.floor(rps * self.rng.uniform(0.5, 1.6))
            kind = "scaled"
        elif u < 0.3:
            rps = rps + np.floor(scale * self.rng.uniform(0, 10))
            kind = "shifted"
        elif u < 0.6:
            start = int(self.rng.integers(60, max(61, rps.size - 120)))
            length = int(self.rng.integers(60, 400))
            rps[start : start + length] += np.floor(scale * self.rng.uniform(8, 25))
            kind = "step"
        name = f"{base.name}:{kind}"
        if factor is None and self.load_scales is not None:  # then the whole window at another load level
            lo, hi = self.load_scales
            factor = float(np.exp(self.rng.uniform(math.log(lo), math.log(hi))))
        self.factor = 1.0 if factor is None else float(factor)
        if factor is not None:
            rps = np.floor(rps * factor + 0.5)
            name += f"@x{factor:.2f}"
        return Trace(name=name, rps=np.maximum(rps, 0.0), description=base.description)


class PipelineEnv(gym.Env):
    """Autoscaling a multi-stage inference pipeline, one adaptation interval per step.

    ## Description
    ``pipeline_spec`` holds the pipeline (``spec`` is Gymnasium's registration record). Every step the agent picks,
    per stage, how much headroom over the predicted load to plan for, and for the whole pipeline whether to keep the
    configuration in force or re-plan and how much to value accuracy; the exact planner (`ilp_baseline.dp`, IPA's
    problem) turns that into a configuration (variant, batch size, cores and replicas per stage), the safety layer
    projects it onto the configurations that meet the SLA (unless disabled), and the control step applies it to the
    cluster, which then runs for one interval (the spec's: 10 s for video). The cluster is the discrete-event
    simulator unless ``cluster_factory`` provides another `Cluster`. The observation holds loads relative to the
    capacity in force and the objective's weights, so one agent serves any load level and any weights
    (`ConditionedCodec`).

    The registered ids are this environment as ``rlscale train`` trains it by default (`envs.TRAINED_KWARGS`:
    sampled weights, load scales 0.25-3, days 0-12): ``rlscale/Pipeline-v0`` (this planner action) and
    ``rlscale/PipelineDirect-v0`` (the direct action, the ablation). The class's own defaults play the spec's
    weights at the traces' own load.

    ## Action Space
    ``MultiDiscrete([7] * S + [3, 3])`` for S stages (the planner action, ``action_design="planner"``):

    | index | meaning | values |
    |---|---|---|
    | s (0 .. S-1) | headroom k: stage s is planned for ``HEADROOMS[k] x`` the predicted load | 0 .. 6 |
    | S | hold or re-plan (`HOLDS`) | 0 hold, 1 re-plan, 2 hold unless |
    | S+1 | accuracy tilt t: the planner maximises ``TILTS[t] x alpha x A - beta x C - gamma x B`` | 0 .. 2 |

    Headrooms: 0.85, 0.9, 1, 1.15, 1.3, 1.5, 2; tilts: 0.5, 1, 2.

    The predicted load is the LSTM's prediction (``predictor``), else the last interval's peak. *Hold* keeps every
    stage's variant, batch and cores and resizes its replicas to the loads (re-planning where that is infeasible);
    *hold unless* holds unless the re-plan beats the hold by more than ``HOLD_DELTA x beta`` (0.25 cores) in
    objective. With ``action_design="direct"`` the action is instead, per stage, a variant, batch size, cores and a
    replica level (the table in `Codec`'s docstring).

    ## Observation Space
    ``Box(-10, 10, (12 + 2 + 8S + 5 + 4 + 4 (+3),), float32)``; ``C`` is the capacity of the configuration in force
    (its bottleneck stage's, rps), ``M`` the most the pipeline carries within its core budget (rps). Values are
    clipped to the bounds; NaN (a metric the cluster lacks) reads 0.

    | index | meaning | unit | bounds |
    |---|---|---|---|
    | 0-11 | peak load of each 10 s step of the last 120 s, oldest first | rps / C | [0, 10] |
    | 12 | predicted load (LSTM; else the last step's peak) | rps / C | [0, 10] |
    | 13 | predicted load | rps / M | [0, 10] |
    | 14+8s | variant index / (V_s - 1), least accurate first | - | [0, 1] |
    | 15+8s | batch index / (B_s - 1) | - | [0, 1] |
    | 16+8s | cores index / (C_s - 1) | - | [0, 1] |
    | 17+8s | stage capacity / C (1 for the bottleneck stage) | - | [0, 10] |
    | 18+8s | utilisation in the last interval (0 before the first) | busy / serving time | [0, 1] |
    | 19+8s | stage p99 latency / SLA | - | [0, 10] |
    | 20+8s | queue length / (10 s x C) | requests | [0, 10] |
    | 21+8s | replicas serving / replicas configured (1 before the first interval) | - | [0, 10] |
    | 14+8S | SLA violation rate in the last interval | (late + dropped) / arrivals | [0, 1] |
    | 15+8S | end-to-end p99 / SLA | - | [0, 10] |
    | 16+8S | allocated cores / core budget (time-averaged) | - | [0, 10] |
    | 17+8S | requests in flight / (10 s x C) | requests | [0, 10] |
    | 18+8S | configured cores / core budget | - | [0, 10] |
    | 19+8S | ln(alpha / beta) / ln(250) (1 at the top of the training range) | - | [-10, 10] |
    | 20+8S | ln(sla_penalty / beta) / ln(300) | - | [-10, 10] |
    | 21+8S | ln(1 + gamma / beta) | - | [0, 10] |
    | 22+8S | 1 for ``sla_mode: hard``, 0 for priced violations | - | {0, 1} |
    | 23+8S | objective gain of re-planning over holding at the predicted load (10: no hold) | cores | [-10, 10] |
    | 24+8S | 1 if holding is feasible, else 0 | - | {0, 1} |
    | 25+8S | accuracy of the re-plan minus the configuration in force's | - | [-1, 1] |
    | 26+8S | cores of the re-plan minus the hold's / core budget | - | [-10, 10] |
    | 27+8S | remaining budget (SLA minus network time), 5th percentile, last interval / SLA | - | [-10, 1] |
    | 28+8S | remaining budget, median / SLA | - | [-10, 1] |
    | 29+8S | remaining budget, minimum / SLA | - | [-10, 1] |

    Indices 27-29+8S only where the spec has per-request SLOs (``request_slo``; 1 before the first interval).
    Indices 23-26+8S are `ConditionedCodec.plan_features` (zeros where the predicted load is no data);
    ``action_design=None`` observes the absolute loads of `Codec` instead (agents trained before issue 15).

    ## Rewards
    The interval's score (DESIGN.md section 3: ``alpha*A - beta*cores - gamma*batch - sla_penalty*violation
    rate``; in ``sla_mode: hard`` episodes violations cost at least ``HARD_PENALTY x beta`` per unit rate), as
    ``(score - offset) / scale`` (`reward_terms`: -1 is about a core's cost, whatever the weights), divided by the
    episode's load scale with ``reward_per_load``, minus ``projection_penalty x`` the safety layer's projection
    distance, minus ``reconfig_penalty`` when the applied configuration changed. ``info`` holds the raw ``score``
    and its parts (``objective``, ``accuracy``, ``cost_cores``, ``violation_rate``), ``projection_distance``,
    ``reconfigured``, ``infeasible`` and the applied ``config``. (``action_design=None``: the raw score, unscaled.)

    ## Starting State
    A training window (a random window of the training days, possibly varied, then scaled by a factor drawn from
    ``load_scales``; see `TrainingTraces`) or the trace named in ``reset(options={"trace": ...})``; the episode's
    weights are drawn (``sample_objective``), set by ``options={"objective": {...}}`` or the spec's. The
    cheapest configuration sized for the first interval's load runs warm.

    ## Episode End
    ``truncated`` when the trace has been played (``window_s / interval_s`` steps: 120 for video); never
    ``terminated``.

    ## Arguments
    - ``pipeline``: bundled name or spec path (default ``video``).
    - ``safety``: pass actions through the safety layer (default True; False for the ablation), or the guard
      to use (any `rlscale.control.Guard`).
    - ``interval_s``: adaptation interval (default: the spec's).
    - ``window_s``, ``damping``: training windows' length and damping (1,200 s, 8 like IPA's windows).
    - ``training_days``: ``(first, end)``: training windows lie within days ``first .. end - 1`` of the training split
      (default all, 0-13; ``rlscale train`` and the registered ids keep the last day out for validation).
    - ``training_sources``: draw training windows from these instead (`rlscale.workload.training_sources`: the
      Twitter split and/or the user's CSV traces, each with its validation part left out); ``training_days`` and
      ``damping`` are then the sources' own.
    - ``load_scale_rps``: load normalisation of the absolute codec (default 50 rps).
    - ``predictor``: ``lstm`` (default), ``none``, or a `Predictor` object: the predicted load (index 12).
    - ``projection_penalty``, ``reconfig_penalty``: reward shaping weights (0.05 each).
    - ``cluster_factory``: builds the Cluster for a trace (default: the simulator).
    - ``codec``: the observation/action codec (default: the one ``action_design`` names); pass a trained agent's
      (`agents.actor.Actor.codec`) to observe and decode exactly as the deployed agent does.
    - ``action_design``: ``planner`` (default) or ``direct``: the conditioned codec (`ConditionedCodec`) with that
      action; None: the absolute codec with the direct action (`Codec`, agents trained before issue 15).
    - ``sample_objective``: draw each episode's weights (`RATIO_RANGE`, `PENALTY_RANGE`, `HARD_SHARE`; the spec's
      own one episode in five). ``reset(options={"objective": {...}})`` sets them.
    - ``load_scales``: ``(lo, hi)``: multiply every training window by a factor log-uniform in it.
    - ``reward_per_load``: divide the scaled score by the episode's load factor, so an episode at 3x the load
      weighs in the updates about as much as one at 1x (its costs are about 3x larger); one positive factor per
      episode changes no optimal decision.
    - ``curriculum``: an `envs.curriculum.Curriculum` drawing weights and load scales where the agent trails IPA.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        pipeline: str | PipelineSpec = "video",
        *,
        safety: bool | control.Guard = True,
        interval_s: float | None = None,
        window_s: int = WINDOW_S,
        damping: int = 8,
        training_days: tuple[int, int] = (0, TRAINING_DAYS),
        training_sources: Sequence[TrafficSource] | None = None,
        load_scale_rps: float = 50.0,
        predictor: str | Predictor = "lstm",
        projection_penalty: float = 0.05,
        reconfig_penalty: float = 0.05,
        cluster_factory: ClusterFactory | None = None,
        codec: Codec | None = None,
        action_design: str | None = "planner",
        sample_objective: bool = False,
        load_scales: tuple[float, float] | None = None,
        curriculum: Curriculum | None = None,
        reward_per_load: bool = False,
    ) -> None:
        super().__init__()
        self.pipeline_spec = pipeline if isinstance(pipeline, PipelineSpec) else load_spec(pipeline)
        if codec is None:
            codec = (
                Codec(self.pipeline_spec, load_scale_rps=load_scale_rps)
                if action_design is None
                else ConditionedCodec(
                    self.pipeline_spec,
                    load_scale_rps=load_scale_rps,
                    action=action_design,
                    hold_delta=HOLD_DELTA if action_design == "planner" else None,  # the planner's choice only
                )
            )
        self.codec = codec
        self.conditioned = isinstance(codec, ConditionedCodec)
        if (sample_objective or load_scales is not None) and not self.conditioned:
            raise RlscaleError("sample_objective and load_scales need a conditioned codec (set action_design)")
        if load_scales is not None and not (0 < load_scales[0] <= load_scales[1] and math.isfinite(load_scales[1])):
            raise RlscaleError(f"load_scales must be (lo, hi) with 0 < lo <= hi, got {load_scales}")
        if curriculum is not None and not (sample_objective and load_scales is not None):
            raise RlscaleError("a curriculum needs sampled weights and load scales")
        self.sample_objective = sample_objective
        self.load_scales = load_scales
        self.curriculum = curriculum
        if reward_per_load and not self.conditioned:
            raise RlscaleError("reward_per_load needs a conditioned codec (set action_design)")
        self.reward_per_load = reward_per_load
        self._load_divisor = 1.0
        self._episode: dict[str, Any] | None = None  # the curriculum's record of the episode in progress
        self._episode_specs: dict[tuple, PipelineSpec] = {}
        self._reward_terms: tuple[float, float] | None = None
        self.episode_spec = self.pipeline_spec
        self.action_space = action_space(self.codec)
        self.observation_space = observation_space(self.codec)
        self.interval_s = float(interval_s or self.pipeline_spec.interval_s)
        self.window_s = window_s
        self.damping = damping
        self.training_days = (int(training_days[0]), int(training_days[1]))
        self.training_sources = list(training_sources) if training_sources is not None else None
        # bad days or sources: refused now
        TrainingSampler(np.random.default_rng(0), window_s, damping, self.training_days, self.training_sources)
        self.projection_penalty = projection_penalty
        self.reconfig_penalty = reconfig_penalty
        self.cluster_factory = cluster_factory or simulator_factory
        self.predictor: Predictor | None = _make_predictor(predictor) if isinstance(predictor, str) else predictor
        self.safety: control.Guard | None = None
        self._own_safety = safety is True  # rebuilt for each episode's objective
        if safety is True:
            from ilp_baseline.safety import SafetyLayer

            self.safety = SafetyLayer(self.pipeline_spec)  # the default floor, as deployed
        elif safety is not False:
            self.safety = safety  # a guard handed in
        self._traces: TrainingTraces | None = None
        self.cluster: Cluster | None = None
        self.trace: Trace | None = None
        self._predicted: float | None = None

    def _obs(self, state: PipelineState) -> np.ndarray:
        predicted = self.predictor.predict(state) if self.predictor is not None else None
        self._predicted = predicted
        return self.codec.observe(state, predicted)

    def _objective_for_episode(self, options: dict[str, Any], ratio: float | None = None) -> PipelineSpec:
        """The episode's spec: the pipeline with the objective weights of ``options["objective"]`` (a dict of
        ObjectiveSpec fields), else drawn (``sample_objective``: alpha/beta log-uniform in `RATIO_RANGE`,
        sla_penalty/beta in `PENALTY_RANGE`, on a 3% grid, ``sla_mode: hard`` in `HARD_SHARE` of them; the spec's
        own weights one episode in five), else the spec's."""
        base = self.pipeline_spec
        o = base.objective
        if "objective" in options:
            changes = dict(options["objective"])
        elif self.sample_objective:
            rng = self.np_random
            if ratio is None and rng.random() < 0.2:
                return base
            beta = beta_unit(base)
            ratio = _grid_log_uniform(rng, *RATIO_RANGE) if ratio is None else _on_grid(ratio, *RATIO_RANGE)
            penalty = _grid_log_uniform(rng, *PENALTY_RANGE)
            changes = {"alpha": ratio * beta, "sla_penalty": penalty * beta}
            if rng.random() < HARD_SHARE:
                changes["sla_mode"] = "hard"
        else:
            return base
        if not changes:
            return base
        key = tuple(sorted(changes.items()))
        spec = self._episode_specs.get(key)
        if spec is None:
            spec = dataclasses.replace(base, objective=dataclasses.replace(o, **changes))
            self._episode_specs[key] = spec
        return spec

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        ratio, drawn = None, None
        if "trace" in options:
            trace = options["trace"]
            self.trace = trace if isinstance(trace, Trace) else load_trace(trace)
            self._load_divisor = 1.0
        else:
            if self._traces is None or seed is not None:  # a new seed gives a new generator: follow it
                self._traces = TrainingTraces(
                    self.np_random,
                    window_s=self.window_s,
                    damping=self.damping,
                    days=self.training_days,
                    sources=self.training_sources,
                    load_scales=self.load_scales,
                )
            factor = None
            if self.curriculum is not None and "objective" not in options:
                drawn, ratio, factor = self.curriculum.draw(self.np_random)
            self.trace = self._traces.sample(factor)
            self._load_divisor = self._traces.factor if self.reward_per_load else 1.0
        spec = self._objective_for_episode(options, ratio)
        if spec is not self.episode_spec or self._reward_terms is None:
            self.episode_spec = spec
            self._reward_terms = reward_terms(spec)
            self.codec = self.codec.for_spec(spec)
            if self._own_safety:
                from ilp_baseline.safety import SafetyLayer

                self.safety = SafetyLayer(spec)
        warm = warm_state(spec, self.trace, self.interval_s)
        initial = warm.config
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.cluster = self.cluster_factory(spec, self.trace, initial, episode_seed)
        self.limits = control.Limits(spec)  # the episode's hard limits and their state (damping)
        self._episode = None
        if drawn is not None:
            self._episode = {"bin": drawn, "initial": initial, "seed": episode_seed, "scores": []}
        state = self.cluster.observe()
        if state.arrival_rps.size == 0:  # warm start: as if the first interval's load had been running
            state = PipelineState(state.time_s, state.interval_s, warm.arrival_rps, state.config, None, 0)
        self._state = state
        return self._obs(state), {"trace": self.trace.name, "config": str(initial)}

    def step(self, action):
        if self.cluster is None:
            raise RlscaleError("call reset() before step()")
        state = self._state
        try:  # the one control step (rlscale.control): decide (here: decode the action), guard, apply
            policy = _ActionPolicy(self.codec, action, self._predicted)
            outcome = control.step(self.cluster, policy, self.safety, state=state, limits=self.limits)
        except control.DecisionError as exc:
            raise exc.cause from None
        config, changed, projection = outcome.config, outcome.changed, outcome.decision.projection
        metrics = self.cluster.step()
        state = self.cluster.observe()
        self._state = state
        distance = projection.distance if projection is not None else 0.0
        score = metrics.score
        if self.conditioned:
            offset, scale = self._reward_terms
            o = self.episode_spec.objective
            if o.sla_mode == "hard":
                score = score_of(
                    self.episode_spec, metrics.objective, metrics.sla_violation_rate, min_penalty=HARD_PENALTY * o.beta
                )
            score = (score - offset) / (scale * self._load_divisor)
        reward = score - self.projection_penalty * distance - self.reconfig_penalty * float(changed)
        truncated = bool(getattr(self.cluster, "done", False))
        if self._episode is not None:
            self._episode["scores"].append(metrics.score)
            if truncated:
                self._report_to_curriculum()
        info = {
            "score": metrics.score,
            "objective": metrics.objective,
            "violation_rate": metrics.sla_violation_rate,
            "accuracy": metrics.accuracy,
            "cost_cores": metrics.cost_cores,
            "projection_distance": distance,
            "reconfigured": changed,
            "infeasible": projection is not None and projection.infeasible,
            "config": str(config),
        }
        return self._obs(state), float(reward), False, truncated, info

    def _report_to_curriculum(self) -> None:
        """The finished episode's gap to IPA (same window, weights, load and arrivals) into the curriculum."""
        episode, self._episode = self._episode, None
        assert episode is not None and self.curriculum is not None and self.trace is not None
        spec = self.episode_spec
        ipa = baseline_scores(
            spec, self.trace, episode["initial"], episode["seed"], self.cluster_factory, self.interval_s
        )
        n = min(len(ipa), len(episode["scores"]))
        if n == 0:
            return
        beta = beta_or_one(spec)
        gap = (float(np.mean(ipa[:n])) - float(np.mean(episode["scores"][:n]))) / beta
        self.curriculum.report(episode["bin"], gap)


def baseline_scores(
    spec: PipelineSpec,
    trace: Trace,
    initial: PipelineConfig,
    seed: int,
    factory: ClusterFactory | None = None,
    interval_s: float | None = None,
) -> list[float]:
    """IPA's interval scores on an episode as the environment plays it (same start, seed and steps): the LSTM's
    prediction, IPA's headroom, the exact planner, no guard, the spec's limits.

    Played by the runner's episode loop (`rlscale.sim.runner.play`) from the env's start (`PipelineEnv.reset`): the
    first decision on the warm history, applied like every later one."""
    from ilp_baseline.policy import ILPPolicy, ipa_headroom
    from rlscale.lstm import LSTMPredictor

    cluster = (factory or simulator_factory)(spec, trace, initial, seed)
    policy = ILPPolicy(spec, LSTMPredictor(), headroom=ipa_headroom(spec), name="ipa")
    warm = warm_state(spec, trace, interval_s)
    state = cluster.observe()
    if state.arrival_rps.size == 0:
        state = PipelineState(state.time_s, state.interval_s, warm.arrival_rps, state.config, None, 0)
    controller = control.Controller(policy, None, control.Limits(spec))
    return [metrics.score for _, metrics in play(cluster, controller, state)]


class _ActionPolicy:
    """One action of the agent as a `Policy`: decoding it is the decision the control step guards and applies."""

    name = "action"

    def __init__(self, codec: Codec, action, predicted_rps: float | None = None) -> None:
        self.codec, self.action, self.predicted_rps = codec, action, predicted_rps

    def decide(self, state: PipelineState) -> PipelineConfig:
        return self.codec.decode(self.action, state, self.predicted_rps)


def _make_predictor(name: str) -> Predictor | None:
    if name == "none":
        return None
    if name == "lstm":
        from rlscale.lstm import LSTMPredictor

        return LSTMPredictor()
    raise RlscaleError(f"unknown observation predictor {name!r} (lstm or none)")


register_envs()  # the registered ids (`envs.registration`) make this class
