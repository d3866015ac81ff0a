"""The sidecar loop's own logic (backoff, fault logging, metrics, policy failures) on the simulator as the
cluster; the loop against real Prometheus and the API emulator is in tests/integration/."""

from __future__ import annotations

import logging
import random
import threading
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from rlscale.kube.actuator import ApplyOutcome, KubeApiError, StageOutcome
from rlscale.kube.prometheus import MetricsUnavailable
from rlscale.kube.sidecar import MAX_RETRY_AFTER_S, Sidecar, SidecarSettings, StepReport
from rlscale.model import plan_fixed_variants
from rlscale.sim.cluster import Simulator
from rlscale.spec import load_spec
from rlscale.workload import Trace


class SimCluster:
    """The simulator behind the sidecar's cluster interface, with scripted faults per step."""

    def __init__(self, spec, faults=(), stop_after=None, stop=None):
        import numpy as np

        self.spec = spec
        initial = plan_fixed_variants(spec, [st.variants[0].name for st in spec.stages], 5.0)
        self.sim = Simulator(spec, Trace("t", np.full(600, 20.0)), initial, seed=0)
        self.faults = list(faults)
        self.observed = 0
        self.stop_after, self.stop = stop_after, stop

    def observe(self):
        self.observed += 1
        if self.stop_after is not None and self.observed >= self.stop_after:
            self.stop.set()
        fault = self.faults.pop(0) if self.faults else None
        if fault == "metrics":
            raise MetricsUnavailable("Prometheus at http://x did not answer arrival_rate: ConnectionError")
        if fault == "bad-query":
            raise MetricsUnavailable("Prometheus at http://x refused queue_length: HTTP 400: parse error", True)
        self.sim.step()
        self.pending_fault = fault
        return self.sim.observe()

    def apply(self, config):
        if self.pending_fault == "throttled":  # as the actuator reports a 429: the stages after it are not tried
            first, *rest = self.spec.stages
            throttled = StageOutcome(first.name, "failed", "throttled", "HTTP 429", retry_after_s=30.0)
            return ApplyOutcome((throttled, *(StageOutcome(st.name, "skipped") for st in rest)))
        if self.pending_fault in ("forbidden", "server"):
            return ApplyOutcome(
                tuple(StageOutcome(st.name, "failed", self.pending_fault, "HTTP") for st in self.spec.stages)
            )
        old = self.sim.config
        self.sim.apply(config)
        return ApplyOutcome(
            tuple(
                StageOutcome(st.name, "rolled" if a != b else "unchanged")
                for st, a, b in zip(self.spec.stages, old.stages, config.stages, strict=True)
            )
        )


class FixedPolicy:
    name = "fixed"

    def __init__(self, config, fail=False):
        self.config, self.fail = config, fail

    def decide(self, state):
        if self.fail:
            raise ValueError("boom")
        return self.config


@pytest.fixture
def video():
    return load_spec("video")


@pytest.fixture
def big(video):
    return plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 25.0)


def _idle(spec, settings, rng=None):
    """A sidecar whose cluster is never called (for `Sidecar.delay_after`)."""
    return Sidecar(SimpleNamespace(spec=spec), FixedPolicy(None), None, settings, rng=rng)


HELD = StepReport("held", "", temporary=True)


def test_backoff_doubles_to_its_cap_and_resets_after_success(video):
    sidecar = _idle(video, SidecarSettings(interval_s=10, max_backoff_s=35, jitter=0.0))
    delays = [sidecar.delay_after(HELD) for _ in range(4)]
    assert delays == [10, 20, 35, 35]
    assert sidecar.delay_after(StepReport("applied", "")) == 10
    assert sidecar.delay_after(HELD) == 10


@pytest.mark.parametrize(("jitter", "low"), [(0.5, 0.5), (1.0, 0.0), (0.2, 0.8)])
def test_backoff_is_jittered_within_its_bounds_and_sidecars_do_not_retry_in_lockstep(video, jitter, low):
    """Each wait is drawn between ``(1 - jitter)`` and 1 times the doubling backoff: never above the cap, and
    twenty sidecars failing together draw twenty different schedules (the same seed, the same schedule)."""
    settings = SidecarSettings(interval_s=10.0, max_backoff_s=35.0, jitter=jitter)
    ceilings = [10.0, 20.0, 35.0, 35.0, 35.0, 35.0]
    schedules = []
    for seed in range(20):
        sidecar = _idle(video, settings, random.Random(seed))
        delays = [sidecar.delay_after(HELD) for _ in ceilings]
        assert all(low * c <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
        schedules.append(tuple(delays))
    assert len(set(schedules)) == 20
    again = _idle(video, settings, random.Random(0))
    assert tuple(again.delay_after(HELD) for _ in ceilings) == schedules[0]


def test_the_default_backoff_is_jittered(video):
    settings = SidecarSettings(interval_s=10.0, max_backoff_s=35.0)
    first = {_idle(video, settings, random.Random(seed)).delay_after(HELD) for seed in range(10)}
    assert len(first) == 10 and all(5.0 <= d <= 10.0 for d in first)


def test_a_long_outage_never_overflows_the_backoff(video):
    sidecar = _idle(video, SidecarSettings(interval_s=10.0, max_backoff_s=60.0), random.Random(0))
    delays = [sidecar.delay_after(HELD) for _ in range(1100)]  # 10 x 2 ** 1099 is no float
    assert all(30.0 <= d <= 60.0 for d in delays[3:])


def test_jitter_must_be_a_fraction():
    with pytest.raises(ValueError, match="jitter"):
        SidecarSettings(interval_s=10.0, jitter=1.5)


def test_a_retry_after_is_waited_at_least_in_wall_time_and_capped(video):
    """A 429's Retry-After (wall seconds) is a floor on the next wait, even above the backoff cap; the loop runs in
    pipeline seconds, so under ``speedup`` it waits ``speedup x`` as many; an absurd one is capped."""
    sidecar = _idle(video, SidecarSettings(interval_s=10.0, max_backoff_s=35.0), random.Random(0))
    assert sidecar.delay_after(StepReport("held", "", temporary=True, retry_after_s=120.0)) == 120.0
    assert 10.0 <= sidecar.delay_after(StepReport("held", "", temporary=True, retry_after_s=1.0)) <= 20.0
    fast = _idle(video, SidecarSettings(interval_s=10.0, max_backoff_s=35.0, speedup=10.0), random.Random(0))
    assert fast.delay_after(StepReport("held", "", temporary=True, retry_after_s=30.0)) == 300.0
    assert fast.delay_after(StepReport("held", "", temporary=True, retry_after_s=1e12)) == 10.0 * MAX_RETRY_AFTER_S


class _Throttled:
    """A cluster whose API server answers every read with 429 and a Retry-After."""

    def __init__(self, spec, retry_after_s: float) -> None:
        self.spec, self.retry_after_s = spec, retry_after_s

    def observe(self):
        raise KubeApiError("throttled", "HTTP 429 TooManyRequests", self.retry_after_s)


class _RecordingStop(threading.Event):
    """The loop's stop event: records each wait instead of sleeping, and stops after ``waits`` of them."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.max_waits = waits

    def wait(self, timeout=None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.max_waits:
            self.set()
        return self.is_set()


def test_the_loop_waits_out_a_retry_after_before_its_next_api_call(video, caplog):
    stop = _RecordingStop(waits=3)
    settings = SidecarSettings(interval_s=1.0, max_backoff_s=2.0)
    sidecar = Sidecar(_Throttled(video, 5.0), FixedPolicy(None), None, settings, stop=stop, rng=random.Random(0))
    with caplog.at_level(logging.INFO, logger="rlscale.kube.sidecar"):
        assert sidecar.run() == 0
    assert len(stop.waits) == 3 and all(4.9 <= w <= 5.0 for w in stop.waits)  # 5 s less the step's own time
    assert sidecar.health()[0]  # a long planned wait is not a stuck loop
    assert any("the API server asked 5s" in r.getMessage() for r in caplog.records)
    text = generate_latest(sidecar.metrics.registry).decode()
    assert 'rlscale_sidecar_errors_total{kind="throttled"} 3.0' in text
    assert 'rlscale_sidecar_errors_total{kind="server"} 0.0' in text


def test_a_throttled_apply_asks_for_its_retry_after_and_counts_once(video, big):
    sidecar = Sidecar(SimCluster(video, faults=["throttled"]), FixedPolicy(big), None, SidecarSettings(10.0))
    report = sidecar.step()
    assert report.outcome == "failed" and report.temporary
    assert report.retry_after_s == 30.0 and report.error_kinds == ["throttled"]  # the skipped stage is no error
    assert sidecar.delay_after(report) >= 30.0


def test_the_loop_survives_faults_logs_a_permanent_one_once_and_records_metrics(video, big, caplog):
    stop = threading.Event()
    cluster = SimCluster(
        video, faults=["metrics", "forbidden", "forbidden", "forbidden", None, None], stop_after=6, stop=stop
    )
    sidecar = Sidecar(cluster, FixedPolicy(big), None, SidecarSettings(interval_s=0.01, max_backoff_s=0.02), stop=stop)
    with caplog.at_level(logging.DEBUG, logger="rlscale.kube.sidecar"):
        assert sidecar.run() == 0
    assert sidecar.steps == 6
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "forbidden" in errors[0].getMessage()
    assert any("recovered: crop works again (after forbidden errors)" in r.getMessage() for r in caplog.records)
    assert any("holding the current config: Prometheus" in r.getMessage() for r in caplog.records)
    text = generate_latest(sidecar.metrics.registry).decode()
    assert 'rlscale_sidecar_errors_total{kind="forbidden"} 6.0' in text  # 3 steps x 2 stages
    assert 'rlscale_sidecar_decisions_total{outcome="held"} 1.0' in text
    crop = big.stages[0]
    assert f'rlscale_sidecar_stage_replicas{{stage="crop"}} {float(crop.replicas)}' in text
    assert f'rlscale_sidecar_stage_variant{{stage="crop",variant="{crop.variant}"}} 1.0' in text
    assert 'rlscale_sidecar_stage_variant{stage="crop",variant="yolov5x"} 0.0' in text


def test_a_policy_that_raises_holds_the_config_and_the_loop_goes_on(video, big):
    stop = threading.Event()
    cluster = SimCluster(video, stop_after=3, stop=stop)
    before = cluster.sim.config
    sidecar = Sidecar(cluster, FixedPolicy(big, fail=True), None, SidecarSettings(interval_s=0.01), stop=stop)
    assert sidecar.run() == 0
    assert sidecar.steps == 3 and cluster.sim.config == before
    text = generate_latest(sidecar.metrics.registry).decode()
    assert 'rlscale_sidecar_errors_total{kind="policy"} 3.0' in text


def test_an_unexpected_error_while_observing_is_held_not_raised(video, big):
    class Broken(SimCluster):
        def observe(self):
            super().observe()
            raise KeyError("value")  # e.g. a surprise answer shape

    stop = threading.Event()
    sidecar = Sidecar(Broken(video, stop_after=2, stop=stop), FixedPolicy(big), None, SidecarSettings(0.01), stop=stop)
    assert sidecar.run() == 0 and sidecar.steps == 2
    text = generate_latest(sidecar.metrics.registry).decode()
    assert 'rlscale_sidecar_errors_total{kind="internal"} 2.0' in text


def test_the_safety_layer_moves_an_unsafe_proposal_and_the_distance_is_exported(video, caplog):
    from ilp_baseline.safety import SafetyLayer

    stop = threading.Event()
    cluster = SimCluster(video, stop_after=2, stop=stop)  # 20 rps
    too_small = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 2.0)
    sidecar = Sidecar(cluster, FixedPolicy(too_small), SafetyLayer(video), SidecarSettings(0.01), stop=stop)
    with caplog.at_level(logging.INFO, logger="rlscale.kube.sidecar"):
        assert sidecar.run() == 0
    assert any("safety moved" in r.getMessage() for r in caplog.records), caplog.text
    distance = sidecar.metrics.distance._value.get()
    assert distance > 0
    assert cluster.sim.config != too_small  # what was applied is the projection, not the proposal
    text = generate_latest(sidecar.metrics.registry).decode()
    assert "rlscale_sidecar_last_success_timestamp_seconds 0.0" not in text


def test_a_refused_change_does_not_count_as_success(video, big):
    stop = threading.Event()
    cluster = SimCluster(video, faults=["forbidden", "forbidden"], stop_after=2, stop=stop)
    sidecar = Sidecar(cluster, FixedPolicy(big), None, SidecarSettings(0.01), stop=stop)
    assert sidecar.run() == 0
    text = generate_latest(sidecar.metrics.registry).decode()
    assert "rlscale_sidecar_last_success_timestamp_seconds 0.0" in text
    assert 'rlscale_sidecar_decisions_total{outcome="failed"} 2.0' in text


def test_a_rejected_query_is_said_once_and_not_backed_off(video, big, caplog):
    stop = threading.Event()
    cluster = SimCluster(video, faults=["bad-query"] * 3, stop_after=3, stop=stop)
    sidecar = Sidecar(cluster, FixedPolicy(big), None, SidecarSettings(interval_s=0.01), stop=stop)
    with caplog.at_level(logging.INFO, logger="rlscale.kube.sidecar"):
        assert sidecar.run() == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "HTTP 400: parse error" in errors[0].getMessage()
    assert not any("backing off" in r.getMessage() for r in caplog.records)


def test_metrics_and_healthz_over_http(video, big):
    import time
    import urllib.error
    import urllib.request

    from tests.integration.conftest import free_port

    sidecar = Sidecar(SimCluster(video), FixedPolicy(big), None, SidecarSettings(interval_s=0.1))
    port = free_port()
    server = sidecar.metrics.serve(port, health=sidecar.health)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            assert r.status == 200 and b"starting" in r.read()
        sidecar.run_once()
        sidecar.last_step_end = time.monotonic() - 10  # as if the loop had been stuck for 10 s (limit ~0.7 s)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/healthz", timeout=2)
        assert info.value.code == 503 and b"no step finished" in info.value.read()
        with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:
            assert b"rlscale_sidecar_decisions_total" in r.read()
    finally:
        server.shutdown()
