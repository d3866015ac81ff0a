"""``rlscale calibrate --json`` end to end, as a user runs it: two stages of the numpy example family served by real
``rlscale serve`` processes on 127.0.0.1, a 4 s window, one load fraction, one batch, two repeats. The document has
the contract's shape and sane figures, every output is written, the calibrated spec loads, and the servers are
gone. No timing accuracy is asserted (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlscale.profiles import runs_path
from rlscale.spec import load_spec
from tests.calibrate.specs import MLP, write_mlp_spec
from tests.serve.stage_server import require_mlserver

ROOT = Path(__file__).resolve().parents[2]
STATS = ("mean", "p50", "p90", "p99")


def _require_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("aiohttp is missing (MLServer brings it: the serve extra)")
        pytest.skip("aiohttp is not installed (the serve extra)")


def _ordered(figures: dict) -> None:
    e2e = figures["e2e"]
    assert all(isinstance(e2e[s], float) and e2e[s] > 0 for s in STATS), e2e
    assert e2e["p50"] <= e2e["p90"] <= e2e["p99"], e2e
    assert figures["throughput_rps"] > 0
    assert 0 <= figures["violation_rate"] <= 1


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.subprocess
def test_calibrate_json_on_two_real_numpy_stages(tmp_path):
    require_mlserver()
    _require_aiohttp()
    spec = write_mlp_spec(tmp_path)
    out = tmp_path / "out"
    written = tmp_path / "calibrated" / "tiny-cal.yaml"
    written.parent.mkdir()
    argv = [
        *("calibrate", "--spec", str(spec), "--model", MLP, "--trace", "bursty"),
        *("--window", "360:364", "--load-fraction", "0.3", "--batches", "2", "--repeats", "2"),
        *("--fit-load-fraction", "0.5"),
        *("--out", str(out), "--json", "--write-spec", str(written)),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)  # exactly one document on stdout

    (config,) = doc["configs"]
    assert config["name"] == "load0.3-b2"
    for side in ("real", "sim", "sim_served", "sim_uncalibrated"):
        _ordered(config[side])
    for stat in ("p50", "p90", "p99"):
        lo, hi = config["real_band"][stat]
        assert lo <= config["real"]["e2e"][stat] <= hi  # the band holds the median
    assert len(config["real_repeats"]) == 2
    assert config["planned_p99_s"] > 0 and config["planned_p99_s_uncalibrated"] > 0
    assert config["real"]["requests"] == config["sim"]["requests"] > 0  # the same arrivals
    assert config["errors"] == 0
    assert doc["complete"] is True and doc["window"] == [360, 364] and doc["repeats"] == 2
    assert [s["stage"] for s in doc["stages"]] == ["first", "second"]
    assert all(s["overhead_s"] is not None and s["overhead_s"] >= 0 for s in doc["stages"])
    assert doc["capacity_rps"] > 0
    assert doc["fit"]["runs"] == ["load0.5-b1", "load0.5-b2"]  # batch 1, and the configurations' largest batch
    for fit in doc["fit"]["stages"]:
        assert fit["overhead_s"] >= 0 and fit["batch_cost_s"] >= 0 and fit["delay_s"] >= 0 and fit["jitter_s"] >= 0
        assert set(fit["sim_over_real"]) == {"fit-load0.5-b1", "fit-load0.5-b2"}
    assert "violation_rate_at_real_slas" in config and set(config["violation_rate_at_real_slas"]["sla_s"]) == {
        "p90",
        "p99",
    }

    for name in ("results.csv", "results.md", "calibrate.json", "run.json", "profiles.json", "sim_vs_real.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "calibrate.json").read_text())["configs"][0]["name"] == "load0.3-b2"
    calibrated = load_spec(written)
    for stage in calibrated.stages:
        assert stage.profile_path.parent == written.parent and runs_path(stage.profile_path).exists()
        assert stage.latency.has_runs and stage.latency.has_overhead
    assert load_spec(out / "spec-calibrated.yaml").name == load_spec(out / "spec-served.yaml").name == "tiny-mlp"

    diagnostics = json.loads((out / "run.json").read_text())
    assert [d["config"] for d in diagnostics] == ["fit-load0.5-b1", "fit-load0.5-b2", "load0.3-b2"]
    for repeat in diagnostics[-1]["repeats"]:
        assert repeat["server_exit_codes"] == [0, 0]
        for pid in repeat["server_pids"]:  # stopped and reaped
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
