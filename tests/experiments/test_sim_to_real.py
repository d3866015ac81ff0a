"""The sim-to-real experiment's building blocks on a tiny window: two real numpy stages served by ``rlscale serve`` on
127.0.0.1, profiled, loaded open-loop for a few seconds at a low load, and simulated; the result has its structure,
its figures are sane, every request is answered and the servers are gone afterwards."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from experiments import sim_to_real as s2r
from tests.serve.stage_server import require_mlserver


def _aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("aiohttp is missing (MLServer brings it: the serve extra)")
        pytest.skip("aiohttp is not installed (the serve extra)")


def _stages() -> tuple[s2r.Stage, ...]:
    cpus = sorted(os.sched_getaffinity(0))
    return (
        s2r.Stage("first", "rlscale.examples.mlp:build", "mlp-256", cpus[0]),
        s2r.Stage("second", "rlscale.examples.mlp:build", "mlp-256", cpus[-1]),
    )


def test_window_and_schedule():
    trace = s2r.window_trace("bursty", 360, 5, peak_rps=40)
    assert trace.peak_rps == 40 and trace.duration_s == 5
    times = s2r.schedule_s(trace, "even", seed=0)
    assert times.size == trace.rps.sum() and np.all(np.diff(times) >= 0) and times[-1] < 5
    assert np.array_equal(s2r.schedule_s(trace, "poisson", 3), s2r.schedule_s(trace, "poisson", 3))


@pytest.mark.e2e
def test_a_tiny_run_real_and_simulated(tmp_path):
    require_mlserver()
    _aiohttp()
    stages = _stages()
    settings = s2r.Settings(
        out=tmp_path,
        configs=(s2r.RunConfig("tiny", (2, 2), 0.0, 0.5),),
        stages=stages,
        window_s=3,
        repeats=5,
        capacity_rps=60.0,  # a low load (peak 30 rps) on any machine: the figures below hold far from saturation
    )
    rows, runs, meta = s2r.run(settings)
    md = s2r.write_results(tmp_path, rows, runs, meta, stages)

    for name in ("results.csv", "results.md", "run.json", "sim_vs_real.png", "profiles.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    for kind in s2r.PROFILES:
        assert (tmp_path / f"spec-{kind}.yaml").exists()
        for stage in stages:
            assert (tmp_path / f"profile-{kind}-{stage.name}.csv").exists()
    assert "| tiny |" in md

    (run,) = runs
    assert run["errors"] == 0, run["first_errors"]
    by = {(r["where"], r["source"]): r for r in rows}
    assert {w for w, _ in by} == {"first", "second", "end-to-end"}
    assert {src for _, src in by} == {"real", *s2r.PROFILES}
    requests = rows[0]["requests"]
    offered = requests / settings.window_s
    for where in ("first", "second", "end-to-end"):
        real, sim = by[(where, "real")], by[(where, s2r.HEADLINE)]
        assert real["answered"] == requests == sim["answered"]  # every request answered, in both
        assert 0 < real["p50_s"] <= real["p99_s"] < 5, real
        assert 0 < sim["p50_s"] <= sim["p99_s"] < 5, sim
        # at low load nearly everything is done within the window (the last answers may fall just after it)
        assert real["throughput_rps"] == pytest.approx(offered, rel=0.1)
        assert sim["throughput_rps"] == pytest.approx(offered, rel=0.1)
    assert by[("end-to-end", "real")]["p50_s"] >= by[("first", "real")]["p50_s"]

    for stage in stages:
        server = run["server"][stage.name]
        assert server["requests"] == requests  # the runtime counted each request once
        assert server["server_mean_latency_s"] > 0 and 1 <= server["mean_batch"] <= 2
    assert math.isfinite(run["lateness_s"]["p99"]) and run["generator_cores"] > 0
    assert run["server_exit_codes"] == [0, 0]
    for pid in run["server_pids"]:  # stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    with open(tmp_path / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 * (1 + len(s2r.PROFILES))
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["meta"]["capacity_rps_used"] == 60.0


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        s2r.main(["--help"])
    assert exc.value.code == 0
    assert "--window-s" in capsys.readouterr().out
    assert s2r.main(["--configs", "nope", "--out", "/tmp/unused-s2r"]) == 2
    assert "unknown nope" in capsys.readouterr().err
