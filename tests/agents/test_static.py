"""Static policies: sized for the peak, fixed variants, and a feasible plan whenever one exists."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.static import StaticPolicy
from rlscale.model import is_feasible, plan_fixed_variants, stage_options, violations
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig


@pytest.mark.parametrize("name", ["video", "sum-qa", "audio-qa", "nlp"])
@pytest.mark.parametrize("which", ["max", "min"])
def test_static_policy_is_feasible_at_peak_with_extreme_variants(name, which):
    spec = load_spec(name)
    policy = StaticPolicy(spec, which, peak_rps=34)
    cfg = policy.config
    pick = max if which == "max" else min
    assert cfg.variants == tuple(pick(st.variants, key=lambda v: v.accuracy).name for st in spec.stages)
    assert is_feasible(spec, cfg, 34), violations(spec, cfg, 34)
    state = PipelineState(0.0, 10.0, arrival_rps=np.zeros(0), config=cfg, last=None)
    assert policy.decide(state) is cfg


def test_plan_is_the_cheapest_feasible_by_brute_force():
    spec = load_spec("video")
    variants = ["yolov5m", "resnet50"]
    for load in (3.0, 17.0, 34.0):
        plan = plan_fixed_variants(spec, variants, load)
        best = None
        for combo in itertools.product(
            *[stage_options(st, load, 1.0, [v]) for st, v in zip(spec.stages, variants, strict=True)]
        ):
            cfg = PipelineConfig(tuple(o.config for o in combo))
            if is_feasible(spec, cfg, load):
                best = min(best, cfg.total_cores) if best is not None else cfg.total_cores
        assert best is not None
        assert plan.total_cores == best
        assert is_feasible(spec, plan, load)


def test_violations_explain_why():
    spec = load_spec("video")
    tiny = PipelineConfig(
        (
            StageConfig.one("yolov5x", 8, 1, 1),
            StageConfig.one("resnet152", 3, 1, 1),
        )
    )
    problems = violations(spec, tiny, 34)
    assert any("capacity" in p for p in problems)
    assert any("batch 3 not allowed" in p for p in problems)
    assert any("latency" in p for p in problems)
