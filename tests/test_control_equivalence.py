"""One control step everywhere (DESIGN.md section 1; issue 12, item 1): the simulator runner, the Gymnasium env and
the Kubernetes sidecar, driven through the same states, apply identical configurations.

The states are recorded from `rlscale.sim.runner.run_episode` (the policy is wrapped to record what it sees) on a
short window of the bursty trace that holds its load spike; the runner's ``RunResult.configs`` are what it applied.
The env and the sidecar then run over a cluster that replays those states (``observe`` returns recorded state i,
``apply`` records what it is given), each with fresh policies and guards, so their decisions can be compared with
the runner's state by state. Policies are built here, not through the registry (it is being moved).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from agents.actor import random_actor
from agents.hpa import HPAPolicy
from agents.inference import PPOPolicy
from agents.vpa import VPAPolicy
from envs.pipeline_env import PipelineEnv
from ilp_baseline.policy import ILPPolicy, ipa_headroom
from ilp_baseline.problem import fa2_high_variants
from ilp_baseline.safety import SafetyLayer
from rlscale.control import Controller
from rlscale.kube.actuator import ApplyOutcome, StageOutcome
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.predictors import ReactivePredictor
from rlscale.sim.runner import run_episode, warm_state
from rlscale.spec import load_spec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState
from rlscale.workload import Trace, load_trace

SPEC = load_spec("video")
# 300 s of the bursty window: flat at ~7 rps, the rise to ~30 rps 80 s in, and the plateau after it
TRACE = Trace("bursty[300:600]", load_trace("bursty").rps[300:600].copy(), "bursty window, seconds 300-600")

NAMES = ("ipa", "ppo", "ppo-raw", "hpa", "vpa")
# the agent: an untrained actor of the direct action design with conditioned observations (its proposals are often
# infeasible, so the guard has work to do; the bundled planner agents propose the planner's feasible plans)
AGENT = random_actor(SPEC, seed=3, observation="conditioned", action="direct")
GUARDED = ("ipa", "ppo")  # the guarded ones here: ppo by default, ipa with --guard


def controller(name: str) -> Controller:
    """A fresh policy behind its guard, as the registry builds it (stateful policies start from scratch)."""
    if name == "ipa":  # ipa with the reactive predictor and the DP solver, behind the safety layer
        policy = ILPPolicy(SPEC, ReactivePredictor(), mode="ipa", solver="dp", headroom=ipa_headroom(SPEC), name="ipa")
        # at the observed floor IPA's plans are feasible already (the backlog floor, the default, may move them)
        return Controller(policy, SafetyLayer(SPEC, load="observed"))
    if name in ("ppo", "ppo-raw"):  # the bundled agent, behind the safety layer or alone
        agent = PPOPolicy(SPEC, AGENT)
        agent.name = name
        return Controller(agent, SafetyLayer(SPEC) if name == "ppo" else None)
    if name == "hpa":  # stateful (stabilisation window, sync period), unguarded
        return Controller(HPAPolicy(SPEC, fa2_high_variants(SPEC)))
    if name == "vpa":  # stateful (histograms, recommender and updater ticks, pod ages), unguarded
        return Controller(VPAPolicy(SPEC))
    raise AssertionError(name)


class Recording:
    """A policy that records every state it is shown and what it proposed."""

    def __init__(self, policy) -> None:
        self.policy, self.name = policy, policy.name
        self.states: list[PipelineState] = []
        self.proposals: list[PipelineConfig] = []

    def decide(self, state: PipelineState) -> PipelineConfig:
        proposal = self.policy.decide(state)
        self.states.append(state)
        self.proposals.append(proposal)
        return proposal


@dataclass(frozen=True)
class Episode:
    """What the runner did: state i was decided on and configs[i] applied (or kept) for it."""

    states: list[PipelineState]
    proposals: list[PipelineConfig]
    configs: list[PipelineConfig]
    intervals: list[IntervalMetrics]


@cache
def episode(name: str) -> Episode:
    ctl = controller(name)
    rec = Recording(ctl.policy)
    ctl.policy = rec
    result = run_episode(SPEC, TRACE, ctl, seed=0)
    assert result.record["guard"] == ("safety" if name in GUARDED else "none")
    return Episode(rec.states, rec.proposals, result.configs, result.intervals)


class ReplayCluster:
    """A `Cluster` that replays recorded states: ``observe`` returns state i, ``step`` moves to state i + 1 (and
    returns the metrics of the interval between them), ``apply`` records (step index, config)."""

    def __init__(self, states: list[PipelineState], intervals: list[IntervalMetrics]) -> None:
        self.spec = SPEC
        self.states, self.intervals = states, intervals
        self.i = 0
        self.applied: list[tuple[int, PipelineConfig]] = []

    def observe(self) -> PipelineState:
        return self.states[min(self.i, len(self.states) - 1)]

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        old = self.observe().config
        self.applied.append((self.i, config))
        return ApplyOutcome(
            tuple(
                StageOutcome(st.name, "unchanged" if a == b else "rolled")
                for st, a, b in zip(SPEC.stages, old.stages, config.stages, strict=True)
            )
        )

    def step(self) -> IntervalMetrics:
        metrics = self.intervals[min(self.i, len(self.intervals) - 1)]
        self.i += 1
        return metrics

    @property
    def done(self) -> bool:
        return self.i >= len(self.states)


def expected_applies(ep: Episode) -> list[tuple[int, PipelineConfig]]:
    """What a cluster must have been asked to apply: the runner's config wherever it differs from the one in force."""
    return [(i, c) for i, (s, c) in enumerate(zip(ep.states, ep.configs, strict=True)) if c != s.config]


def sidecar_configs(ep: Episode, ctl: Controller) -> tuple[list[PipelineConfig], ReplayCluster]:
    """Drive a `Sidecar` with ``ctl`` over the recorded states; the config it applied or kept at each."""
    cluster = ReplayCluster(ep.states, ep.intervals)
    sidecar = Sidecar(cluster, ctl.policy, ctl.guard, SidecarSettings(interval_s=SPEC.interval_s))
    out = []
    for state in ep.states:
        report = sidecar.step()
        assert report.outcome == ("applied" if report.config != state.config else "unchanged"), report.message
        out.append(report.config)
        cluster.step()
    return out, cluster


# ---------------------------------------------------------------------- the recording itself


@pytest.mark.parametrize("name", NAMES)
def test_the_recorded_states_are_the_runners_decision_points(name):
    """state 0 is the warm state; state i + 1 has the runner's configs[i] in force and the interval's metrics."""
    ep = episode(name)
    n = len(ep.states)
    assert n == len(ep.configs) == len(ep.proposals) == int(TRACE.duration_s // SPEC.interval_s)
    warm = warm_state(SPEC, TRACE)
    assert ep.states[0].last is None and ep.states[0].config == warm.config
    np.testing.assert_array_equal(ep.states[0].arrival_rps, warm.arrival_rps)
    for i in range(1, n):
        assert ep.states[i].config == ep.configs[i - 1]
        assert ep.states[i].last == ep.intervals[i - 1]
    assert len(set(ep.configs)) > 1, "the policy never reconfigured: the comparison would prove little"


def test_the_guard_moved_ppo_during_the_spike_and_never_ipa():
    """The ground the negative control below stands on: the safety layer changed some ppo proposals."""
    ppo, raw, ipa = episode("ppo"), episode("ppo-raw"), episode("ipa")
    moved = [i for i, (p, c) in enumerate(zip(ppo.proposals, ppo.configs, strict=True)) if p != c]
    assert moved, "the safety layer never moved the agent on this window"
    peak = max(s.arrival_rps[-int(SPEC.interval_s) :].max() for s in ppo.states)
    assert any(ppo.states[i].arrival_rps[-int(SPEC.interval_s) :].max() >= 0.5 * peak for i in moved)
    assert raw.proposals == raw.configs  # no guard: what the agent proposes is applied
    assert ipa.proposals == ipa.configs  # IPA's plans are feasible at the observed floor already


# ---------------------------------------------------------------------- sidecar


@pytest.mark.parametrize("name", NAMES)
def test_the_sidecar_applies_the_runners_configs(name):
    ep = episode(name)
    configs, cluster = sidecar_configs(ep, controller(name))
    assert configs == ep.configs
    assert cluster.applied == expected_applies(ep)


def test_the_sidecar_comparison_can_fail_without_the_guard():
    """ppo's states through ppo-raw (the agent without the safety layer): the sidecar applies other configs exactly
    where the guard had moved the proposal, so the equality above is not vacuous."""
    ep = episode("ppo")
    configs, _ = sidecar_configs(ep, controller("ppo-raw"))
    differ = [i for i, (a, b) in enumerate(zip(configs, ep.configs, strict=True)) if a != b]
    moved = [i for i, (p, c) in enumerate(zip(ep.proposals, ep.configs, strict=True)) if p != c]
    assert differ and differ == moved
    assert [configs[i] for i in differ] == [ep.proposals[i] for i in differ]


# ---------------------------------------------------------------------- env


def agent_action(agent: PPOPolicy, state: PipelineState) -> np.ndarray:
    """The action `PPOPolicy.decide` takes on ``state`` (its own observation and predictor)."""
    return agent.act(agent.codec.observe(state, agent.predictor.predict(state)))


@pytest.mark.parametrize("name", ["ppo", "ppo-raw"])
def test_the_env_applies_the_runners_configs_for_the_agents_actions(name):
    """The env decodes the agent's action on each state, guards it unless ``safety=False``, and applies it: the
    same configs as the runner, and the observation it hands the agent is the one the deployed agent computes."""
    ep = episode(name)
    agent = PPOPolicy(SPEC, AGENT)
    clusters: list[ReplayCluster] = []

    def factory(spec, trace, initial, seed):
        assert spec is SPEC and trace is TRACE and initial == ep.states[0].config
        clusters.append(ReplayCluster(ep.states, ep.intervals))
        return clusters[-1]

    env = PipelineEnv(SPEC, safety=name == "ppo", cluster_factory=factory, action_design=AGENT.action)
    assert env.codec == agent.codec  # the env decodes as the deployed agent does
    obs, _ = env.reset(seed=0, options={"trace": TRACE})
    (cluster,) = clusters
    for i, state in enumerate(ep.states):
        expected_obs = agent.codec.observe(state, agent.predictor.predict(state))
        np.testing.assert_array_equal(obs, expected_obs)
        action = agent_action(agent, state)
        assert agent.codec.decode(action, state) == ep.proposals[i]
        obs, _, terminated, truncated, info = env.step(action)
        assert info["config"] == str(ep.configs[i]), f"state {i}"
        assert info["reconfigured"] == (ep.configs[i] != state.config)
        assert not terminated and truncated == (i == len(ep.states) - 1)
    assert cluster.applied == expected_applies(ep)


def test_the_env_comparison_can_fail_without_the_guard():
    """The guarded agent's states through the env with ``safety=False``: other configs where the guard moved."""
    ep = episode("ppo")
    agent = PPOPolicy(SPEC, AGENT)
    clusters: list[ReplayCluster] = []

    def factory(spec, trace, initial, seed):
        clusters.append(ReplayCluster(ep.states, ep.intervals))
        return clusters[-1]

    env = PipelineEnv(SPEC, safety=False, predictor="none", cluster_factory=factory, action_design=AGENT.action)
    env.reset(seed=0, options={"trace": TRACE})
    configs = [env.step(agent_action(agent, state))[4]["config"] for state in ep.states]
    differ = [i for i, (a, b) in enumerate(zip(configs, ep.configs, strict=True)) if a != str(b)]
    moved = [i for i, (p, c) in enumerate(zip(ep.proposals, ep.configs, strict=True)) if p != c]
    assert differ and differ == moved


# ---------------------------------------------------------------------- sidecar against the twin


NS = "pipeline"


@pytest.fixture(scope="module")
def kube_api():
    """The kmock Kubernetes API emulator (as tests/integration's fixture of the same name)."""
    pytest.importorskip("kmock")
    from tests.integration.servers import BackgroundApiServer

    server = BackgroundApiServer()
    yield server
    server.stop()


class TwinCluster:
    """The sidecar's view of the twin without Prometheus: the configuration from the Deployments (through the
    actuator), the metrics from the twin's simulator (what Prometheus would report, unrounded), changes through
    the actuator's patches, which the twin reads back on its next tick."""

    def __init__(self, twin, actuator) -> None:
        self.spec, self.twin, self.actuator = SPEC, twin, actuator

    def observe(self) -> PipelineState:
        deployed, _ready = self.actuator.read()
        state = self.twin.sim.observe()
        assert deployed == state.config  # what the Deployments say is what the twin runs
        return state

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        return self.actuator.apply(config)


def same_state(a: PipelineState, b: PipelineState) -> bool:
    return (
        (a.time_s, a.interval_s, a.config, a.in_flight) == (b.time_s, b.interval_s, b.config, b.in_flight)
        and np.array_equal(a.arrival_rps, b.arrival_rps)
        and repr(a.last) == repr(b.last)  # NaN-tolerant
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_the_sidecar_against_the_twin_deploys_the_runners_configs(kube_api, name):
    """The closed loop, not a replay: the twin (the simulator behind Deployments on the API emulator, ticking one
    interval at a time, even arrivals, the runner's seed) produces the states; the sidecar decides on them and
    patches the Deployments; the twin reads them back. Every state equals the runner's, and so does every
    configuration the Deployments hold."""
    from rlscale.kube.actuator import DeploymentActuator
    from rlscale.kube.objects import stage_deployment
    from tests.integration.twin import Twin

    ep = episode(name)
    namespace = f"{NS}-{name}"
    api = kube_api.apps_api()
    for st, sc in zip(SPEC.stages, ep.configs[0].stages, strict=True):  # the runner's warm-installed first decision
        api.create_namespaced_deployment(namespace, stage_deployment(SPEC, st, sc, namespace=namespace))
    actuator = DeploymentActuator(SPEC, api, namespace)
    twin = Twin(SPEC, TRACE, actuator, ep.configs[0], tick_s=SPEC.interval_s, seed=0, arrivals="even")
    ctl = controller(name)
    assert ctl.decide(ep.states[0]) == ep.configs[0]  # the runner's first decision, on the warm state
    sidecar = Sidecar(TwinCluster(twin, actuator), ctl.policy, ctl.guard, SidecarSettings(interval_s=SPEC.interval_s))
    twin.tick()
    for i in range(1, len(ep.states)):
        assert same_state(twin.sim.observe(), ep.states[i]), f"state {i}"
        report = sidecar.step()
        assert report.outcome in ("applied", "unchanged") and report.config == ep.configs[i], report.message
        assert actuator.read()[0] == ep.configs[i]
        twin.tick()
    assert twin.sim.done


# ---------------------------------------------------------------------- a running pipeline (issue 14, item 4)


def test_hpa_on_a_running_pipeline_scales_replicas_only_in_simulate_and_in_the_sidecar():
    """The sidecar is started on a pipeline that already runs (here the cheapest variants, as a user deployed them),
    with ``--policy hpa`` built by the registry as both commands build it. ``simulate`` from that configuration
    (``initial``) and the sidecar over the same states apply the same configurations, and the HPA, like Kubernetes',
    changes replicas only: it used to re-plan variant, batch and cores at its first decision on a running pipeline
    (it planned them whenever it had not planned yet), so the sidecar rolled every stage over to IPA's FA2-high
    variants."""
    from rlscale.policies.registry import make_live_policy, make_policy

    running = warm_state(SPEC, TRACE).config
    assert running.variants != tuple(fa2_high_variants(SPEC))  # precondition: the hpa's warm start would differ
    ctl = make_policy("hpa", SPEC, TRACE)
    rec = Recording(ctl.policy)
    ctl.policy = rec
    result = run_episode(SPEC, TRACE, ctl, seed=0, initial=running)
    applied = result.configs[1:]  # what the runner ran after deciding on each recorded state
    assert len(rec.states) == len(applied) and rec.states[0].last is not None and rec.states[0].config == running
    for config in applied:
        for sc, sc0 in zip(config.stages, running.stages, strict=True):
            assert (sc.variant, sc.batch, sc.cores) == (sc0.variant, sc0.batch, sc0.cores)
    assert len({c.stages[0].replicas for c in applied}) > 1, "the hpa never scaled: the test would prove little"
    live = make_live_policy("hpa", SPEC)
    cluster = ReplayCluster(rec.states, result.intervals)
    sidecar = Sidecar(cluster, live.policy, live.guard, SidecarSettings(interval_s=SPEC.interval_s))
    configs = []
    for _state in rec.states:
        configs.append(sidecar.step().config)
        cluster.step()
    assert configs == applied
