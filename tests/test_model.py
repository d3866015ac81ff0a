"""The feasibility model on loads that are not finite numbers >= 0 (issue 11): never feasible, never a crash."""

from __future__ import annotations

import math

import pytest

from rlscale.model import (
    InvalidLoad,
    batch_fill_wait_s,
    is_feasible,
    pipeline_capacity_rps,
    replicas_needed,
    stage_options,
    violations,
)
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig


@pytest.fixture
def toy(write_spec):
    return load_spec(write_spec())


def test_replicas_needed_at_an_infinite_load_is_more_than_max_replicas_without_raising(toy):
    for stage in toy.stages:
        need = replicas_needed(stage, stage.variant_names[0], stage.batch_sizes[0], stage.cores[0], math.inf, 1.0)
        assert isinstance(need, int)
        assert need > stage.max_replicas


def test_replicas_needed_at_a_finite_load_too_large_for_floats_is_more_than_max_replicas(toy):
    stage = toy.stages[0]
    # load / (h * rho) overflows to inf although the load itself is finite
    need = replicas_needed(stage, "slow", 1, 1, 1e308, 1e-3)
    assert need > stage.max_replicas


@pytest.mark.parametrize("load_rps", [math.nan, -1.0, -math.inf])
def test_replicas_needed_rejects_a_load_that_is_not_a_number_at_least_zero(toy, load_rps):
    stage = toy.stages[0]
    with pytest.raises(InvalidLoad, match="not a finite number >= 0"):
        replicas_needed(stage, "fast", 1, 1, load_rps, 1.0)
    assert issubclass(InvalidLoad, ValueError)


def test_stage_options_at_an_infinite_load_are_empty(toy):
    for stage in toy.stages:
        assert stage_options(stage, math.inf, 1.0) == []


def test_batch_fill_wait_of_an_unknown_load_is_unbounded():
    assert batch_fill_wait_s(4, math.nan) == math.inf
    assert batch_fill_wait_s(4, math.inf) == 0.0
    assert batch_fill_wait_s(1, math.nan) == 0.0


@pytest.mark.parametrize("load_rps", [math.nan, math.inf, -math.inf, -1.0, -1e-6])
def test_no_configuration_is_feasible_at_a_load_that_is_not_a_finite_number_at_least_zero(toy, load_rps):
    # the largest configuration, batch 1 everywhere: the one a NaN or negative load used to pass
    config = PipelineConfig((StageConfig("fast", 1, 4, 2), StageConfig("slow", 1, 2, 1)))
    assert is_feasible(toy, config, 0.0)
    problems = violations(toy, config, load_rps)
    assert problems and "not a finite number >= 0" in problems[0]
    assert not is_feasible(toy, config, load_rps)


def test_pipeline_capacity_is_the_bottleneck_stage_as_violations_counts_it(toy):
    config = PipelineConfig((StageConfig("fast", 2, 3, 2), StageConfig("slow", 1, 2, 1)))
    rho = toy.objective.rho_max
    per_stage = [
        sc.replicas * st.latency.throughput_rps(sc.variant, sc.batch, sc.cores) * rho
        for st, sc in zip(toy.stages, config.stages, strict=True)
    ]
    capacity = pipeline_capacity_rps(toy, config)
    assert capacity == min(per_stage)
    assert not any("capacity" in p for p in violations(toy, config, capacity))
    assert any("capacity" in p for p in violations(toy, config, capacity * 1.001))
