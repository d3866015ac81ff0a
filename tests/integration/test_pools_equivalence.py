"""InfAdapter and MS+ through the simulator and through the Kubernetes actuator (on the kmock emulator), one control
step for both, against the same load: they apply the same sequence of pools and weights (issue 26, item 2).

The simulator's run is recorded (the states each decision saw, `tests.test_control_equivalence.Recording`). The
cluster side replays those states' load and metrics, but its configuration in force is what the actuator reads from
the emulator's Deployments and HTTPRoute; between two steps the kubelet's part (pods ready) is played by writing
each Deployment's status. A fresh policy decides on each side; the decisions must agree interval by interval, a
switch must complete on the cluster within two intervals of the decision, and no route weight may ever point at a
pool without ready replicas.
"""

from __future__ import annotations

import dataclasses

import pytest

from ilp_baseline.infadapter import InfAdapterPolicy
from rlscale import control
from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.objects import pool_weights
from rlscale.predictors import ReactivePredictor
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState
from rlscale.workload import load_trace
from tests.integration.closed_loop import create_stage_objects
from tests.integration.test_actuator_pools import NS, replicas, set_ready, weights
from tests.test_control_equivalence import Recording

SPEC = load_spec("infadapter")
TRACE = load_trace("infadapter")


def pools_and_weights(config: PipelineConfig) -> dict[str, tuple[int, int, int, int]]:
    """Variant -> (batch, cores, replicas, route weight) of the one stage's pools."""
    sc = config.stages[0]
    w = pool_weights(sc)
    return {p.variant: (p.batch, p.cores, p.replicas, w[p.variant]) for p in sc.pools}


def on_cluster(api) -> dict[str, tuple[int, int, int, int]]:
    """The same, read off the emulator's objects: the pools that have replicas or weight."""
    act = DeploymentActuator(SPEC, api, NS)
    state = act._pool_state(SPEC.stages[0])
    return {
        v: (c.batch, c.cores, c.replicas, state.weights[v])
        for v, c in state.configs.items()
        if c.replicas > 0 or state.weights[v] > 0
    }


class ReplayOnCluster:
    """The recorded states' load and metrics, with the configuration the actuator reads from the emulator."""

    def __init__(self, states: list[PipelineState], actuator: DeploymentActuator) -> None:
        self.spec, self.states, self.actuator, self.i = SPEC, states, actuator, 0

    @property
    def off_spec(self) -> dict[str, str]:
        return dict(self.actuator.off_spec)

    def observe(self) -> PipelineState:
        config, _ = self.actuator.read()
        return dataclasses.replace(self.states[self.i], config=config)

    def apply(self, config: PipelineConfig):
        return self.actuator.apply(config)


@pytest.mark.slow
@pytest.mark.parametrize("single", [False, True], ids=["infadapter", "ms-plus"])
def test_infadapter_applies_the_same_pools_and_weights_in_the_simulator_and_on_the_cluster(kube_api, single):
    recording = Recording(InfAdapterPolicy(SPEC, ReactivePredictor(), single=single))
    sim = run_episode(SPEC, TRACE, recording, seed=0)
    states = recording.states[1:]  # the first decision is the warm start, installed before the run
    decided_sim = sim.configs[1:]  # configs[i + 1]: what the simulator ran after deciding on states[i]
    switches = sum(
        1 for a, b in zip(sim.configs, sim.configs[1:], strict=False) if a.stages[0].pools != b.stages[0].pools
    )
    assert switches >= 2, "the window must make the policy switch pools"

    api = kube_api.apps_api()
    create_stage_objects(api, SPEC, sim.configs[0], NS)
    for v, n in replicas(api).items():
        set_ready(api, v, n)
    cluster = ReplayOnCluster(states, DeploymentActuator(SPEC, api, NS))
    policy = InfAdapterPolicy(SPEC, ReactivePredictor(), single=single)
    late = []
    for i, _state in enumerate(states):
        cluster.i = i
        outcome = control.step(cluster, policy)
        assert pools_and_weights(outcome.config) == pools_and_weights(decided_sim[i]), f"interval {i}"
        # no weight on a pool without ready replicas, at any time
        for v, w in weights(api).items():
            if w > 0:
                dep = api.read_namespaced_deployment(f"infadapter-resnet-{v}", NS)
                assert dep.spec.replicas > 0 and (dep.status.ready_replicas or 0) > 0, f"interval {i}: {v} has {w}"
        # within two intervals of a decision (this step and the next, if the policy holds) the cluster runs it
        if i > 0 and decided_sim[i] == decided_sim[i - 1] and on_cluster(api) != pools_and_weights(decided_sim[i]):
            late.append(i)
        for v, n in replicas(api).items():  # the kubelet: pods ready by the next interval
            set_ready(api, v, n)
    assert late == []
    assert on_cluster(api) == pools_and_weights(decided_sim[-1])
