"""Safety layer invariants, property-tested on hundreds of random states and proposals (DESIGN.md section 6)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ilp_baseline.safety import DistanceWeights, SafetyLayer, config_distance, max_capacity_config
from rlscale.errors import RlscaleError
from rlscale.model import (
    InvalidLoad,
    _pool_violations,
    is_feasible,
    pipeline_capacity_rps,
    replicas_needed,
    two_pool_options,
)
from rlscale.spec import load_spec, parse_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig, VariantPool


def small_spec(tmp_path_factory, sla_s: float, budget: int, max_pools: int = 1):
    """Two stages x two variants x batch {1,2} x cores {1,2} x up to 4 replicas: small enough for brute force
    (``max_pools``: of the second stage)."""
    folder = tmp_path_factory.mktemp("safety")
    rows = ["variant,batch,cores,latency_s"]
    for v, k in (("a", 1.0), ("b", 2.5)):
        for b in (1, 2):
            for c in (1, 2):
                rows.append(f"{v},{b},{c},{k * (0.1 * b / c + 0.02 * b + 0.02)}")
    (folder / "p.csv").write_text("\n".join(rows) + "\n")
    stage = {
        "task": "t",
        "profile": "p.csv",
        "batch_sizes": [1, 2],
        "cores": [1, 2],
        "max_replicas": 4,
        "variants": [{"name": "a", "accuracy": 0.5, "startup_s": 5}, {"name": "b", "accuracy": 0.8, "startup_s": 6}],
    }
    raw = {
        "name": "small",
        "sla_s": sla_s,
        "drop_limit_s": max(sla_s, 1.0) * 2,
        "interval_s": 10,
        "batch_timeout_s": 0.5,
        "core_budget": budget,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "sum"},
        "stages": [{**stage, "name": "s1"}, {**stage, "name": "s2", "max_pools": max_pools}],
    }
    return parse_spec(raw, folder / "small.yaml")


def all_configs(spec):
    per_stage = [
        [
            StageConfig.one(v, b, n, c)
            for v in s.variant_names
            for b in s.batch_sizes
            for c in s.cores
            for n in range(s.min_replicas, s.max_replicas + 1)
        ]
        for s in spec.stages
    ]
    return [PipelineConfig(combo) for combo in itertools.product(*per_stage)]


def state_at(load: float, config: PipelineConfig) -> PipelineState:
    return PipelineState(time_s=10.0, interval_s=10.0, arrival_rps=np.full(10, load), config=config, last=None)


_SPECS: dict = {}


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    """Built once per module; returned through a function so hypothesis does not print the configs."""
    if not _SPECS:
        for sla in (0.3, 0.6, 1.5):
            for budget in (4, 8, 16):
                spec = small_spec(tmp_path_factory, sla, budget)
                _SPECS[(sla, budget)] = (spec, all_configs(spec))
    return _SPECS.get


stage_config = st.builds(
    StageConfig.one,
    st.sampled_from(["a", "b"]),
    st.sampled_from([1, 2]),
    st.integers(1, 4),
    st.sampled_from([1, 2]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sla=st.sampled_from([0.3, 0.6, 1.5]),
    budget=st.sampled_from([4, 8, 16]),
    load=st.floats(0.0, 40.0),
    s1=stage_config,
    s2=stage_config,
)
@pytest.mark.slow
def test_projection_is_feasible_nearest_and_agrees_with_pulp(specs, sla, budget, load, s1, s2):
    spec, configs = specs((sla, budget))
    proposed = PipelineConfig((s1, s2))
    dp = SafetyLayer(spec)
    result, report = dp.project(proposed, state_at(load, proposed))
    feasible = [c for c in configs if is_feasible(spec, c, load)]
    if not feasible:
        assert report.infeasible
        assert result == max_capacity_config(spec, load)
        assert result.total_cores <= spec.core_budget
        # the largest capacity of any configuration within the budget, by brute force
        within = [c for c in configs if c.total_cores <= spec.core_budget]
        assert pipeline_capacity_rps(spec, result) == max(pipeline_capacity_rps(spec, c) for c in within)
        return
    assert not report.infeasible
    assert is_feasible(spec, result, load)
    w = DistanceWeights()
    best = min(config_distance(w, proposed, c) for c in feasible)
    assert report.distance == pytest.approx(best, abs=1e-9)
    if is_feasible(spec, proposed, load):
        assert result == proposed and report.feasible_input and report.distance == 0
    pulp_result, pulp_report = SafetyLayer(spec, solver="pulp").project(proposed, state_at(load, proposed))
    assert pulp_report.infeasible is False
    assert pulp_report.distance == pytest.approx(best, abs=1e-6)
    assert is_feasible(spec, pulp_result, load)


@settings(max_examples=200, deadline=None)
@given(load=st.floats(0.0, 60.0), data=st.data())
@pytest.mark.slow
def test_projection_on_the_video_pipeline(load, data):
    spec = load_spec("video")
    stages = []
    for s in spec.stages:
        stages.append(
            StageConfig.one(
                data.draw(st.sampled_from(s.variant_names)),
                data.draw(st.sampled_from(s.batch_sizes)),
                data.draw(st.integers(1, 12)),
                data.draw(st.sampled_from(s.cores)),
            )
        )
    proposed = PipelineConfig(tuple(stages))
    result, report = SafetyLayer(spec).project(proposed, state_at(load, proposed))
    if report.infeasible:
        assert result.total_cores <= spec.core_budget
    else:
        assert is_feasible(spec, result, load)
        again, report2 = SafetyLayer(spec).project(result, state_at(load, result))
        assert again == result and report2.distance == 0  # projecting twice changes nothing


def test_load_floor_is_the_last_interval_peak():
    spec = load_spec("video")
    hist = np.concatenate([np.full(50, 30.0), np.full(9, 4.0), [7.0]])
    layer = SafetyLayer(spec, load="observed")
    state = PipelineState(60.0, 10.0, hist, PipelineConfig(()), None)
    assert layer.load_rps(state) == 7.0  # what was observed in the last interval, not earlier
    assert SafetyLayer(spec, load="drain").load_rps(state) == pytest.approx((9 * 4.0 + 7.0) / 10)


def test_bad_arguments():
    spec = load_spec("video")
    with pytest.raises(RlscaleError, match="unknown safety solver"):
        SafetyLayer(spec, solver="magic")
    with pytest.raises(RlscaleError, match="needs a predictor"):
        SafetyLayer(spec, load="predicted")


def test_backlog_floor_adds_the_longest_queue_per_interval():
    from rlscale.types import IntervalMetrics, StageMetrics

    spec = load_spec("video")
    stage = lambda q: StageMetrics(10, 0, 0.1, 0.2, q, 0.9, 1, 1.0)  # noqa: E731
    last = IntervalMetrics(0, 10, 100, 90, 0, 0, 0.0, 1, 2, 0.3, 3, -3, -3, (stage(50), stage(120)))
    hist = np.array([10.0, 30.0] * 5)  # mean 20, peak 30
    state = PipelineState(10.0, 10.0, np.concatenate([np.full(20, 99.0), hist]), PipelineConfig(()), last)
    assert SafetyLayer(spec, load="backlog").load_rps(state) == pytest.approx(30.0 + 120 / 10)
    assert SafetyLayer(spec, load="observed").load_rps(state) == 30.0
    assert SafetyLayer(spec, load="drain").load_rps(state) == pytest.approx(20.0 + 120 / 10)  # the last 10 s only
    assert SafetyLayer(spec).load_mode == "backlog"  # the default floor (issue 15)


class _Predicts:
    """A predictor that returns a fixed value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, state: PipelineState) -> float:
        return self.value


def _last_interval(queue_len: int):
    from rlscale.types import IntervalMetrics, StageMetrics

    stage = StageMetrics(10, 0, 0.1, 0.2, queue_len, 0.9, 1, 1.0)
    return IntervalMetrics(0, 10, 100, 90, 0, 0, 0.0, 1, 2, 0.3, 3, -3, -3, (stage, stage))


@pytest.mark.parametrize(
    ("mode", "history", "predicted", "interval_s"),
    [
        ("observed", [5.0] * 9 + [float("nan")], None, 10.0),  # a NaN sample in the last interval
        ("observed", [5.0] * 9 + [float("inf")], None, 10.0),
        ("observed", [5.0] * 5 + [-1.0] * 10, None, 10.0),  # negative counts: broken metrics
        ("backlog", [5.0] * 10, None, 0.0),  # a queue over a zero-length interval: +inf
        ("drain", [5.0] * 10, None, 0.0),
        ("drain", [5.0] * 9 + [float("nan")], None, 10.0),
        ("predicted", [5.0] * 10, float("nan"), 10.0),  # max(0, nan) used to read as 0 rps
        ("predicted", [5.0] * 10, -2.0, 10.0),
        ("predicted", [5.0] * 10, float("inf"), 10.0),
    ],
)
def test_a_load_that_is_not_a_finite_number_at_least_zero_never_passes_a_proposal(mode, history, predicted, interval_s):
    """No data is not a load: the layer raises `InvalidLoad` (a ValueError) and returns nothing, so the caller
    holds its current configuration (the sidecar does) rather than applying an unchecked proposal."""
    spec = load_spec("video")
    tiny = PipelineConfig(tuple(StageConfig.one(s.variant_names[0], 1, 1, 1) for s in spec.stages))
    assert is_feasible(spec, tiny, 0.0)  # what a NaN load used to approve: the smallest configuration
    layer = SafetyLayer(spec, load=mode, predictor=_Predicts(predicted) if mode == "predicted" else None)
    hist = np.asarray(history, dtype=float)
    last = _last_interval(40) if mode in ("backlog", "drain") else None
    state = PipelineState(10.0, interval_s, hist, tiny, last)
    with pytest.raises(InvalidLoad, match="not a finite number >= 0"):
        layer.project(tiny, state)


@pytest.mark.parametrize("load", [float("nan"), float("inf"), -1.0])
def test_nearest_rejects_a_load_that_is_not_a_finite_number_at_least_zero(load):
    spec = load_spec("video")
    tiny = PipelineConfig(tuple(StageConfig.one(s.variant_names[0], 1, 1, 1) for s in spec.stages))
    for solver in ("dp", "pulp"):
        with pytest.raises(InvalidLoad):
            SafetyLayer(spec, solver=solver).nearest(tiny, load)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sla=st.sampled_from([0.3, 0.6, 1.5]),
    budget=st.sampled_from([4, 8]),
    load=st.floats(0.0, 40.0),
    s1=stage_config,
    s2=stage_config,
)
@pytest.mark.slow
def test_budget_binding_projection_is_the_exact_tie_broken_optimum(specs, sla, budget, load, s1, s2):
    """Where the core budget binds, the DP tracking cores answers (not the integer program): the nearest feasible
    configuration, and among the nearest the fewest cores (the integer program's 1e-6 x cores tie-break), by brute
    force."""
    spec, configs = specs((sla, budget))
    proposed = PipelineConfig((s1, s2))
    layer = SafetyLayer(spec)
    feasible = [c for c in configs if is_feasible(spec, c, load)]
    result = layer._nearest_budget_dp(proposed, load)
    if not feasible:
        assert result is None
        return
    w = DistanceWeights()
    best = min(config_distance(w, proposed, c) + 1e-6 * c.total_cores for c in feasible)
    assert is_feasible(spec, result, load)
    assert config_distance(w, proposed, result) + 1e-6 * result.total_cores == pytest.approx(best, abs=1e-9)


def test_budget_binding_projection_on_the_video_pipeline_needs_no_integer_program(monkeypatch):
    """Proposals whose nearest configuration breaks the budget at a high load: the DP agrees with the integer
    program on the distance, never does worse on the tie-break, and runs without it."""
    spec = load_spec("video")
    rng = np.random.default_rng(0)
    pulp_layer = SafetyLayer(spec, solver="pulp")
    cases = []
    while len(cases) < 6:
        stages = tuple(
            StageConfig.one(
                s.variant_names[int(rng.integers(len(s.variant_names)))],
                int(rng.choice(s.batch_sizes)),
                int(rng.integers(1, 10)),
                int(rng.choice(s.cores)),
            )
            for s in spec.stages
        )
        proposed, load = PipelineConfig(stages), float(rng.integers(15, 40))
        relaxed = SafetyLayer(spec)
        chosen = [relaxed._candidates(s, p, load) for s, p in enumerate(proposed.stages)]
        if any(arr.lat.size == 0 for _c, arr in chosen):
            continue
        if is_feasible(spec, proposed, load):
            continue
        over = sum(p.cores * p.replicas for p in proposed.stages) > spec.core_budget
        if over or rng.random() < 0.3:
            cases.append((proposed, load, pulp_layer.nearest(proposed, load)))
    monkeypatch.setattr(SafetyLayer, "_nearest_pulp", lambda *a: pytest.fail("the integer program was called"))
    w = DistanceWeights()
    for proposed, load, by_pulp in cases:
        result = SafetyLayer(spec).nearest(proposed, load)
        if by_pulp is None:
            assert result is None
            continue
        assert is_feasible(spec, result, load)
        assert config_distance(w, proposed, result) == pytest.approx(config_distance(w, proposed, by_pulp), abs=1e-6)
        assert result.total_cores <= by_pulp.total_cores


# -- variant pools -----------------------------------------------------------------------------------------------


def test_stage_distance_with_pools():
    w = DistanceWeights()
    a = StageConfig.one("a", 1, 2, 1)
    # single to single: today's formula
    assert config_distance(w, PipelineConfig((a,)), PipelineConfig((StageConfig.one("b", 2, 3, 2),))) == 4 + 1 + 1 + 0.5
    mix = StageConfig((VariantPool("a", 2, 2, 1, 0.25), VariantPool("b", 1, 3, 1, 0.75)))
    # a on both sides: batch 1 -> 2 and share 1 -> 0.25; b on one side: w_variant + 3 replicas
    assert config_distance(w, PipelineConfig((a,)), PipelineConfig((mix,))) == pytest.approx(1 + 0.75 + 4 + 1.5)
    assert config_distance(w, PipelineConfig((mix,)), PipelineConfig((a,))) == config_distance(
        w, PipelineConfig((a,)), PipelineConfig((mix,))
    )
    assert config_distance(w, PipelineConfig((mix,)), PipelineConfig((mix,))) == 0
    # the share weight counts per share moved
    moved = StageConfig((VariantPool("a", 2, 2, 1, 0.5), VariantPool("b", 1, 3, 1, 0.5)))
    w2 = DistanceWeights(share=3.0)
    assert config_distance(w2, PipelineConfig((mix,)), PipelineConfig((moved,))) == pytest.approx(3.0 * 0.5)


def _stage_universe(spec, s: int, proposed: StageConfig, load: float) -> list[StageConfig]:
    """The projection's candidate set of a stage, written out: every single pool at every replica count, the
    two-pool options at the load, and a pooled proposal's own pools at the fewest and the nearest replicas."""
    stage = spec.stages[s]
    out = [
        StageConfig.one(v, b, n, c)
        for v in stage.variant_names
        for b in stage.batch_sizes
        for c in stage.cores
        for n in range(stage.min_replicas, stage.max_replicas + 1)
    ]
    mixes = two_pool_options(stage, load, spec.objective.rho_max, spec.sla_s)
    out += [mixes.config(stage, k) for k in range(mixes.size)]
    if 1 < len(proposed.pools) <= stage.max_pools:
        fewest = [
            p.with_(
                replicas=replicas_needed(stage, p.variant, p.batch, p.cores, p.share * load, spec.objective.rho_max)
            )
            for p in proposed.pools
        ]
        near = [
            p.with_(replicas=min(stage.max_replicas, max(f.replicas, p.replicas)))
            for p, f in zip(proposed.pools, fewest, strict=True)
        ]
        out += [StageConfig.of_pools(fewest), StageConfig.of_pools(near)]
    return out


def _nearest_by_brute_force(spec, proposed: PipelineConfig, load: float, w: DistanceWeights):
    """The least distance (and, among those, distance + 1e-6 x cores) over feasible combinations of the stages'
    candidate sets, vectorised over the cross product; None when none is feasible."""
    per = []
    for s, (stage, p) in enumerate(zip(spec.stages, proposed.stages, strict=True)):
        lat, cores, dist = [], [], []
        for c in _stage_universe(spec, s, p, load):
            problems: list[str] = []
            latency = _pool_violations(spec, stage, c, load, problems)
            if problems or latency > spec.sla_s + 1e-9:
                continue
            lat.append(latency)
            cores.append(c.total_cores)
            dist.append(config_distance(w, PipelineConfig((p,)), PipelineConfig((c,))))
        if not lat:
            return None
        per.append((np.array(lat), np.array(cores, dtype=float), np.array(dist)))
    picks = [g.ravel() for g in np.meshgrid(*[np.arange(a[0].size) for a in per], indexing="ij")]
    lat, cores, dist = (sum(a[k][pick] for a, pick in zip(per, picks, strict=True)) for k in range(3))
    ok = (lat <= spec.sla_s + 1e-9) & (cores <= spec.core_budget)
    if not ok.any():
        return None
    return float(dist[ok].min()), float((dist + 1e-6 * cores)[ok].min())


_POOLED: dict = {}


@pytest.fixture(scope="module")
def pooled_specs(tmp_path_factory):
    if not _POOLED:
        for sla in (0.3, 0.6, 1.5):
            for budget in (4, 8, 16):
                _POOLED[(sla, budget)] = small_spec(tmp_path_factory, sla, budget, max_pools=2)
    return _POOLED.get


@st.composite
def pooled_stage_config(draw):
    """A single pool, or a two-pool mix of a and b with a random share."""
    first = draw(stage_config)
    if draw(st.booleans()):
        return first
    other = "b" if first.variant == "a" else "a"
    share = draw(st.sampled_from([0.1, 0.25, 0.5, 0.7, 0.9]))
    second = VariantPool(
        other, draw(st.sampled_from([1, 2])), draw(st.integers(1, 4)), draw(st.sampled_from([1, 2])), 1.0 - share
    )
    return StageConfig.of_pools([first.only.with_(share=share), second])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sla=st.sampled_from([0.3, 0.6, 1.5]),
    budget=st.sampled_from([4, 8, 16]),
    load=st.floats(0.0, 40.0),
    s1=stage_config,
    s2=pooled_stage_config(),
)
@pytest.mark.slow
def test_pooled_projection_is_feasible_nearest_and_agrees_with_pulp(pooled_specs, sla, budget, load, s1, s2):
    """The second stage may run two pools, and the proposal may mix (even where the stage may not: the first stage
    gets single pools, so a mix there is tested below). The result is in F, a feasible proposal comes back
    unchanged, the distance is the least over the candidate set (by brute force), and the PuLP projection and the
    budget-tracking DP agree."""
    spec = pooled_specs((sla, budget))
    proposed = PipelineConfig((s1, s2))
    result, report = SafetyLayer(spec).project(proposed, state_at(load, proposed))
    w = DistanceWeights()
    best = _nearest_by_brute_force(spec, proposed, load, w)
    if is_feasible(spec, proposed, load):
        assert result == proposed and report.feasible_input and report.distance == 0
        return
    if best is None:
        assert report.infeasible and result.total_cores <= spec.core_budget
        return
    assert not report.infeasible
    assert is_feasible(spec, result, load)
    assert report.distance == pytest.approx(best[0], abs=1e-9)
    source = "from a mix" if len(s2.pools) > 1 else "from one pool"
    event(f"projected {source} to {'a mix' if result.most_pools > 1 else 'one pool'}")
    budget_dp = SafetyLayer(spec)._nearest_budget_dp(proposed, load)
    assert config_distance(w, proposed, budget_dp) + 1e-6 * budget_dp.total_cores == pytest.approx(best[1], abs=1e-9)
    by_pulp = SafetyLayer(spec, solver="pulp").nearest(proposed, load)
    assert is_feasible(spec, by_pulp, load)
    assert config_distance(w, proposed, by_pulp) == pytest.approx(best[0], abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(load=st.floats(0.5, 40.0), s1=pooled_stage_config(), s2=pooled_stage_config())
def test_a_mix_where_the_stage_runs_one_pool_is_projected_to_one(pooled_specs, load, s1, s2):
    spec = pooled_specs((1.5, 16))
    proposed = PipelineConfig((s1, s2))
    result, report = SafetyLayer(spec).project(proposed, state_at(load, proposed))
    assert len(result.stages[0].pools) == 1  # the first stage's max_pools is 1
    if not report.infeasible:
        assert is_feasible(spec, result, load)
        best = _nearest_by_brute_force(spec, proposed, load, DistanceWeights())
        assert best is not None and report.distance == pytest.approx(best[0], abs=1e-9)
