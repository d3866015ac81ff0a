"""The calibrated profile and spec: the distribution, the run times and the overhead read back through
`rlscale.profiles.load_profile`; the stage's other variants kept; the spec loads and plans the measured core."""

from __future__ import annotations

import pytest
import yaml

from rlscale.calibrate.calibrated import calibrated_points, write_calibrated_spec, write_profile
from rlscale.calibrate.measure import OVERHEAD_CPU, OVERHEAD_LATENCY, OVERHEAD_LOAD, StageProfile, overhead
from rlscale.calibrate.settings import StageTarget
from rlscale.profiles import load_profile, runs_path
from rlscale.profiling.results import Measurement
from rlscale.spec import load_spec
from tests.conftest import base_spec_dict
from tests.conftest import write_profile as write_toy_profile


def _profile(variant: str = "fast") -> StageProfile:
    target = StageTarget("first", variant, "m:build", None, "first", 0)
    runs = {1: (0.010, 0.011, 0.012, 0.013, 0.030), 2: (0.018, 0.019, 0.020, 0.021, 0.040)}
    served = {1: (0.014, 0.015, 0.016), 2: (0.024, 0.025, 0.026)}
    profile = StageProfile(
        target,
        in_process=[Measurement(variant, b, 1, r) for b, r in runs.items()],
        served=[Measurement(variant, b, 1, r) for b, r in served.items()],
        server_cpu_per_request_s=0.0155,
        cpu=0,
    )
    profile.overhead_s, profile.overhead_how = overhead(profile)
    return profile


def test_overhead_is_the_servers_cpu_beyond_the_model_else_the_served_latency():
    profile = _profile()
    assert profile.overhead_s == pytest.approx(0.0155 - 0.0152) and profile.overhead_how == OVERHEAD_CPU
    profile.under_load_overhead_s = 0.004  # the server's metrics under load: CPU beyond the model's own, taken as is
    assert overhead(profile) == (0.004, OVERHEAD_LOAD)
    profile.under_load_overhead_s = None
    profile.server_cpu_per_request_s = None  # a team's server: no /proc; served mean 15 ms, the model's 15.2
    assert overhead(profile) == (0.0, OVERHEAD_LATENCY)  # never below 0
    profile.in_process = []
    assert overhead(profile) == (None, "not measured (no factory to profile the model alone)")


def test_the_calibrated_profile_reads_back_with_its_distribution(tmp_path):
    profile = _profile()
    points = calibrated_points(profile, date="2026-12-07")
    path = write_profile(tmp_path / "cal.csv", points)
    model = load_profile(path)
    assert model.has_runs and model.has_overhead
    assert model.latency_s("fast", 1, 1) == pytest.approx(0.02932)  # the p99 of the five runs: 13 + 0.96 x 17 ms
    assert model.statistic_s("fast", 1, 1, "p50") == pytest.approx(0.012)
    assert model.mean_s("fast", 2, 1) == pytest.approx(0.0236)
    assert model.runs_s("fast", 2, 1) == pytest.approx((0.018, 0.019, 0.020, 0.021, 0.040))
    assert model.overhead_s("fast", 1) == pytest.approx(0.0003)
    assert "," not in points[0].source and "rlscale calibrate" in points[0].source

    served = calibrated_points(profile, "served", date="2026-12-07")
    assert [p.mean_s for p in served] == pytest.approx([0.015, 0.025])  # the served requests' runs
    assert [p.overhead_s for p in served] == [p.overhead_s for p in points]  # the same overhead
    assert "served by rlscale serve" in served[0].source and "in-process" in points[0].source

    without_runs = [p.__class__(**{**p.__dict__, "runs_s": None}) for p in points]
    write_profile(path, without_runs)
    assert not runs_path(path).exists()  # a stale runs file is removed


def test_the_calibrated_spec_loads_keeps_other_variants_and_plans_one_core(tmp_path):
    write_toy_profile(tmp_path)
    doc = base_spec_dict()
    doc["stages"][0]["batch_sizes"] = [1, 2]
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(doc))
    spec = load_spec(tmp_path / "toy.yaml")
    out = tmp_path / "cal"
    out.mkdir()
    calibrated = write_calibrated_spec(spec, {"first": calibrated_points(_profile())}, out / "c.yaml", "note")
    assert calibrated.source == out / "c.yaml" and calibrated.source.read_text().startswith("# note\n")
    assert load_spec(calibrated.source) == calibrated
    first, second = calibrated.stages
    assert first.profile_path == out / "c-first.csv" and runs_path(first.profile_path).exists()
    assert first.cores == (1,) and first.profile == "c-first.csv"
    assert first.latency.has_runs and first.latency.points[("fast", 1, 1.0)].overhead_s is not None
    assert first.latency.points[("slow", 1, 1.0)] == spec.stages[0].latency.points[("slow", 1, 1.0)]  # kept
    assert second.profile_path == spec.stages[1].profile_path  # a stage not calibrated is unchanged
