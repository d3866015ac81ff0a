"""The VPA baseline: VPA's histogram and estimators against hand-computed values, the updater's rules on hand-built
states, and a short episode on the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.vpa import (
    CPU_HALF_LIFE_S,
    CPUUsage,
    DecayingHistogram,
    Recommendation,
    VPAPolicy,
    recommend,
)
from rlscale.errors import RlscaleError
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageConfig, StageMetrics
from rlscale.workload import Trace, load_trace

DAY_S = 24 * 3600.0


def _end_of_bucket(n: int) -> float:
    """Where VPA's CPU bucket ``n`` ends: 0.01 * (1.05^(n+1) - 1) / 0.05 cores."""
    return 0.01 * (1.05 ** (n + 1) - 1) / 0.05


# ------------------------------------------------------------------------------------------ the histogram


def test_buckets_are_vpas_exponential_ones():
    h = DecayingHistogram()
    # ceil(log(1000 * 0.05 / 0.01 + 1) / log(1.05)) + 1 = ceil(174.57) + 1
    assert h.num_buckets == 176
    assert h.find_bucket(0.0) == 0 and h.find_bucket(0.0099) == 0
    assert h.find_bucket(0.01) == 1  # the first bucket is [0, 0.01)
    # 1.0 core: floor(log(1.0 * 0.05 / 0.01 + 1) / log(1.05)) = floor(36.72)
    assert h.find_bucket(1.0) == 36
    assert h.find_bucket(2.0) == 49  # floor(log(11) / log(1.05)) = floor(49.15)
    assert h.find_bucket(1e6) == 175  # beyond the range: the last bucket
    assert h.bucket_start(37) == pytest.approx(_end_of_bucket(36), rel=1e-12)


def test_percentile_is_the_end_of_the_bucket_reaching_the_share():
    h = DecayingHistogram()
    assert h.is_empty() and h.percentile(0.9) == 0.0
    h.add(0.5, 0.1, 0.0)  # bucket 25
    h.add(1.0, 0.1, 0.0)  # bucket 36
    h.add(2.0, 0.2, 0.0)  # bucket 49
    assert h.total_weight == pytest.approx(0.4)
    # p25: 0.1 of 0.4 is reached in bucket 25; p50: 0.2 in bucket 36; p51 needs bucket 49
    assert h.percentile(0.25) == pytest.approx(_end_of_bucket(25), rel=1e-12)
    assert h.percentile(0.50) == pytest.approx(_end_of_bucket(36), rel=1e-12)
    assert h.percentile(0.51) == pytest.approx(_end_of_bucket(49), rel=1e-12)
    assert h.percentile(1.0) == pytest.approx(_end_of_bucket(49), rel=1e-12)
    light = DecayingHistogram()
    light.add(0.5, 1e-5, 0.0)  # lighter than epsilon (1e-4): it counts in the total but its bucket stays "empty"
    assert light.is_empty()
    light.add(1.0, 0.1, 0.0)
    assert light.percentile(0.0) == pytest.approx(_end_of_bucket(36), rel=1e-12)


def test_a_sample_weighs_twice_as_much_as_one_a_half_life_older():
    aged = DecayingHistogram()
    aged.add(1.0, 0.1, 0.0)
    aged.add(4.0, 0.1, CPU_HALF_LIFE_S)  # weight 0.1 * 2^1
    assert aged.total_weight == pytest.approx(0.3)
    assert aged.weights[aged.find_bucket(4.0)] == pytest.approx(0.2)
    # the median: 0.15 of 0.3 is not reached by the old sample's 0.1, so it is the new sample's bucket
    assert aged.percentile(0.5) == pytest.approx(_end_of_bucket(aged.find_bucket(4.0)), rel=1e-12)
    assert aged.percentile(0.3) == pytest.approx(_end_of_bucket(36), rel=1e-12)
    same_time = DecayingHistogram()
    same_time.add(1.0, 0.1, 0.0)
    same_time.add(4.0, 0.1, 0.0)
    assert same_time.percentile(0.5) == pytest.approx(_end_of_bucket(36), rel=1e-12)


def test_far_future_samples_renormalise_and_forget_the_old_ones():
    h = DecayingHistogram()
    h.add(1.0, 0.1, 0.0)
    h.add(4.0, 0.1, 101 * CPU_HALF_LIFE_S)  # past 100 half-lives: the reference moves to 101 half-lives
    assert h.reference_s == 101 * CPU_HALF_LIFE_S
    assert h.weights[36] == pytest.approx(0.1 * 2.0**-101)  # below epsilon: no longer the first bucket
    assert h.min_bucket == h.find_bucket(4.0)
    assert h.percentile(0.0) == pytest.approx(_end_of_bucket(h.find_bucket(4.0)), rel=1e-12)
    assert h.total_weight == pytest.approx(0.1)
    h.add(2.0, 0.1, 1e9)  # a wall-clock timestamp neither overflows nor loses the samples
    assert math.isfinite(h.total_weight) and h.percentile(1.0) > 0


# -------------------------------------------------------------------------------------- the recommender


def test_recommendation_matches_the_hand_computed_estimators():
    usage = CPUUsage()
    assert recommend(usage) is None
    for minute in range(61):  # one sample of 1 core a minute for an hour
        usage.add(1.0, minute * 60.0, 0.1)
    # confidence = min(60 min in days, 61 samples / 1440) = 1/24
    assert usage.confidence() == pytest.approx(1 / 24)
    rec = recommend(usage)
    # every percentile is the end of bucket 36, 1.01628 cores -> 1016 m; plus the 15% margin: 1016 + 152 = 1168 m
    assert rec.target_millicores == 1168
    # lower bound: 1168 * (1 + 0.001 * 24)^-2 = 1113.9 -> 1113 m; upper: 1168 * (1 + 24) = 29200 m
    assert rec.lower_millicores == 1113
    assert rec.upper_millicores == 29200
    wider = recommend(usage, target=0.9, margin=0.5)
    assert wider.target_millicores == 1016 + 508


def test_recommendation_bounds_are_open_with_one_sample_and_at_least_25_millicores():
    usage = CPUUsage()
    usage.add(0.0, 0.0, 0.1)
    rec = recommend(usage)
    # 0 cores is bucket 0, ending at 0.01 core: 10 m + 1 m of margin, raised to the 25 m minimum
    assert rec.target_millicores == 25
    assert rec.lower_millicores == 25  # confidence 0: (1 + 0.001/0)^-2 = 0
    assert rec.upper_millicores == 10**14  # (1 + 1/0) = infinite, capped at VPA's largest amount


def test_recommendation_shrinks_when_idle_samples_outweigh_old_saturation_by_decay():
    def target_after(idle_at_s: float) -> int:
        usage = CPUUsage()
        for i in range(10):
            usage.add(2.0, i * 60.0, 0.1)  # 10 saturated minutes at 2 cores
        for i in range(2):
            usage.add(0.1, idle_at_s + i * 60.0, 0.1)  # 2 idle samples
        return recommend(usage).target_millicores

    saturated = _end_of_bucket(49) * 1000
    # at the same time the idle samples are 2 of 12: p90 stays in the saturated bucket
    assert target_after(600.0) == int(saturated) + int(int(saturated) * 0.15)
    # six days later each idle sample weighs 2^6 = 64 times more: 12.8 of 13.8 > 90%, p90 is idle
    idle = _end_of_bucket(8) * 1000  # 0.1 core is bucket 8: floor(log(1.5) / log(1.05)) = floor(8.31)
    assert target_after(6 * DAY_S) == max(25, int(idle) + int(int(idle) * 0.15))
    assert target_after(6 * DAY_S) < 200


# ------------------------------------------------------------------------------------------ the updater


def _metrics(utilisation: float, serving: int) -> StageMetrics:
    nan = math.nan
    return StageMetrics(
        served=100,
        dropped=0,
        latency_p50_s=nan,
        latency_p99_s=nan,
        queue_len=0,
        utilisation=utilisation,
        replicas_serving=serving,
        mean_batch=nan,
    )


class Driver:
    """Feeds a `VPAPolicy` the states the simulator would: one decision every 10 s from a running pipeline."""

    def __init__(self, spec: PipelineSpec, config: PipelineConfig, step_s: float = 10.0, **kwargs) -> None:
        self.spec = spec
        self.policy = VPAPolicy(spec, **kwargs)
        self.config = config
        self.step_s = step_s
        self.time_s = 0.0
        self.changes: list[tuple[float, tuple[int, ...]]] = []
        self._step(0.0, [0.5] * len(config.stages))  # the first decision on a running pipeline starts the clocks

    @property
    def cores(self) -> tuple[int, ...]:
        return tuple(sc.cores for sc in self.config.stages)

    def _step(self, time_s: float, utilisation: list[float], serving: list[int] | None = None) -> None:
        stages = tuple(
            _metrics(u, sc.replicas if serving is None else serving[s])
            for s, (u, sc) in enumerate(zip(utilisation, self.config.stages, strict=True))
        )
        last = IntervalMetrics(
            start_s=time_s - self.step_s,
            end_s=time_s,
            arrivals=100,
            completed=100,
            dropped=0,
            late=0,
            sla_violation_rate=0.0,
            e2e_p50_s=math.nan,
            e2e_p99_s=math.nan,
            accuracy=math.nan,
            cost_cores=float(self.config.total_cores),
            objective=0.0,
            score=0.0,
            stages=stages,
        )
        state = PipelineState(time_s, self.step_s, arrival_rps=np.full(10, 10.0), config=self.config, last=last)
        before = self.cores
        self.config = self.policy.decide(state)
        if self.cores != before:
            self.changes.append((time_s, self.cores))

    def run(self, seconds: float, utilisation: float | list[float], serving: list[int] | None = None) -> None:
        """Decisions every ``step_s`` for ``seconds`` after intervals at ``utilisation`` (one value, or one per
        stage)."""
        per_stage = utilisation if isinstance(utilisation, list) else [utilisation] * len(self.config.stages)
        for _ in range(round(seconds / self.step_s)):
            self.time_s += self.step_s
            self._step(self.time_s, per_stage, serving)


@pytest.fixture(scope="module")
def video() -> PipelineSpec:
    return load_spec("video")


def _config(spec: PipelineSpec, cores: int = 1, replicas: int = 2) -> PipelineConfig:
    return PipelineConfig(tuple(StageConfig.one(st.variant_names[0], 1, replicas, cores) for st in spec.stages))


def test_saturation_raises_cores_at_once_on_pods_old_enough(video):
    d = Driver(video, _config(video, cores=1))
    d.run(50, 1.0)
    assert d.changes == []  # no sample before the first 60 s tick
    d.run(10, 1.0)
    # t=60: one sample of 1 core, target 1168 m, 16.8% above the request; the pods are 12 h old: new cores, the
    # grid's next count up
    assert d.changes == [(60.0, (2, 2))]
    # one sample: the bounds are [25 m, unbounded], capped to the grid's [1, 8] cores
    assert d.policy.recommendation(0) == Recommendation(1168, 1000, 8000)
    assert recommend(d.policy.usage[0]) == Recommendation(1168, 25, 10**14)


def test_inside_the_bounds_young_pods_keep_their_request_until_it_falls_outside(video):
    d = Driver(video, _config(video, cores=1), initial_pod_age_s=0.0)
    d.run(1130, 1.0)
    # the target (1168 m -> 2 cores) differs by 16.8% all along, but 1 core is inside [lower, upper] and the pods
    # are young: nothing changes
    assert d.changes == []
    assert d.policy.recommendation(0).target_millicores == 1168
    # 18 samples over 17 minutes: 1168 * (1 + 0.001 * 1440/17)^-2 = 992 m, capped to the grid's 1 core
    assert recommend(d.policy.usage[0]).lower_millicores == 992
    assert d.policy.recommendation(0).lower_millicores == 1000
    d.run(10, 1.0)
    # t=1140: 19 samples over 18 minutes, lower bound 1168 * (1 + 0.001 * 1440/18)^-2 = 1001 m > 1000 m: outside
    assert d.policy.recommendation(0).lower_millicores == 1001
    assert d.changes == [(1140.0, (2, 2))]


def test_old_pods_are_left_alone_when_the_target_is_within_10_percent(video):
    # 1.8 of 2 cores busy: p90 ends at 1.880 cores, target 1880 + 282 = 2162 m, 8.1% over the request
    d = Driver(video, _config(video, cores=2))
    d.run(600, 0.9)
    assert d.policy.recommendation(0).target_millicores == 2162
    assert d.changes == []
    # with a 30% margin the target is 1880 + 564 = 2444 m, 22% over: the pods are old enough, so the updater acts
    d = Driver(video, _config(video, cores=2), margin=0.3)
    d.run(60, 0.9)
    assert d.changes == [(60.0, (4, 4))]


def test_idle_old_pods_shrink_to_the_grids_smallest_count(video):
    d = Driver(video, _config(video, cores=8))
    d.run(60, 0.01)
    assert d.changes == [(60.0, (1, 1))]


@pytest.mark.parametrize("bad", [math.nan, -0.5, math.inf, -math.inf])
def test_missing_or_bad_utilisation_is_no_sample_and_no_change(video, bad):
    d = Driver(video, _config(video, cores=1))
    d.run(300, bad)
    assert [u.samples for u in d.policy.usage] == [0, 0]
    assert d.policy.recommendation(0) is None
    assert d.changes == []
    d.run(60, [1.0, bad])  # the first stage reports again; the second still has no data
    assert [u.samples for u in d.policy.usage] == [2, 0]
    assert d.changes == [(360.0, (2, 1))]


def test_a_stage_without_serving_replicas_gives_no_sample(video):
    d = Driver(video, _config(video, cores=1))
    d.run(60, 1.0, serving=[0, 2])
    assert [u.samples for u in d.policy.usage] == [0, 2]
    assert d.policy.usage[0].first_sample_s is None and d.policy.usage[0].histogram.is_empty()
    assert d.changes == [(60.0, (1, 2))]


def test_missing_metrics_hold_a_stage_even_with_a_recommendation(video):
    d = Driver(video, _config(video, cores=1))
    d.run(50, 1.0)
    d.run(10, 1.0, serving=[1, 1])  # t=60: a sample from the serving replica; the others start: no update
    assert d.changes == [] and d.policy.recommendation(0).target_millicores == 1168
    d.run(60, math.nan)
    assert d.changes == []  # t=120: an update is due on the recommendation, but there is no data: hold
    d.run(60, 1.0)
    assert d.changes == [(180.0, (2, 2))]


def test_fewer_replicas_than_min_replicas_are_never_evicted(video):
    d = Driver(video, _config(video, cores=1, replicas=1))
    d.run(600, 1.0)
    assert d.changes == []
    d = Driver(video, _config(video, cores=1, replicas=1), min_replicas=1)
    d.run(60, 1.0)
    assert d.changes == [(60.0, (2, 2))]


def test_no_update_while_replicas_are_starting(video):
    d = Driver(video, _config(video, cores=1))
    d.run(60, 1.0, serving=[1, 2])
    assert d.changes == [(60.0, (1, 2))]


def test_the_updater_runs_only_on_its_minute_ticks(video):
    d = Driver(video, _config(video, cores=1))
    d.run(50, 1.0)
    d.run(10, 1.0, serving=[2, 1])  # t=60: the classifier has a replica starting, the updater skips it
    assert d.changes == [(60.0, (2, 1))]
    d.run(50, 1.0)
    assert d.changes == [(60.0, (2, 1))]  # t=70..110: all serving and an update due, but no updater run
    d.run(10, 1.0)
    assert d.changes == [(60.0, (2, 1)), (120.0, (2, 2))]


def test_scale_up_stops_at_the_core_budget(video):
    import dataclasses

    # both stages (2 replicas x 2 cores) want 4 cores: 16 cores in all
    tight = dataclasses.replace(video, core_budget=10)
    d = Driver(tight, _config(tight, cores=2))
    d.run(60, 1.0)
    assert d.cores == (2, 2)  # 2 x 4 + 2 x 2 = 12 > 10: neither grows
    roomy = dataclasses.replace(video, core_budget=12)
    d = Driver(roomy, _config(roomy, cores=2))
    d.run(60, 1.0)
    assert d.cores == (4, 2)  # the first in the updater's order takes the 12th core; the other stays


def test_variant_batch_and_replicas_are_never_changed(video):
    config = PipelineConfig(
        (StageConfig.one("yolov5m", 4, 3, 8), StageConfig.one("resnet50", 2, 2, 1)),
    )
    d = Driver(video, config)
    d.run(600, [0.01, 1.0])
    assert d.cores == (1, 2)
    for sc, before in zip(d.config.stages, config.stages, strict=True):
        assert (sc.variant, sc.batch, sc.replicas) == (before.variant, before.batch, before.replicas)


def test_weight_by_request_is_vpas_rule_before_1_4(video):
    d = Driver(video, _config(video, cores=4), weight_by_request=True)
    d.run(60, 0.5)
    # 2 replicas, each sample weighs max(4 cores, 0.1) instead of 0.1
    decay = 2.0 ** (60.0 / CPU_HALF_LIFE_S)  # the sample at t=60
    assert d.policy.usage[0].histogram.total_weight == pytest.approx(2 * 4.0 * decay)
    d = Driver(video, _config(video, cores=4))
    d.run(60, 0.5)
    assert d.policy.usage[0].histogram.total_weight == pytest.approx(2 * 0.1 * decay)


@pytest.mark.parametrize(
    "kwargs,flag",
    [({"target": 0.0}, "--vpa-target"), ({"target": 1.5}, "--vpa-target"), ({"margin": -0.1}, "--vpa-margin")]
    + [({"margin": math.nan}, "--vpa-margin"), ({"min_replicas": 0}, "--vpa-min-replicas")],
)
def test_bad_settings_are_refused(video, kwargs, flag):
    with pytest.raises(RlscaleError, match=flag):
        VPAPolicy(video, **kwargs)


# ---------------------------------------------------------------------------------------- on the simulator


def test_warm_start_installs_fa2_high_variants_with_two_replicas_per_stage(video):
    policy = VPAPolicy(video)
    state = PipelineState(0.0, 10.0, arrival_rps=np.full(10, 5.0), config=_config(video), last=None)
    config = policy.decide(state)
    assert list(config.variants) == policy.variants
    assert all(sc.replicas >= 2 for sc in config.stages)


def test_bursty_episode_changes_cores_and_nothing_else(video):
    trace = Trace("bursty-600", load_trace("bursty").rps[:600].copy())
    policy = VPAPolicy(video)
    result = run_episode(video, trace, policy, seed=1)
    first = result.configs[0]
    cores = {tuple(sc.cores for sc in c.stages) for c in result.configs}
    assert len(cores) >= 2, "the VPA never changed cores"
    for config in result.configs:
        for sc, sc0 in zip(config.stages, first.stages, strict=True):
            assert (sc.variant, sc.batch, sc.replicas) == (sc0.variant, sc0.batch, sc0.replicas)
    assert result.record["rollouts"] >= 1
    # during the ramp the detector saturates: its cores grow
    assert result.configs[-1].stages[0].cores > first.stages[0].cores


# ------------------------------------------------------------------------------- InfAdapter's applier


@pytest.fixture(scope="module")
def infadapter() -> PipelineSpec:
    return load_spec("infadapter")


def _one(spec: PipelineSpec, variant: str, cores: int) -> PipelineConfig:
    return PipelineConfig((StageConfig.one(variant, 1, 1, cores),))


def test_infadapter_updater_grows_a_saturated_single_replica_stage_at_once(video):
    d = Driver(video, _config(video, cores=1, replicas=1), updater="infadapter")
    d.run(50, 1.0)
    assert d.changes == []  # no recommendation before the first 60 s tick
    d.run(10, 1.0)
    # t=60: one sample of 1 core, target 1168 m -> 2 cores > 1: applied at this decision, one replica or not (the
    # kubernetes updater never touches a 1-replica stage: test_fewer_replicas_than_min_replicas_are_never_evicted)
    assert d.changes == [(60.0, (2, 2))]
    d.run(60, 1.0)
    # t=120: a sample of 2 cores, the heavier; p90 is the end of bucket 49, 2.093 cores: 2093 + 313 = 2406 m -> 4
    # cores, applied at once again
    assert d.policy.recommendation(0).target_millicores == 2406
    assert d.changes == [(60.0, (2, 2)), (120.0, (4, 4))]


def test_infadapter_updater_acts_at_any_decision_not_on_minute_ticks(video):
    d = Driver(video, _config(video, cores=1), updater="infadapter")
    d.run(50, 1.0)
    d.run(10, 1.0, serving=[1, 2])  # t=60: the detector has a replica starting: held, the classifier grows
    assert d.changes == [(60.0, (1, 2))]
    d.run(10, 1.0)  # t=70: all serving; the kubernetes updater would wait for t=120
    assert d.changes == [(60.0, (1, 2)), (70.0, (2, 2))]


def test_infadapter_updater_applies_a_lower_target_at_the_fifth_decision_in_a_row(infadapter):
    d = Driver(infadapter, _one(infadapter, "resnet152", 20), step_s=30.0, updater="infadapter")
    d.run(60, 0.3)
    # t=60: a sample of 6 cores (bucket 70, ending at 6.189 cores): 6189 + 928 = 7117 m -> 8 cores, below 20: skipped
    # (1)
    assert d.policy.recommendation(0).target_millicores == 7117
    d.run(90, 0.3)  # t=90, 120 (another sample of 6 cores), 150: skipped (2, 3, 4)
    assert d.changes == []
    d.run(30, 0.3)  # t=180: the fifth decision in a row with a target below the cores: applied
    assert d.changes == [(180.0, (8,))]
    d.run(300, 0.75)  # 6 of 8 cores: the target stays 8 cores, equal: nothing to apply, every fifth decision
    assert d.changes == [(180.0, (8,))]


def test_infadapter_updater_restarts_the_count_after_a_rise(infadapter):
    # the median as target so that a few samples move it both ways
    d = Driver(infadapter, _one(infadapter, "resnet50", 10), step_s=30.0, updater="infadapter", target=0.5)
    d.run(60, 0.2)  # t=60: a sample of 2 cores, target 2093 + 313 = 2406 m -> 3 cores: skipped (1)
    d.run(30, 0.2)  # t=90: skipped (2)
    assert d.changes == [] and d.policy.recommendation(0).target_millicores == 2406
    d.run(30, 1.0)  # t=120: a sample of 10 cores, the heavier of two: the median, 10207 + 1531 = 11738 m -> 12 cores
    assert d.policy.recommendation(0).target_millicores == 11738
    assert d.changes == [(120.0, (12,))]
    d.run(60, 0.1)  # t=180: a sample of 1.2 cores; half the weight is reached at the 2-core sample: 3 cores, lower
    assert d.policy.recommendation(0).target_millicores == 2406
    # t=240: another sample of 1.2 cores, the two now more than half: 1388 m, capped to 2 cores. Skipped at t=150
    # (equal), 180, 210, 240 (1-4 after the reset); without the reset the count would have reached 5 at t=210
    d.run(60, 0.1)
    assert d.policy.recommendation(0).target_millicores == 2000
    assert d.changes == [(120.0, (12,))]
    d.run(30, 0.1)  # t=270: the fifth
    assert d.changes == [(120.0, (12,)), (270.0, (2,))]


@pytest.mark.parametrize("bad", [math.nan, -0.5, math.inf])
def test_infadapter_updater_holds_without_data_and_does_not_count_it(infadapter, bad):
    d = Driver(infadapter, _one(infadapter, "resnet152", 20), step_s=30.0, updater="infadapter")
    d.run(300, bad)
    assert d.policy.usage[0].samples == 0 and d.changes == []
    d.run(60, 0.3)  # t=330: no sample yet (ticks at 360); t=360: a sample, target 8 cores: skipped (1)
    assert d.policy.recommendation(0).target_millicores == 7117 and d.changes == []
    d.run(300, bad)  # ten decisions without data: held, and not counted
    assert d.changes == [] and d.policy.usage[0].samples == 1
    d.run(90, 0.3)  # skipped (2, 3, 4)
    assert d.changes == []
    d.run(30, 0.3)
    assert d.changes == [(780.0, (8,))]


def test_pins_set_the_variant_and_the_initial_cores(infadapter, video):
    # a running pipeline: the first decision installs the pins; the cores are the VPA's from then on
    d = Driver(infadapter, _one(infadapter, "resnet18", 4), step_s=30.0, updater="infadapter")
    assert d.config.stages[0].variant == "resnet18"
    d = Driver(
        infadapter,
        _one(infadapter, "resnet18", 4),
        step_s=30.0,
        updater="infadapter",
        variants=["resnet152"],
        cores=[20],
    )
    assert d.config == _one(infadapter, "resnet152", 20)
    d.run(180, 0.3)
    assert d.config == _one(infadapter, "resnet152", 8)  # as in the unpinned case: the cores are the VPA's
    # a warm start installs them
    policy = VPAPolicy(infadapter, updater="infadapter", variants=["resnet50"], cores=[20])
    state = PipelineState(0.0, 30.0, arrival_rps=np.full(30, 40.0), config=_one(infadapter, "resnet18", 2), last=None)
    assert policy.decide(state) == _one(infadapter, "resnet50", 20)
    # one name pins the stages that have it: video's classifier, not its detector
    policy = VPAPolicy(video, variants=["resnet50"])
    config = policy.decide(PipelineState(0.0, 10.0, arrival_rps=np.full(10, 5.0), config=_config(video), last=None))
    assert config.variants[1] == "resnet50" and config.variants[0] == VPAPolicy(video).variants[0] != "resnet50"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"updater": "kubelet"}, "--vpa-updater"),
        ({"variants": ["resnet9000"]}, "--vpa-variant: no stage has a variant 'resnet9000'"),
        ({"variants": ["yolov5n", "yolov5n"]}, "--vpa-variant: stage .* has no variant 'yolov5n'"),
        ({"variants": ["yolov5n", "resnet18", "resnet18"]}, "--vpa-variant: give one name, or one per stage"),
        ({"cores": [3]}, "--vpa-cores: stage .* has no core count 3"),
        ({"cores": [1, 2, 4]}, "--vpa-cores: give one value, or one per stage"),
    ],
)
def test_bad_pins_and_updaters_are_refused(video, kwargs, match):
    with pytest.raises(RlscaleError, match=match):
        VPAPolicy(video, **kwargs)


def test_infadapter_episode_from_resnet152_at_20_cores_changes_cores(infadapter):
    trace = Trace("infadapter-300", load_trace("infadapter").rps[:300].copy())
    pins = {"variants": ["resnet152"], "cores": [20]}
    result = run_episode(infadapter, trace, VPAPolicy(infadapter, updater="infadapter", **pins), seed=1)
    assert result.configs[0] == _one(infadapter, "resnet152", 20)  # InfAdapter's vpa-152 start
    cores = [c.stages[0].cores for c in result.configs]
    assert len(set(cores)) >= 2, "the infadapter updater never changed cores"
    assert all(c.stages[0].variant == "resnet152" and c.stages[0].replicas == 1 for c in result.configs)
    # the kubernetes updater with the same start never acts on the one replica
    result = run_episode(infadapter, trace, VPAPolicy(infadapter, **pins), seed=1)
    assert {c.stages[0].cores for c in result.configs} == {20}
