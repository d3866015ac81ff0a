"""The feasibility model on loads that are not finite numbers >= 0 (issue 11): never feasible, never a crash."""

from __future__ import annotations

import math

import pytest

from rlscale.model import (
    InvalidLoad,
    batch_fill_wait_s,
    expected_accuracy,
    is_feasible,
    objective_value,
    pipeline_capacity_rps,
    replicas_needed,
    resize_replicas,
    stage_options,
    violations,
)
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig, VariantPool


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
    config = PipelineConfig((StageConfig.one("fast", 1, 4, 2), StageConfig.one("slow", 1, 2, 1)))
    assert is_feasible(toy, config, 0.0)
    problems = violations(toy, config, load_rps)
    assert problems and "not a finite number >= 0" in problems[0]
    assert not is_feasible(toy, config, load_rps)


def test_pipeline_capacity_is_the_bottleneck_stage_as_violations_counts_it(toy):
    config = PipelineConfig((StageConfig.one("fast", 2, 3, 2), StageConfig.one("slow", 1, 2, 1)))
    rho = toy.objective.rho_max
    per_stage = [
        sc.replicas * st.latency.throughput_rps(sc.variant, sc.batch, sc.cores) * rho
        for st, sc in zip(toy.stages, config.stages, strict=True)
    ]
    capacity = pipeline_capacity_rps(toy, config)
    assert capacity == min(per_stage)
    assert not any("capacity" in p for p in violations(toy, config, capacity))
    assert any("capacity" in p for p in violations(toy, config, capacity * 1.001))


# ------------------------------------------------------------------------------------------ variant pools


def _pooled_toy(write_spec, method="sum", max_pools=2):
    """The toy pipeline with room for 80 rps in its second stage and two pools in its first."""

    def mutate(d):
        d["core_budget"] = 32
        d["objective"]["accuracy_method"] = method
        d["stages"][0]["max_pools"] = max_pools
        d["stages"][1]["max_replicas"] = 10

    return load_spec(write_spec(mutate))


def _slow_fast(slow_share=0.7, fast_batch=1):
    return StageConfig.of_pools(
        [VariantPool("slow", 1, 4, 2, share=slow_share), VariantPool("fast", fast_batch, 1, 1, share=1 - slow_share)]
    )


def test_a_mix_is_feasible_where_its_slow_variant_alone_is_not(write_spec):
    spec = _pooled_toy(write_spec)
    second = StageConfig.one("slow", 1, 10, 1)
    slow_alone = PipelineConfig((StageConfig.one("slow", 1, 4, 2), second))
    mixed = PipelineConfig((_slow_fast(), second))
    # slow at b1 c2 serves 1/0.066 rps per replica: 4 replicas carry 60.6 rps, not 80; 70% of 80 is 56
    assert any("capacity" in v for v in violations(spec, slow_alone, 80.0))
    assert violations(spec, mixed, 80.0) == []
    assert not is_feasible(spec, mixed, 90.0)  # the fast pool (27 rps) no longer carries 30% of 90


def test_a_stage_may_not_run_more_pools_than_its_max_pools(write_spec):
    spec = _pooled_toy(write_spec, max_pools=1)
    mixed = PipelineConfig((_slow_fast(), StageConfig.one("slow", 1, 10, 1)))
    assert "first: 2 pools > max_pools 1" in violations(spec, mixed, 80.0)


def test_each_pool_waits_for_its_batch_at_its_own_share_of_the_load(write_spec):
    spec = _pooled_toy(write_spec)
    second = StageConfig.one("slow", 1, 10, 1)
    # fast at batch 4 with 5% of 40 rps waits (4 - 1) / 2 = 1.5 s for its batch: over the 1 s SLA; at 40 rps it
    # would wait 0.075 s
    thin = PipelineConfig((_slow_fast(slow_share=0.95, fast_batch=4), second))
    assert any(v.startswith("latency") for v in violations(spec, thin, 40.0))
    wide = PipelineConfig((_slow_fast(slow_share=0.5, fast_batch=4), second))
    assert violations(spec, wide, 40.0) == []


def test_the_capacity_of_a_mix_is_the_first_pool_to_fill_at_its_share(write_spec):
    spec = _pooled_toy(write_spec)
    first, second = spec.stages
    config = PipelineConfig((_slow_fast(), StageConfig.one("slow", 1, 10, 1)))
    slow = 4 * 1 / first.latency.latency_s("slow", 1, 2)
    fast = 1 * 1 / first.latency.latency_s("fast", 1, 1)
    tail = 10 * 1 / second.latency.latency_s("slow", 1, 1)
    expected = min(slow / 0.7, fast / 0.3, tail)
    assert pipeline_capacity_rps(spec, config) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(slow / 0.7)  # the slow pool is the bottleneck here
    assert is_feasible(spec, config, expected) and not is_feasible(spec, config, expected * 1.001)


@pytest.mark.parametrize(
    "method,expected", [("sum", 0.7 * 1.0 + 0.3 * 0.5 + 1.0), ("product", (0.7 * 0.8 + 0.3 * 0.5) * 0.9)]
)
def test_the_expected_accuracy_of_a_mix_weights_its_pools_by_share(write_spec, method, expected):
    spec = _pooled_toy(write_spec, method)
    config = PipelineConfig((_slow_fast(), StageConfig.one("slow", 1, 10, 1)))
    assert expected_accuracy(spec, config) == pytest.approx(expected, rel=1e-12)
    single = PipelineConfig((StageConfig.one("fast", 1, 4, 2), StageConfig.one("slow", 1, 10, 1)))
    assert expected_accuracy(spec, single) == spec.accuracy(["fast", "slow"])


def test_the_objective_of_a_mix_counts_every_pools_cores_and_its_mean_batch(write_spec):
    spec = _pooled_toy(write_spec)
    config = PipelineConfig((_slow_fast(slow_share=0.5, fast_batch=4), StageConfig.one("slow", 1, 10, 1)))
    o = spec.objective
    cores = 4 * 2 + 1 * 1 + 10 * 1
    batch = 0.5 * 1 + 0.5 * 4 + 1
    accuracy = 0.5 * 1.0 + 0.5 * 0.5 + 1.0
    assert objective_value(spec, config) == pytest.approx(o.alpha * accuracy - o.beta * cores - o.gamma * batch)


def test_resizing_a_mix_sizes_each_pool_for_its_share(write_spec):
    spec = _pooled_toy(write_spec)
    config = PipelineConfig((_slow_fast(), StageConfig.one("slow", 1, 1, 1)))
    resized = resize_replicas(spec, config, 80.0)
    assert resized is not None
    pools = resized.stages[0].pools
    assert [(p.variant, p.share, p.replicas) for p in pools] == [("slow", 0.7, 4), ("fast", pytest.approx(0.3), 1)]
    assert resized.stages[1].replicas == 9  # 80 rps / 9.0 rps per replica
    assert is_feasible(spec, resized, 80.0)
