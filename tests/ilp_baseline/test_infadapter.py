"""InfAdapter's problem: the vectorised enumeration equals a plain brute force of the published formulation, the
capacity model keeps InfAdapter's integer quirks, and MS+ picks single-variant plans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp_baseline.infadapter import CapacityLine, InfAdapterProblem, Variant
from rlscale.errors import RlscaleError


def _brute(p: InfAdapterProblem, lam: int, prev: tuple[int, ...]) -> float | None:
    """The published formulation, written out loop by loop: the best objective, or None when nothing covers."""
    best = None
    choices = (0, *range(p.min_cores, p.max_cores + 1))
    max_load_time = max(v.load_time_s for v in p.variants)
    for n in itertools.product(choices, repeat=len(p.variants)):
        if not 0 < sum(n) <= p.max_cores:
            continue
        th = [v.capacity.planned_rps(c) for v, c in zip(p.variants, n, strict=True)]
        if sum(th) < lam:
            continue
        rate, accuracy = lam, 0.0
        for v, t in zip(p.variants, th, strict=True):  # most accurate first
            taken = min(t, rate)
            rate -= taken
            accuracy += taken / lam * v.accuracy
        changed = [v.load_time_s for v, c, pc in zip(p.variants, n, prev, strict=True) if c != 0 and c != pc]
        f = accuracy - p.alpha * sum(n) / p.max_cores - p.beta * (max(changed, default=0.0) / max_load_time)
        best = f if best is None else max(best, f)
    return best


@st.composite
def _problem(draw):
    m = draw(st.integers(1, 3))
    variants = [
        Variant(
            f"v{i}",
            draw(st.floats(0.1, 1.0)),
            draw(st.floats(1.0, 10.0)),
            CapacityLine(draw(st.floats(0.5, 30.0)), draw(st.floats(-8.0, 3.0))),
        )
        for i in range(m)
    ]
    max_cores = draw(st.integers(2, 8))
    min_cores = draw(st.integers(1, 2))
    return InfAdapterProblem(
        variants, max_cores=max_cores, min_cores=min_cores, alpha=draw(st.floats(0.0, 1.0)), beta=draw(st.floats(0, 1))
    )


@settings(max_examples=60, deadline=None)
@given(p=_problem(), lam=st.integers(1, 120), data=st.data())
def test_solve_equals_the_published_formulation_by_brute_force(p: InfAdapterProblem, lam: int, data) -> None:
    prev = tuple(data.draw(st.sampled_from((0, *range(p.min_cores, p.max_cores + 1)))) for _ in p.variants)
    got = p.solve(lam, prev)
    want = _brute(p, lam, prev)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got.objective == pytest.approx(want, abs=1e-9)
    # the decision is what it claims: covers the load, within budget, the split most accurate first
    assert sum(got.load_rps) == lam
    assert got.total_cores <= p.max_cores
    assert all(c == 0 or c >= p.min_cores for c in got.cores)
    caps = [v.capacity.planned_rps(c) for v, c in zip(p.variants, got.cores, strict=True)]
    assert all(0 <= load <= cap for load, cap in zip(got.load_rps, caps, strict=True))


def test_capacity_keeps_infadapters_integer_intercept() -> None:
    # a positive intercept is capped at 0.99 and truncated to 0; a negative one truncated toward zero
    assert CapacityLine(10.0, 5.0).planned_rps(2) == int(0.8 * 20)
    assert CapacityLine(10.0, -3.7).planned_rps(2) == int(0.8 * (20 - 3))
    assert CapacityLine(1.0, -30.0).planned_rps(4) == 0  # never negative
    assert CapacityLine(10.0, 5.0).planned_rps(0) == 0


def test_fit_is_least_squares_and_rejects_degenerate_points() -> None:
    line = CapacityLine.fit([1, 2, 4, 8], [12, 22, 42, 82])
    assert line.slope == pytest.approx(10.0)
    assert line.intercept == pytest.approx(2.0)
    with pytest.raises(RlscaleError, match="two points"):
        CapacityLine.fit([2, 2], [10, 11])
    with pytest.raises(RlscaleError, match="finite"):
        CapacityLine.fit([1, 2], [10, float("nan")])


def _two_variant_problem(**kw) -> InfAdapterProblem:
    fast = Variant("fast", 0.70, 6.0, CapacityLine(25.0, 0.0))
    slow = Variant("slow", 0.78, 8.0, CapacityLine(4.0, 0.0))
    return InfAdapterProblem([fast, slow], max_cores=20, **kw)


def test_a_mix_is_chosen_when_accuracy_pays_for_it_and_the_split_goes_to_the_accurate_variant_first() -> None:
    p = _two_variant_problem(alpha=0.05, beta=0.0)
    assert [v.name for v in p.variants] == ["slow", "fast"]
    d = p.solve(100, (0, 0))
    assert d is not None and all(c > 0 for c in d.cores)  # both variants in use
    assert d.load_rps[0] == CapacityLine(4.0, 0.0).planned_rps(d.cores[0])  # the accurate one is filled first
    single = p.solve_single(100, (0, 0))
    assert single is not None and d.objective > single.objective


def test_load_cost_only_for_variants_that_change_to_new_nonzero_cores() -> None:
    p = _two_variant_problem(alpha=0.0, beta=1.0)
    cores = np.array([[4, 2], [0, 2], [4, 0]])
    load = np.array([[10, 0], [0, 10], [10, 0]])
    f = p.objective(10, cores, load, previous=(4, 0))
    accuracy = load @ p.accuracy / 10
    # keeping slow at 4 and adding fast costs fast's load time; removing slow costs nothing; keeping costs nothing
    assert f == pytest.approx(accuracy - np.array([6.0 / 8.0, 6.0 / 8.0, 0.0]))


def test_ms_plus_uses_one_variant_with_the_fewest_cores_that_cover() -> None:
    p = _two_variant_problem(alpha=0.05, beta=0.001)
    d = p.solve_single(30, (0, 0))
    assert d is not None and sum(c > 0 for c in d.cores) == 1
    i = next(i for i, c in enumerate(d.cores) if c)
    line = p.variants[i].capacity
    assert line.planned_rps(d.cores[i]) >= 30
    assert d.cores[i] == p.min_cores or line.planned_rps(d.cores[i] - 1) < 30


def test_uncoverable_loads_and_bad_loads() -> None:
    p = _two_variant_problem()
    assert p.solve(10_000, (0, 0)) is None
    assert p.solve_single(10_000, (0, 0)) is None
    assert p.solve(0, (0, 0)) is None
    for bad in (-1, 2.5, float("nan")):
        with pytest.raises(RlscaleError, match="integer load"):
            p.solve(bad, (0, 0))  # type: ignore[arg-type]
    with pytest.raises(RlscaleError, match="unknown variants"):
        p.index({"nope": 2})
    with pytest.raises(RlscaleError, match="min_cores"):
        InfAdapterProblem(p.variants, max_cores=1, min_cores=2)


def test_bundled_capacity_lines_fit_infadapters_five_points(tmp_path) -> None:
    lines = CapacityLine.load()
    assert sorted(lines) == sorted(f"resnet{k}" for k in (18, 34, 50, 101, 152))
    # a bigger ResNet serves fewer requests per core
    slopes = [lines[f"resnet{k}"].slope for k in (18, 34, 50, 101, 152)]
    assert slopes == sorted(slopes, reverse=True)
    # the fit uses cores 1, 2, 4, 8 and 16 only: changing another row changes nothing
    rows = (tmp_path / "cap.csv").open("w")
    rows.write("variant,cores,capacity_rps\nx,1,10\nx,2,20\nx,3,999\nx,4,40\nx,8,80\nx,16,160\n")
    rows.close()
    assert CapacityLine.load(tmp_path / "cap.csv")["x"].slope == pytest.approx(10.0)
    (tmp_path / "bad.csv").write_text("variant,cores\nx,1\n")
    with pytest.raises(RlscaleError, match="unreadable capacity table"):
        CapacityLine.load(tmp_path / "bad.csv")


# --- the policy ----------------------------------------------------------------------------------------------------


def _state(spec, config, rps: float, seconds: int = 600, warm: bool = False):
    """A state after ``seconds`` at ``rps`` (``warm``: an episode's first decision, no last interval)."""
    from rlscale.types import IntervalMetrics, PipelineState, StageMetrics

    stage = StageMetrics(int(rps), 0, 0.1, 0.2, 0, 0.5, 1, 1.0)
    last = IntervalMetrics(0, spec.interval_s, int(rps), int(rps), 0, 0, 0.0, 0.1, 0.2, 0.7, 10, 0.7, 0.7, (stage,))
    return PipelineState(float(seconds), spec.interval_s, np.full(seconds, float(rps)), config, None if warm else last)


class _Fixed:
    name = "fixed"

    def __init__(self, rps: float) -> None:
        self.rps = rps

    def predict(self, state) -> float:
        return self.rps


def test_policy_plans_infadapters_mix_as_pools_and_stabilises_scale_down() -> None:
    from ilp_baseline.infadapter import InfAdapterPolicy
    from rlscale.model import is_feasible
    from rlscale.spec import load_spec
    from rlscale.types import PipelineConfig, StageConfig

    spec = load_spec("infadapter")
    predictor = _Fixed(250.0)
    policy = InfAdapterPolicy(spec, predictor)
    start = PipelineConfig((StageConfig.one("resnet152", 1, 1, 20),))
    config = policy.decide(_state(spec, start, 250.0))
    stage = config.stages[0]
    assert 1 < len(stage.pools) <= spec.stages[0].max_pools
    assert config.total_cores <= spec.core_budget
    # the shares are the split of int(1.1 x 250) = 275 rps, most accurate pool first
    want = policy.problem.solve(275, policy.problem.index({"resnet152": 20}))
    assert want is not None
    loads = dict(zip((v.name for v in policy.problem.variants), want.load_rps, strict=True))
    for pool in stage.pools:
        assert pool.replicas == 1 and pool.batch == 1
        assert pool.share == pytest.approx(loads[pool.variant] / 275)
    accuracies = {v.name: v.accuracy for v in spec.stages[0].variants}
    assert [accuracies[p.variant] for p in stage.pools] == sorted(
        (accuracies[p.variant] for p in stage.pools), reverse=True
    )
    assert is_feasible(spec, config, 200.0)  # the simulator's view: every pool carries its share
    # a lower load is acted on only at the fifth decision in a row
    predictor.rps = 100.0
    held = [policy.decide(_state(spec, config, 100.0)) for _ in range(4)]
    assert all(c == config for c in held)
    assert policy.decide(_state(spec, config, 100.0)).total_cores < config.total_cores
    # a rise is acted on at once
    predictor.rps = 260.0
    assert policy.decide(_state(spec, config, 260.0)).total_cores > 0
    assert policy.skipped == 0
    # a warm start forgets what was planned: a new episode acts at once
    predictor.rps = 100.0
    policy.decide(_state(spec, config, 100.0))
    assert policy.skipped == 1
    assert policy.decide(_state(spec, config, 100.0, warm=True)) != config
    assert policy.skipped == 0


def test_ms_plus_runs_one_pool_and_an_uncoverable_load_falls_back_to_the_cheapest_variant_at_most_cores() -> None:
    from ilp_baseline.infadapter import InfAdapterPolicy
    from rlscale.spec import load_spec
    from rlscale.types import PipelineConfig, StageConfig

    spec = load_spec("infadapter")
    start = PipelineConfig((StageConfig.one("resnet152", 1, 1, 20),))
    config = InfAdapterPolicy(spec, _Fixed(120.0), single=True).decide(_state(spec, start, 120.0))
    assert len(config.stages[0].pools) == 1 and config.stages[0].only.share == 1.0
    policy = InfAdapterPolicy(spec, _Fixed(10_000.0))
    fallback = policy.decide(_state(spec, start, 10_000.0))
    assert fallback.stages[0].variant == "resnet18" and fallback.stages[0].cores == 20
    assert policy.infeasible_decisions == 1


def test_policy_refuses_multi_stage_pipelines_and_derives_capacity_for_unmeasured_variants() -> None:
    from ilp_baseline.infadapter import InfAdapterPolicy, profile_capacity_lines
    from rlscale.spec import load_spec

    with pytest.raises(RlscaleError, match="single-stage"):
        InfAdapterPolicy(load_spec("video"), _Fixed(10.0))
    stage = load_spec("video").stages[1]  # ResNets on IPA's profile, not InfAdapter's measurements
    lines = profile_capacity_lines(stage)
    assert set(lines) == set(stage.variant_names)
    assert all(line.slope > 0 for line in lines.values())
