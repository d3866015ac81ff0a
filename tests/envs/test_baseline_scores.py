"""The env's IPA baseline (`envs.pipeline_env.baseline_scores`) is played by the runner's episode loop
(`rlscale.sim.runner.play`) and scores every interval exactly as the hand-written loop it replaced."""

from __future__ import annotations

import pytest

from envs.pipeline_env import baseline_scores, simulator_factory
from ilp_baseline.policy import ILPPolicy, ipa_headroom
from rlscale import control
from rlscale.lstm import LSTMPredictor
from rlscale.predictors import ReactivePredictor
from rlscale.sim.runner import play, warm_state
from rlscale.spec import load_spec
from rlscale.types import PipelineState
from rlscale.workload import Trace, load_trace


def _replaced_loop(spec, trace, initial, seed) -> list[float]:
    """The loop ``baseline_scores`` ran until it went through the runner (commit 759f088), verbatim."""
    cluster = simulator_factory(spec, trace, initial, seed)
    policy = ILPPolicy(spec, LSTMPredictor(), headroom=ipa_headroom(spec), name="ipa")
    warm = warm_state(spec, trace, None)
    state = cluster.observe()
    if state.arrival_rps.size == 0:
        state = PipelineState(state.time_s, state.interval_s, warm.arrival_rps, state.config, None, 0)
    scores = []
    limits = control.Limits(spec)
    while not getattr(cluster, "done", True):
        control.step(cluster, policy, None, state=state, limits=limits)
        scores.append(cluster.step().score)
        state = cluster.observe()
    return scores


@pytest.mark.parametrize(("pipeline", "trace", "seconds"), [("video", "bursty", 240), ("sponge", "fluctuating", 40)])
def test_baseline_scores_equal_the_loop_they_replaced(pipeline, trace, seconds):
    spec = load_spec(pipeline)
    short = Trace(trace, load_trace(trace).rps[:seconds])
    initial = warm_state(spec, short).config
    scores = baseline_scores(spec, short, initial, 11)
    assert len(scores) == seconds / spec.interval_s
    assert scores == _replaced_loop(spec, short, initial, 11)  # exactly, interval by interval


def test_play_starts_on_the_given_state_then_observes():
    spec = load_spec("video")
    short = Trace("bursty", load_trace("bursty").rps[:60])
    warm = warm_state(spec, short)
    cluster = simulator_factory(spec, short, warm.config, 0)
    controller = control.Controller(ILPPolicy(spec, ReactivePredictor(), name="ipa"), None, control.Limits(spec))
    steps = list(play(cluster, controller, warm))
    assert [o.state.time_s for o, _ in steps] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert steps[0][0].state is warm and cluster.done
    assert [m.end_s for _, m in steps] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_play_plays_nothing_on_a_cluster_that_never_ends():
    class Live:  # no ``done``: a live cluster
        def observe(self):
            raise AssertionError("not observed")

    assert list(play(Live(), control.Controller(ILPPolicy(load_spec("video"), ReactivePredictor(), name="ipa")))) == []
