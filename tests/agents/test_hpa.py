"""The HPA baseline: Kubernetes' replica rules on hand-built states, and one bursty episode on the simulator."""

from __future__ import annotations

import copy
import math

import numpy as np
import yaml

from agents.hpa import SCALE_DOWN_WINDOW_S, TARGET_UTILISATION, HPAPolicy
from rlscale.model import plan_fixed_variants
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec, parse_spec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageMetrics
from rlscale.workload import load_trace


def _cheapest(spec: PipelineSpec) -> list[str]:
    return [min(st.variants, key=lambda v: v.accuracy).name for st in spec.stages]


def _crop_only(min_replicas: int = 1, max_replicas: int = 30) -> PipelineSpec:
    """The video pipeline's first stage alone, so one stage's replicas tell the whole story."""
    video = load_spec("video")
    raw = copy.deepcopy(yaml.safe_load(video.source.read_text()))
    raw["name"] = "crop-only"
    raw["stages"] = raw["stages"][:1]
    raw["stages"][0]["min_replicas"] = min_replicas
    raw["stages"][0]["max_replicas"] = max_replicas
    return parse_spec(raw, video.source)


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
    """Feeds an `HPAPolicy` the states the simulator would: a warm first decision at t=0, then one per call."""

    def __init__(self, spec: PipelineSpec, initial_rps: float, target: float = TARGET_UTILISATION) -> None:
        self.spec = spec
        self.policy = HPAPolicy(spec, _cheapest(spec), target=target)
        boot = plan_fixed_variants(spec, _cheapest(spec), initial_rps)
        first = PipelineState(0.0, 10.0, arrival_rps=np.full(10, initial_rps), config=boot, last=None)
        self.config = self.policy.decide(first)
        self.initial = self.config

    @property
    def replicas(self) -> int:
        """Replicas of the first stage."""
        return self.config.stages[0].replicas

    def step(self, time_s: float, utilisation: float, serving: int | None = None, observed: int | None = None) -> int:
        """One decision at ``time_s`` after an interval at ``utilisation`` (every stage); returns stage 0's replicas.

        ``observed``: replicas the cluster reports for every stage, as after a manual ``kubectl scale`` (default:
        the last decision's).
        """
        if observed is not None:
            self.config = PipelineConfig(tuple(sc.with_(replicas=observed) for sc in self.config.stages))
        stages = tuple(_metrics(utilisation, sc.replicas if serving is None else serving) for sc in self.config.stages)
        last = IntervalMetrics(
            start_s=time_s - 10.0,
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
        state = PipelineState(time_s, 10.0, arrival_rps=np.full(10, 5.0), config=self.config, last=last)
        self.config = self.policy.decide(state)
        return self.replicas


def _four_replicas() -> Driver:
    driver = Driver(_crop_only(), initial_rps=100.0)
    assert driver.replicas == 4  # precondition: yolov5n needs 4 replicas at 100 rps
    return driver


def test_scale_up_is_ceil_of_current_times_utilisation_over_target():
    driver = _four_replicas()
    assert driver.step(20.0, 1.0) == 5  # ceil(4 * 1.0 / 0.8)
    assert driver.step(30.0, 0.95) == 6  # ceil(5 * 1.1875)
    assert driver.step(50.0, 1.0) == 8  # ceil(6 * 1.25)
    assert driver.step(60.0, 0.85) == 8  # |0.85 / 0.8 - 1| < 0.1: within the tolerance


def test_tolerance_band_does_nothing():
    driver = _four_replicas()
    assert driver.step(20.0, 0.87) == 4  # ratio 1.0875 would give ceil(4.35) = 5 without the band
    assert driver.step(30.0, 0.89) == 5  # ratio 1.1125: outside the band
    big = Driver(_crop_only(), initial_rps=320.0)
    assert big.replicas == 12  # precondition
    # ratio 0.9125 would give ceil(10.95) = 11 once the stabilisation window has passed
    assert {big.step(float(t), 0.73) for t in range(20, 1000, 10)} == {12}
    # ratio 0.875 is outside the band: ceil(10.5) = 11 once the window has passed
    assert big.step(1400.0, 0.70) == 11


def test_scale_up_is_capped_at_max_of_plus_4_and_double():
    driver = Driver(_crop_only(), initial_rps=5.0, target=0.1)
    assert driver.replicas == 1
    assert driver.step(20.0, 1.0) == 5  # wants ceil(1 * 10) = 10; cap max(1 + 4, 2) = 5
    assert driver.step(30.0, 1.0) == 10  # wants 50; cap max(9, 10) = 10
    assert driver.step(50.0, 1.0) == 20  # wants 100; cap max(14, 20) = 20
    assert driver.step(60.0, 1.0) == 30  # wants 200, cap 40: max_replicas 30
    assert driver.step(80.0, 1.0) == 30


def test_acts_only_once_per_15_s_sync_period():
    driver = _four_replicas()
    assert driver.step(10.0, 1.0) == 4  # same sync period as the warm decision at t=0
    assert driver.step(20.0, 1.0) == 5
    assert driver.step(25.0, 1.0) == 5  # still period [15, 30)
    assert driver.step(29.9, 1.0) == 5
    assert driver.step(30.0, 1.0) == 7  # ceil(5 * 1.25)
    assert driver.step(40.0, 1.0) == 7  # period [30, 45) again


def test_scale_down_waits_for_the_window_and_takes_its_highest_recommendation():
    driver = _four_replicas()
    replicas = {}
    for t in range(20, 600, 10):
        utilisation = 0.8 if t <= 100 else 0.6 if t == 110 else 0.2
        replicas[t] = driver.step(float(t), utilisation)
    # the last in-band recommendation (4) is made at t=90 (t=100 falls in the same sync period as t=90); at 110
    # the recommendation is 3 (ceil(4 * 0.75)); from 120 on it is 1 (ceil(4 * 0.25))
    last_four = 90
    assert all(replicas[t] == 4 for t in replicas if t <= last_four + SCALE_DOWN_WINDOW_S)
    assert replicas[410] == 3  # first sync after the 4 left the window: max(3, 1, ...) = 3
    assert replicas[420] == 1  # the 3 (made at t=110) has left the window too
    assert all(r == 1 for t, r in replicas.items() if t >= 420)


def test_no_scale_down_while_replicas_are_starting():
    driver = _four_replicas()
    assert {driver.step(float(t), 0.2, serving=2) for t in range(20, 710, 10)} == {4}
    assert driver.step(710.0, 0.2, serving=4) == 1  # every recommendation of the window is 1
    # starting replicas do not block a scale-up
    assert driver.step(730.0, 1.0, serving=0) == 2


def test_respects_min_and_max_replicas():
    driver = Driver(_crop_only(min_replicas=2, max_replicas=6), initial_rps=5.0, target=0.1)
    assert driver.replicas == 2
    assert driver.step(20.0, 1.0) == 6  # wants 20, capped to 6 by the scale-up limit and max_replicas
    assert driver.step(30.0, 1.0) == 6
    seen = [driver.step(float(t), 0.0) for t in range(40, 800, 10)]
    assert min(seen) == 2  # utilisation 0 recommends 0 replicas
    assert seen[-1] == 2


def test_variants_batch_and_cores_never_change():
    spec = load_spec("video")
    driver = Driver(spec, initial_rps=30.0)
    rng = np.random.default_rng(0)
    seen = set()
    for t in range(20, 2000, 10):
        seen.add(driver.step(float(t), float(rng.choice([0.0, 0.3, 0.8, 1.0]))))
        assert driver.config.variants == driver.initial.variants == tuple(_cheapest(spec))
        for st, sc, sc0 in zip(spec.stages, driver.config.stages, driver.initial.stages, strict=True):
            assert (sc.batch, sc.cores) == (sc0.batch, sc0.cores)
            assert st.min_replicas <= sc.replicas <= st.max_replicas
    assert len(seen) > 1  # the replicas did move


def test_each_sync_starts_from_the_replicas_the_cluster_reports():
    """A manual `kubectl scale` is seen: the Kubernetes HPA re-reads current replicas every sync, never its own."""
    driver = _four_replicas()
    assert driver.step(10.0, 1.0, observed=8) == 8  # between syncs: the observed replicas are left alone
    assert driver.step(20.0, 1.0, observed=8) == 10  # ceil(8 * 1.0 / 0.8), not ceil(4 * 1.25) = 5
    assert driver.step(30.0, 0.8, observed=2) == 2  # in the band: keeps the 2 it reads, not the 10 it chose
    assert driver.step(50.0, 1.0) == 3  # ceil(2 * 1.25): from the 2 the cluster still reports
    for sc, sc0 in zip(driver.config.stages, driver.initial.stages, strict=True):
        assert (sc.variant, sc.batch, sc.cores) == (sc0.variant, sc0.batch, sc0.cores)


def test_only_what_is_pinned_is_set_the_rest_is_the_clusters():
    """The HPA never edits the Deployment template: an external change of batch or cores is kept (it scales what runs);
    the variants the policy was pinned to (``--hpa-variant``) are set back."""
    driver = _four_replicas()  # variants pinned (the cheapest), batch and cores not
    other = driver.spec.stages[0].variant_names[-1]
    assert other != driver.initial.stages[0].variant  # precondition
    changed = driver.config.stages[0].with_(variant=other, batch=driver.config.stages[0].batch * 2, cores=8)
    assert changed.batch in driver.spec.stages[0].batch_sizes and changed.cores != driver.initial.stages[0].cores
    driver.config = PipelineConfig((changed,))
    assert driver.step(20.0, 1.0) == 5
    assert driver.config.stages[0] == changed.with_(variant=driver.initial.stages[0].variant, replicas=5)


def test_pinned_batch_and_cores_are_set_and_planned_around():
    spec = _crop_only()
    st = spec.stages[0]
    free = HPAPolicy(spec).template(40.0).stages[0]
    batch = next(b for b in st.batch_sizes if b != free.batch)
    cores = next(c for c in st.cores if c != free.cores)
    policy = HPAPolicy(spec, batch=[batch], cores=[cores])
    warm = policy.decide(PipelineState(0.0, 10.0, np.full(10, 40.0), PipelineConfig((free,)), None))
    (sc,) = warm.stages
    assert (sc.variant, sc.batch, sc.cores) == (free.variant, batch, cores)  # FA2-high variant, the pins
    assert sc.replicas * st.latency.throughput_rps(sc.variant, batch, cores) * spec.objective.rho_max >= 40.0
    running = PipelineConfig((free.with_(replicas=3),))  # a running pipeline: the pins are set, replicas kept
    live = HPAPolicy(spec, batch=[batch], cores=[cores])
    nan = math.nan
    last = IntervalMetrics(0.0, 10.0, 100, 100, 0, 0, 0.0, nan, nan, nan, 3.0, 0.0, 0.0, (_metrics(0.8, 3),))
    (sc,) = live.decide(PipelineState(10.0, 10.0, np.full(10, 10.0), running, last)).stages
    assert sc == free.with_(batch=batch, cores=cores, replicas=3)


def test_pins_the_stage_does_not_offer_are_refused():
    import pytest

    from rlscale.errors import RlscaleError

    spec = load_spec("video")
    with pytest.raises(RlscaleError, match="--hpa-variant: stage .* has no variant 'nope'"):
        HPAPolicy(spec, ["nope"] * len(spec.stages))
    with pytest.raises(RlscaleError, match="--hpa-batch: stage .* has no batch size 3"):
        HPAPolicy(spec, batch=[3])
    with pytest.raises(RlscaleError, match="--hpa-cores"):
        HPAPolicy(spec, cores=[1, 2, 3, 4, 5, 6, 7])
    with pytest.raises(RlscaleError, match="--hpa-target"):
        HPAPolicy(spec, target=1.5)


def test_first_300_s_do_not_scale_down_below_the_initial_replicas():
    driver = _four_replicas()
    assert driver.step(20.0, 0.2) == 4


def test_bursty_episode_scales_up_during_the_burst_and_back_down_after():
    spec = load_spec("video")
    trace = load_trace("bursty")
    result = run_episode(spec, trace, HPAPolicy(spec, _cheapest(spec)))
    replicas = np.array([sum(sc.replicas for sc in c.stages) for c in result.configs])
    interval_peak = trace.rps[: 10 * (trace.duration_s // 10)].reshape(-1, 10).max(axis=1)
    burst = np.flatnonzero(interval_peak >= 2.5 * np.median(interval_peak))
    assert burst.size > 10  # precondition: the trace has a burst
    start, end = int(burst[0]), int(burst[-1])
    assert np.all(replicas[:start] == replicas[0])  # nothing to do before the burst
    assert replicas[start : end + 1].max() >= 2 * replicas[0]
    assert replicas[-1] < replicas[start : end + 1].max()  # and scales back down after it
    assert all(c.variants == tuple(_cheapest(spec)) for c in result.configs)


def test_missing_or_bad_utilisation_holds_the_replicas():
    """No utilisation (the busy metric missing, NaN, infinite or negative) is no data: the stage keeps its replicas
    instead of reading 0% and scaling down under load (the Kubernetes HPA skips a stage without metrics too)."""
    driver = _four_replicas()
    for t, bad in enumerate((math.nan, math.inf, -0.5), start=1):
        assert driver.step(400.0 + 15.0 * t, bad) == 4  # past the stabilisation window: 0% would scale down
    assert driver.step(500.0, 1.0) == 5  # and a real reading acts again


def test_the_cluster_reports_a_missing_busy_metric_as_no_utilisation():
    from rlscale.kube.cluster import _utilisation

    assert math.isnan(_utilisation(math.nan, 3))
    assert _utilisation(1.5, 3) == 0.5
    assert _utilisation(9.0, 3) == 1.0
    assert _utilisation(1.0, 0) == 0.0
