"""``rlscale calibrate`` through ``main(argv)`` with the measuring replaced by fakes (no servers: profiles of known
run times, a real run whose every request takes a known time); the simulator and every output are real. The
``--json`` document, the table written after each configuration, and Ctrl-C keeping the finished configurations
(exit 130). The real thing, servers and all: tests/calibrate/test_e2e.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlscale.calibrate import run as calibrate_run
from rlscale.calibrate import settings as calibrate_settings
from rlscale.calibrate.load import LoadResult
from rlscale.calibrate.measure import StageProfile, overhead
from rlscale.profiling.results import Measurement
from rlscale.spec import load_spec
from tests.calibrate.specs import MLP, write_mlp_spec

REAL_STAGE_S = 0.004  # each fake real request spends this long at each stage


@pytest.fixture
def spec(tmp_path):
    return write_mlp_spec(tmp_path)


@pytest.fixture
def fakes(monkeypatch):
    """Profiles and real runs without servers; ``calls`` counts the real runs, ``stop_at`` interrupts one."""
    state = {"calls": 0, "stop_at": None}

    def profile_stage(target, *, batches, **_):
        runs = lambda b: tuple(0.001 * b * (1 + 0.1 * i) for i in range(10))  # noqa: E731
        profile = StageProfile(
            target,
            in_process=[Measurement(target.variant, b, 1, runs(b)) for b in batches],
            served=[Measurement(target.variant, b, 1, tuple(x + 0.002 for x in runs(b))) for b in batches],
            server_cpu_per_request_s=0.0025,
            cpu=target.cpu,
        )
        profile.overhead_s, profile.overhead_how = overhead(profile)
        return profile

    def real_run(s, config, trace, times, repeat):
        state["calls"] += 1
        if state["calls"] == state["stop_at"]:
            raise KeyboardInterrupt
        n, k = times.size, len(s.stages)
        stage_s = np.full((k, n), REAL_STAGE_S * (1 + 0.1 * repeat))
        ends = times + np.cumsum(stage_s, axis=0)
        load = LoadResult(times, np.zeros(n), stage_s, ends, ends[-1] - times, [""] * n, 0.1, float(s.window_s))
        server = {t.name: {"cpu_per_request_s": 0.0025} for t in s.stages}
        return load, {"repeat": repeat + 1, "errors": 0, "server": server}

    monkeypatch.setattr(calibrate_run, "profile_stage", profile_stage)
    monkeypatch.setattr(calibrate_run, "real_run", real_run)
    monkeypatch.setattr(calibrate_settings, "check_extras", lambda serving: None)
    return state


def _argv(spec, out, *more):
    return [
        *("calibrate", "--spec", str(spec), "--model", MLP, "--trace", "bursty"),
        *("--window", "360:365", "--load-fraction", "0.2,0.4", "--batches", "1", "--repeats", "3"),
        *("--out", str(out), *more),
    ]


def test_json_is_one_document_with_the_contracts_fields(cli_main, spec, fakes, tmp_path):
    result = cli_main(_argv(spec, tmp_path / "out", "--json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [c["name"] for c in doc["configs"]] == ["load0.2-b1", "load0.4-b1"]
    for config in doc["configs"]:
        real = config["real"]["e2e"]
        assert real["p50"] == pytest.approx(2 * REAL_STAGE_S * 1.1)  # the median repeat
        assert config["real_band"]["p50"] == pytest.approx([2 * REAL_STAGE_S, 2 * REAL_STAGE_S * 1.2])
        assert config["sim"]["e2e"]["p99"] > 0 and config["sim_uncalibrated"]["throughput_rps"] > 0
        assert (
            config["sim_served"]["e2e"]["p50"] > config["sim_uncalibrated"]["e2e"]["p50"]
        )  # served runs hold the overhead
        assert config["planned_p99_s"] > 0
    assert fakes["calls"] == (2 + 2) * 3  # the fit runs (0.4 and 0.7 at batch 1), then the configurations, 3 times
    assert doc["stages"][0]["overhead_s"] == pytest.approx(0.0025 - 0.00145)
    assert doc["fit"]["runs"] == ["load0.4-b1", "load0.7-b1"] and doc["fit"]["seed"] == 1
    for fit in doc["fit"]["stages"]:  # each fit run's real (median repeat) and sim/real quantiles
        # the server's CPU a request less the model's is the measured overhead here: the line is that one point
        assert fit["overhead_s"] == pytest.approx(0.0025 - 0.00145) and fit["batch_cost_s"] == 0.0
        assert fit["delay_s"] >= 0 and fit["jitter_s"] >= 0
        assert list(fit["sim_over_real"]) == list(fit["real_s"]) == ["fit-load0.4-b1", "fit-load0.7-b1"]
        assert fit["real_s"]["fit-load0.4-b1"] == pytest.approx([REAL_STAGE_S * 1.1] * 3)
    assert doc["fit"]["mode"] == "overhead" and doc["fit"]["repeats"] == 3
    assert (tmp_path / "out" / "spec-calibrated.yaml").exists()


def test_ctrl_c_keeps_every_finished_run(cli_main, spec, fakes, tmp_path):
    """Rounds: each round runs the two fit runs, then each configuration once; interrupted during the last round's
    second configuration, the first has its 3 repeats and the second 2, both written."""
    fakes["stop_at"] = 4 + 4 + 4
    out = tmp_path / "out"
    result = cli_main(_argv(spec, out, "--json"))
    assert result.returncode == 130
    assert result.stdout == ""
    assert "interrupted by SIGINT: 1 of 2 configurations finished and 1 with fewer repeats" in result.stderr
    doc = json.loads((out / "calibrate.json").read_text())
    assert doc["complete"] is False and [c["name"] for c in doc["configs"]] == ["load0.2-b1", "load0.4-b1"]
    assert [len(c["real_repeats"]) for c in doc["configs"]] == [3, 2]
    assert "load0.4-b1" in (out / "results.md").read_text() and (out / "sim_vs_real.png").exists()
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 2 * 14
    fits = json.loads((out / "run.json").read_text())[:2]
    assert [f["config"] for f in fits] == ["fit-load0.4-b1", "fit-load0.7-b1"] and len(fits[0]["repeats"]) == 3


def test_no_fit_keeps_the_measured_overhead(cli_main, spec, fakes, tmp_path):
    result = cli_main(_argv(spec, tmp_path / "out", "--json", "--fit-load-fraction", "none"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert fakes["calls"] == 2 * 3 and doc["fit"]["stages"] == [] and doc["fit"]["runs"] == []
    calibrated = load_spec(tmp_path / "out" / "spec-calibrated.yaml")
    first = calibrated.stages[0].latency
    assert first.overhead_s("mlp-256", 1) == pytest.approx(0.0025 - 0.00145) and first.delay_s("mlp-256", 1) == 0


def test_a_table_on_stdout_without_json(cli_main, spec, fakes, tmp_path):
    result = cli_main(_argv(spec, tmp_path / "out", "--write-spec", str(tmp_path / "cal.yaml")))
    assert result.returncode == 0, result.stderr
    assert "| load0.4-b1 | end-to-end | p99 |" in result.stdout
    assert "calibrated spec" in result.stdout and (tmp_path / "cal-first.csv").exists()
