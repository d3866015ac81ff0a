"""The arithmetic of the calibration table: a run's figures, the median and band over repeats, ratios, MAPE and the
JSON's nulls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlscale.calibrate import stats


def test_latency_stats_are_numpys_percentiles_of_the_finite_values():
    values = np.array([0.004, 0.001, np.nan, 0.002, 0.003, 0.010])
    got = stats.latency_stats(values)
    finite = values[np.isfinite(values)]
    assert got["mean"] == pytest.approx(finite.mean())
    for stat, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert got[stat] == pytest.approx(np.percentile(finite, q))
    assert got["p50"] <= got["p90"] <= got["p99"]
    assert all(math.isnan(v) for v in stats.latency_stats(np.array([np.nan])).values())


def test_run_figures_count_late_and_unanswered_as_violations_and_throughput_within_the_window():
    e2e = np.array([0.1, 0.2, 2.0, np.nan])  # one late (SLA 1 s), one never answered
    ends = np.array([0.5, 1.5, 9.5, np.nan])  # the third ends after the 5 s window
    stage = np.vstack([e2e / 2, e2e / 2])
    fig = stats.run_figures(stage, ends, e2e, window_s=5.0, sla_s=1.0, stage_names=["a", "b"])
    assert fig["violation_rate"] == pytest.approx(2 / 4)
    assert fig["throughput_rps"] == pytest.approx(2 / 5)
    assert fig["requests"] == 4 and fig["answered"] == 3
    assert set(fig["stages"]) == {"a", "b"}
    assert fig["e2e"]["p50"] == pytest.approx(0.2)


def _run(p50: float, p99: float, thr: float = 10.0) -> dict:
    return {
        "e2e": {"mean": p50, "p50": p50, "p90": (p50 + p99) / 2, "p99": p99},
        "stages": {"a": {"mean": p50, "p50": p50, "p90": p50, "p99": p99}},
        "throughput_rps": thr,
        "violation_rate": 0.0,
        "requests": 100,
        "answered": 100,
    }


def test_median_and_band_over_repeats():
    runs = [_run(0.010, 0.050, 9.0), _run(0.012, 0.080, 10.0), _run(0.011, 0.030, 11.0)]
    median = stats.median_figures(runs)
    assert median["e2e"]["p50"] == pytest.approx(0.011)
    assert median["e2e"]["p99"] == pytest.approx(0.050)  # each statistic's own median
    assert median["throughput_rps"] == pytest.approx(10.0)
    assert median["requests"] == 100 and isinstance(median["requests"], int)
    band = stats.band(runs)
    assert band["p50"] == [0.010, 0.012] and band["p99"] == [0.030, 0.080]
    for stat, (lo, hi) in band.items():
        assert lo <= median["e2e"][stat] <= hi  # the band contains the median
    assert stats.band(runs, "a")["p99"] == [0.030, 0.080]


def test_median_leaves_out_a_repeat_that_answered_nothing():
    empty = _run(math.nan, math.nan)
    median = stats.median_figures([_run(0.01, 0.05), empty, _run(0.03, 0.07)])
    assert median["e2e"]["p50"] == pytest.approx(0.02)
    with pytest.raises(ValueError):
        stats.median_figures([])


def test_ratios_and_mape():
    assert stats.ratio(2.0, 4.0) == 0.5
    assert math.isnan(stats.ratio(1.0, 0.0)) and math.isnan(stats.ratio(math.nan, 1.0))
    r = stats.ratios(_run(0.02, 0.1, 10.0), _run(0.01, 0.05, 10.0))
    assert r["e2e"]["p50"] == pytest.approx(2.0) and r["throughput_rps"] == pytest.approx(1.0)
    assert math.isnan(r["violation_rate"])  # real 0: no ratio
    assert stats.mape([(1.1, 1.0), (0.8, 1.0), (5.0, 0.0), (math.nan, 1.0)]) == pytest.approx(0.15)
    assert math.isnan(stats.mape([]))
    assert stats.within_band(0.5, [0.4, 0.6]) and not stats.within_band(0.7, [0.4, 0.6])


def test_json_has_null_for_nan():
    doc = stats.finite_or_none({"a": math.nan, "b": [1.0, math.inf], "c": (np.float64(2.0), np.int64(3))})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"a": None, "b": [1.0, None], "c": [2.0, 3]}
