"""The comparison harness writes one row per run, a per-policy table and the plots."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.evaluate.compare import run_comparison
from rlscale.evaluate.tune_headroom import tune
from rlscale.policies.registry import make_policy


@pytest.fixture
def short_trace(tmp_path):
    path = tmp_path / "short.csv"
    rps = np.concatenate([np.full(100, 5), np.full(100, 25), np.full(100, 8)])
    path.write_text("rps\n" + "\n".join(map(str, rps)) + "\n")
    return path


@pytest.mark.slow
def test_comparison_files_and_rows(tmp_path, short_trace):
    out = tmp_path / "cmp"
    comp = run_comparison(
        "video",
        [str(short_trace), "steady_low"],
        ["ipa", "fa2-low"],
        seeds=2,
        out=out,
        progress=False,
        make_policy=make_policy,
    )
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2
    assert {r["policy"] for r in rows} == {"ipa", "fa2-low"}
    assert {r["arrivals"] for r in rows} == {"poisson"}  # several seeds -> Poisson arrivals, seeds differ
    seeds = [r for r in rows if r["policy"] == "ipa" and r["trace"] == "steady_low"]
    assert seeds[0]["requests"] != seeds[1]["requests"] or seeds[0]["p99_latency_s"] != seeds[1]["p99_latency_s"]
    table = (out / "results.md").read_text()
    assert table.count("| video |") == 4
    for name in ("accuracy_vs_cost.png", "violations.png", "timeline-short-ipa.png", "timeline-steady_low-fa2-low.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # every run's timeline rows beside the plots, and each stage's configuration in the rows and the table
    csvs = sorted(p.name for p in out.glob("timeline-*.csv"))
    assert len(csvs) == 8 and "timeline-short-ipa-seed1.csv" in csvs
    assert "timeline-short-ipa-seed1.png" not in {p.name for p in out.iterdir()}
    timeline = list(csv.DictReader(open(out / "timeline-steady_low-ipa-seed0.csv")))
    assert len(timeline) >= 120 and {r["phase"] for r in timeline} <= {"trace", "drain"}
    for st in comp.spec.stages:
        assert {r[f"{st.name}.variant_mode"] for r in rows} <= set(st.variant_names)
        assert all(float(r[f"{st.name}.cores_mean"]) >= 1 and float(r[f"{st.name}.replicas_mean"]) >= 1 for r in rows)
    assert "## Configuration per stage" in table and " cores x " in table
    assert comp.mean("steady_low", "ipa", "accuracy") >= comp.mean("steady_low", "fa2-low", "accuracy")
    # rollouts (variant, batch or cores changed) and scalings (replicas only) apart, in the records and the table
    assert all(int(r["rollouts"]) + int(r["scalings"]) == int(r["reconfigurations"]) for r in rows)
    churn = f"{comp.mean('steady_low', 'ipa', 'rollouts'):.1f} / {comp.mean('steady_low', 'ipa', 'scalings'):.1f}"
    assert "rollouts / scalings" in table and f"| {churn} |" in table


def test_comparison_rejects_bad_names_before_running(tmp_path):
    with pytest.raises(RlscaleError, match="unknown policy"):
        run_comparison(
            "video", ["bursty"], ["ipa", "nope"], out=tmp_path / "x", progress=False, make_policy=make_policy
        )
    with pytest.raises(RlscaleError, match="unknown trace"):
        run_comparison(
            "video", ["bursty", "nope"], ["ipa"], out=tmp_path / "x", progress=False, make_policy=make_policy
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.subprocess
def test_compare_cli(tmp_path, short_trace):
    out = tmp_path / "c"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            "compare",
            "--pipeline",
            "video",
            "--traces",
            str(short_trace),
            "--policies",
            "ipa,static-min",
            "--out",
            str(out),
            "--no-timelines",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| video |" in result.stdout
    assert (out / "results.csv").exists() and not list(out.glob("timeline-*"))


def test_headroom_tuning_reads_training_windows_only(monkeypatch):
    import rlscale.workload as workload

    def forbidden(*_a, **_k):
        raise AssertionError("an evaluation window was read")

    monkeypatch.setattr(workload, "load_trace", forbidden)
    monkeypatch.setattr(workload, "_eval_windows", forbidden)
    report = tune("video", windows=2, window_s=200, candidates=(1.0, 1.5))
    assert report["headroom"] in (1.0, 1.5)
    assert all(name.startswith("train@") for name in report["windows"])
    assert len(report["sweep"]) == 2
