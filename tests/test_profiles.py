"""The latency model: NNLS fit, table lookups, profile validation, and the fit's leave-one-out error."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.errors import ProfileError
from rlscale.profiles import (
    LatencyModel,
    ProfilePoint,
    fit_latency,
    leave_one_out_errors,
    load_profile,
    nnls_fit,
    predict_latency,
)
from rlscale.spec import data_dir

GRID = [(b, c) for b in (1, 2, 4, 8, 16) for c in (1, 2, 4, 8)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=4, max_size=4))
def test_fit_recovers_exact_coefficients(coef):
    """Noise-free data of the model's own form is fitted exactly (the NNLS enumerates all supports)."""
    coef = np.array(coef)
    coef[3] += 1e-3  # keep every latency > 0
    lat = [predict_latency(coef, b, c) for b, c in GRID]
    fitted = fit_latency([b for b, _ in GRID], [c for _, c in GRID], lat)
    refit = [predict_latency(fitted, b, c) for b, c in GRID]
    np.testing.assert_allclose(refit, lat, rtol=1e-6)
    assert np.all(fitted >= 0)


def test_nnls_clamps_negative_coefficients():
    x = np.column_stack([np.arange(1.0, 6.0), np.ones(5)])
    y = 5.0 - np.arange(1.0, 6.0)  # unconstrained slope is -1; the NNLS optimum has slope 0
    coef = nnls_fit(x, y)
    assert coef[0] == 0.0
    assert coef[1] == pytest.approx(np.mean(y))


def test_model_prefers_table_points_and_fits_between():
    pts = [ProfilePoint("v", b, c, 0.01 * b / c + 0.002) for b, c in GRID]
    pts[0] = ProfilePoint("v", 1, 1, 0.5)  # an outlier measurement must be returned as measured
    model = LatencyModel(pts)
    assert model.latency_s("v", 1, 1) == 0.5
    off_grid = model.latency_s("v", 3, 3)
    assert model.latency_s("v", 2, 4) < off_grid < model.latency_s("v", 4, 2)
    assert model.throughput_rps("v", 4, 2) == pytest.approx(4 / model.latency_s("v", 4, 2))
    with pytest.raises(ProfileError, match="no profile points for variant 'w'"):
        model.latency_s("w", 1, 1)
    with pytest.raises(ProfileError, match="batch must be >= 1"):
        model.latency_s("v", 0, 1)


@pytest.mark.parametrize(
    "body,problem",
    [
        ("variant,batch,latency_s\nv,1,0.1\n", "missing column"),
        ("variant,batch,cores,latency_s\nv,one,1,0.1\n", "'batch': not a number"),
        ("variant,batch,cores,latency_s\nv,1,1,0\n", "latency_s' must be a positive"),
        ("variant,batch,cores,latency_s\nv,1,0,0.1\n", "'cores' must be > 0"),
        ("variant,batch,cores,latency_s\nv,0,1,0.1\n", "'batch' must be >= 1"),
        ("variant,batch,cores,latency_s\n,1,1,0.1\n", "'variant' is empty"),
        ("variant,batch,cores,latency_s\nv,1,1,0.1\nv,1,1,0.2\n", "duplicate point"),
        ("variant,batch,cores,latency_s,source,kind\nv,1,1,0.1,x,guessed\n", "'kind' must be one of"),
        ("variant,batch,cores,latency_s\n", "no rows"),
    ],
)
def test_bad_profiles(tmp_path, body, problem):
    path = tmp_path / "p.csv"
    path.write_text(body)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def _sponge_yolov5n_grid() -> list[ProfilePoint]:
    """Sponge's measured YOLOv5n grid (batch 1..16 x cores 1..32), as bundled in the crop profile."""
    with open(data_dir() / "profiles" / "crop.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["variant"] == "yolov5n" and "sponge" in r["source"].lower()]
    return [ProfilePoint("yolov5n", int(r["batch"]), float(r["cores"]), float(r["latency_s"])) for r in rows]


def test_leave_one_out_error_on_sponge_grid():
    """The fitted form predicts held-out measurements of the real YOLOv5n grid within stated bounds.

    Bounds: the grid's own noise is ~5% (latency at 16 cores exceeds that at 8 cores for batch 1, which no
    monotone model can follow) and the form cannot bend where adding cores stops helping (>= 8 cores), so a
    median relative error under 10% and a worst case under 30% is what the form can honestly promise. Measured
    when written: median 6.5%, mean 9.1%, max 25.5% (see PROVENANCE.md).
    """
    pts = _sponge_yolov5n_grid()
    assert len(pts) == 30
    errors = leave_one_out_errors(pts)
    assert np.median(errors) < 0.10
    assert errors.max() < 0.30


# ----------------------------------------------------------------- distributions (issue 28, item 1)


def _write(tmp_path, rows: list[str], runs: list[str] | None = None):
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\n")
    if runs is not None:
        (tmp_path / "p.runs.csv").write_text("\n".join(runs) + "\n")
    return path


def test_a_six_column_profile_answers_its_p99_for_every_statistic(tmp_path):
    model = load_profile(_write(tmp_path, ["variant,batch,cores,latency_s,source,kind", "v,1,1,0.01,x,measured"]))
    assert not model.has_runs and not model.has_overhead
    for name in ("p50", "mean", "p90", "p99"):
        assert model.statistic_s("v", 1, 1, name) == 0.01
    assert model.noise("v", 1, 1) is None and model.overhead_s("v", 1) == 0.0


def test_statistics_overhead_and_runs_are_read_and_fitted_where_a_point_lacks_them(tmp_path):
    header = "variant,batch,cores,latency_s,source,kind,p50_s,mean_s,p90_s,overhead_s"
    rows = [header, "v,1,1,0.012,x,measured,0.008,0.009,0.010,0.004", "v,2,1,0.02,x,measured,0.016,0.017,0.018,"]
    runs = ["variant,batch,cores,run_s", "v,1,1,0.008", "v,1,1,0.010", "v,1,1,0.009"]
    model = load_profile(_write(tmp_path, rows, runs))
    assert model.statistic_s("v", 1, 1, "p50") == 0.008 and model.mean_s("v", 2, 1) == 0.017
    assert model.statistic_s("v", 4, 1, "p50") == pytest.approx(0.032, rel=1e-6)  # the form fitted to the p50s
    assert model.runs_s("v", 1, 1) == (0.008, 0.010, 0.009) and model.runs_s("v", 2, 1) is None
    factors = model.noise("v", 2, 1)  # the nearest point with runs: (1, 1)
    assert factors.mean() == pytest.approx(1.0) and factors.tolist() == pytest.approx([8 / 9, 10 / 9, 1.0])
    assert model.overhead_s("v", 1) == 0.004 and model.overhead_s("v", 2) == 0.004


@pytest.mark.parametrize(
    "row,runs,problem",
    [
        ("v,1,1,0.01,x,measured,0.02,,,", None, "p50_s <= p90_s"),
        ("v,1,1,0.01,x,measured,,,-1,", None, "p90_s"),
        ("v,1,1,0.01,x,measured,,,,", ["variant,batch,cores,run_s", "v,2,1,0.01"], "not a point"),
        ("v,1,1,0.01,x,measured,,,,", ["variant,batch,cores,run_s", "v,1,1,nan"], "run_s"),
        ("v,1,1,0.01,x,measured,,,,", ["variant,batch,run_s", "v,1,0.01"], "missing column"),
    ],
    ids=["out of order", "negative", "unknown point", "nan run", "runs header"],
)
def test_bad_distributions_are_refused_with_the_line(tmp_path, row, runs, problem):
    header = "variant,batch,cores,latency_s,source,kind,p50_s,mean_s,p90_s,overhead_s"
    with pytest.raises(ProfileError, match=problem):
        load_profile(_write(tmp_path, [header, row], runs))
