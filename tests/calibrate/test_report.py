"""The report of a calibration from known figures: the BLIS-format rows, the CSV, the markdown, the JSON document
(its contract: ``configs`` with ``name``, ``real``, ``sim``, ``real_band``, ``planned_p99_s``; null for NaN) and the
plot."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from rlscale.calibrate import report
from rlscale.calibrate.settings import Configuration


def _figures(scale: float, thr: float = 20.0, violation: float = 0.0) -> dict:
    lat = {"mean": 0.012 * scale, "p50": 0.010 * scale, "p90": 0.020 * scale, "p99": 0.040 * scale}
    return {
        "e2e": lat,
        "stages": {"a": {k: v / 2 for k, v in lat.items()}, "b": {k: v / 2 for k, v in lat.items()}},
        "throughput_rps": thr,
        "violation_rate": violation,
        "requests": 80,
        "answered": 80,
    }


def _result(name: str = "load0.5-b1", sim_scale: float = 0.5) -> report.ConfigResult:
    return report.ConfigResult(
        config=Configuration.of(0.5, 1),
        peak_rps=30.0,
        mean_rps=20.0,
        real_runs=[_figures(1.0, 19.0, 0.01), _figures(1.2, 20.0, 0.02), _figures(0.9, 21.0, 0.0)],
        sims={"sim": _figures(sim_scale), "sim_served": _figures(2.0), "sim_uncalibrated": _figures(0.25)},
        planned_p99_s=0.05,
        planned_p99_s_uncalibrated=0.01,
        planned_p99_s_at_peak=0.06,
        diagnostics=[{"errors": 1}, {"errors": 0}, {"errors": 2}],
    )


def test_rows_real_is_the_median_inside_its_band_and_ratios_are_sim_over_real():
    rows = report.table_rows([_result()])
    assert len(rows) == 3 * 4 + 2  # (a, b, end to end) x (mean, p50, p90, p99), then throughput and violations
    by = {(r["where"], r["metric"]): r for r in rows}
    p99 = by[("end-to-end", "p99_s")]
    assert p99["real"] == pytest.approx(0.040) and [p99["real_min"], p99["real_max"]] == pytest.approx([0.036, 0.048])
    assert p99["sim_over_real"] == pytest.approx(0.5) and p99["sim_uncalibrated_over_real"] == pytest.approx(0.25)
    assert p99["sim_served_over_real"] == pytest.approx(2.0)
    assert by[("end-to-end", "throughput_rps")]["real"] == 20.0
    assert by[("end-to-end", "violation_rate")]["real"] == pytest.approx(0.01)
    assert by[("a", "p50_s")]["real"] == pytest.approx(0.005)
    for row in rows:
        assert row["real_min"] <= row["real"] <= row["real_max"]


def test_csv_and_markdown():
    results = [_result(), _result(sim_scale=1.0)]
    rows = list(csv.DictReader(io.StringIO(report.csv_text(results))))
    assert tuple(rows[0]) == report.CSV_FIELDS and len(rows) == 2 * 14
    md = report.markdown(results, {"spec": "p.yaml", "stages": [], "capacity_rps": 60.0})
    row = "| load0.5-b1 | end-to-end | p99 | 40.00 | [36.00, 48.00] | 20.00 | 0.50 | 80.00 | 2.00 | 10.00 | 0.25 |"
    assert row in md
    assert "| load0.5-b1 | 40.00 | 50.00 | 1.25 | 60.00 | 1.50 | 10.00 | 0.25 |" in md  # planned against real p99
    errors = report.errors_summary(results)
    assert errors["sim"]["e2e_p99"] == pytest.approx(0.25)  # |0.5 - 1| and |1 - 1|, averaged
    assert errors["sim"]["p99_inside_band_share"] == 0.5


def test_the_json_document_has_the_contracts_fields_and_no_nan():
    result = _result()
    result.real_runs = [_figures(1.0, 20.0, 0.0)] * 2  # no violation: the ratio has no real to divide by
    doc = report.document([result], {"spec": "p.yaml"}, complete=True)
    text = json.dumps(doc, allow_nan=False)
    (config,) = json.loads(text)["configs"]
    assert config["name"] == "load0.5-b1" and config["errors"] == 3
    for side in ("real", "sim", "sim_served", "sim_uncalibrated"):
        assert set(config[side]["e2e"]) == {"mean", "p50", "p90", "p99"}
        assert config[side]["throughput_rps"] > 0 and config[side]["violation_rate"] >= 0
    assert set(config["real_band"]) == {"p50", "p90", "p99"}
    assert config["real_band"]["p99"] == [pytest.approx(0.04)] * 2
    assert config["planned_p99_s"] == 0.05 and config["planned_p99_s_at_peak"] == 0.06
    assert config["ratios"]["sim"]["violation_rate"] is None
    assert len(config["real_repeats"]) == 2 and set(config["real_stage_bands"]) == {"a", "b"}


def test_plot(tmp_path):
    result = _result()
    result.sims["sim"]["e2e"]["p99"] = math.nan  # a simulator that answered nothing still plots
    path = report.plot([result, _result()], tmp_path / "sub" / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
