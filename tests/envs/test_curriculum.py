"""The curriculum against IPA (`envs.curriculum`): bins drawn by gap, gaps measured like for like."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.codecs import RATIO_RANGE
from envs.curriculum import Curriculum
from envs.pipeline_env import PipelineEnv, baseline_scores
from rlscale.errors import RlscaleError
from rlscale.spec import load_spec


def test_bins_where_the_agent_trails_are_drawn_more_often():
    c = Curriculum(RATIO_RANGE, (0.25, 3.0), uniform=0.2, temperature=0.5)
    for i in range(4):
        for j in range(4):
            c.report((i, j), 0.0)
    c.report((2, 3), 3.0)  # the agent trails IPA by about 0.6 cores there (smoothed)
    p = c.probabilities().reshape(4, 4)
    assert p[2, 3] == p.max() and p[2, 3] > 2.5 * p[0, 0]
    assert p.sum() == pytest.approx(1.0) and p.min() >= 0.2 / 16 - 1e-12
    rng = np.random.default_rng(0)
    draws = [c.draw(rng) for _ in range(2000)]
    share = np.mean([b == (2, 3) for b, _, _ in draws])
    assert share == pytest.approx(p[2, 3], abs=0.03)
    edges = np.exp(np.linspace(math.log(0.25), math.log(3.0), 5))
    for (i, j), ratio, scale in draws[:200]:  # values lie within their bin's edges
        r_lo, r_hi = math.exp(math.log(250) * i / 4), math.exp(math.log(250) * (i + 1) / 4)
        assert r_lo - 1e-9 <= ratio <= r_hi + 1e-9 and edges[j] - 1e-9 <= scale <= edges[j + 1] + 1e-9


def test_unvisited_bins_are_tried_and_no_data_is_ignored():
    c = Curriculum(RATIO_RANGE, (0.25, 3.0))
    c.report((0, 0), -5.0)
    c.report((0, 1), float("nan"))
    p = c.probabilities().reshape(4, 4)
    assert p[0, 0] < p[1, 1]  # a bin the agent wins gets drawn less than one never tried
    assert c.visits[0, 1] == 0 and math.isnan(c.gaps[0, 1])


@pytest.mark.slow
def test_env_reports_the_gap_to_ipa_on_the_same_episode():
    spec = load_spec("video")
    c = Curriculum(RATIO_RANGE, (0.25, 3.0))
    env = PipelineEnv(spec, action_design="planner", sample_objective=True, load_scales=(0.25, 3.0), curriculum=c)
    env.reset(seed=4)
    episode = dict(env._episode)
    scores = []
    done = False
    while not done:
        _, _, _, done, info = env.step(np.array([1, 1, 0, 1]))  # hold at headroom 1
        scores.append(info["score"])
    assert c.visits.sum() == 1 and c.visits[episode["bin"]] == 1
    ipa = baseline_scores(env.episode_spec, env.trace, episode["initial"], episode["seed"])
    expected = (np.mean(ipa) - np.mean(scores)) / env.episode_spec.objective.beta
    assert c.gaps[episode["bin"]] == pytest.approx(expected)


def test_a_curriculum_needs_sampled_weights_and_loads():
    with pytest.raises(RlscaleError, match="curriculum"):
        PipelineEnv("video", action_design="planner", curriculum=Curriculum(RATIO_RANGE, (0.25, 3.0)))
