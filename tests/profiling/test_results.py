"""Profile results (`rlscale.profiling.results`): percentiles, the per-variant fit and its errors, the CSV the spec
reads, and its source line."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.profiles import PROFILE_COLUMNS, load_profile
from rlscale.profiling.results import (
    Measurement,
    cpu_model,
    fit_variants,
    profile_csv,
    source_text,
    write_profile,
)

COEF = (0.02, 0.005, 0.01, 0.002)  # gamma, delta, eps, eta


def _exact(variant: str, b: int, c: int, scale: float = 1.0) -> Measurement:
    gamma, delta, eps, eta = COEF
    latency = scale * (gamma * b / c + delta * b + eps / c + eta)
    return Measurement(variant, b, c, (latency,) * 5)


def test_p50_and_p99_are_the_percentiles_of_the_runs():
    m = Measurement("v", 1, 1, tuple(float(x) for x in range(1, 101)))
    assert m.p50_s == pytest.approx(50.5)
    assert m.p99_s == pytest.approx(99.01)
    doc = m.to_dict()
    assert doc["repeats"] == 100 and doc["min_s"] == 1.0 and doc["max_s"] == 100.0 and "worker" not in doc


def test_the_fit_recovers_the_latency_form_per_variant():
    points = [_exact(v, b, c, k) for v, k in (("fast", 1.0), ("slow", 3.0)) for b in (1, 2, 4, 8) for c in (1, 2, 4)]
    fits = {f.variant: f for f in fit_variants(points)}
    assert list(fits) == ["fast", "slow"]
    np.testing.assert_allclose(fits["fast"].coef, COEF, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fits["slow"].coef, np.multiply(COEF, 3.0), rtol=1e-6, atol=1e-9)
    for f in fits.values():
        assert f.points == 12
        assert f.max_rel_error < 1e-6 and f.mean_rel_error < 1e-6
        assert f.loo_max_rel_error is not None and f.loo_max_rel_error < 1e-6
        assert f.predict_s(16, 8) == pytest.approx(f.coef[0] * 2 + f.coef[1] * 16 + f.coef[2] / 8 + f.coef[3])


def test_the_fit_error_shows_points_off_the_form():
    points = [_exact("v", b, 1) for b in (1, 2, 4, 8, 16)]
    slow = points[2]
    points[2] = Measurement("v", slow.batch, 1, tuple(3 * s for s in slow.samples_s))  # one point 3x slower
    (fit,) = fit_variants(points)
    assert fit.max_rel_error > 0.3
    assert fit.loo_max_rel_error > fit.max_rel_error  # held out, the odd point is predicted worse still
    assert fit.loo_median_rel_error is not None


def test_leave_one_out_needs_five_points():
    (fit,) = fit_variants([_exact("v", b, c) for b in (1, 2) for c in (1, 2)])
    assert fit.points == 4 and fit.loo_max_rel_error is None and fit.loo_median_rel_error is None


def test_the_csv_is_a_profile_the_latency_model_reads(tmp_path):
    points = [_exact("v1", b, c) for b in (1, 4) for c in (1, 2)] + [_exact("v2", 2, 1, 2.0)]
    source = source_text("in-process", 3, 20, "CPU Some, Model", date="2026-11-30")
    path = write_profile(tmp_path / "p.csv", points, source)
    assert path.read_text().splitlines()[0] == ",".join(PROFILE_COLUMNS)
    model = load_profile(path)
    assert model.variants == ["v1", "v2"]
    for m in points:
        assert model.latency_s(m.variant, m.batch, m.cores) == pytest.approx(m.p99_s, rel=1e-5)
        point = model.points[(m.variant, m.batch, float(m.cores))]
        assert point.kind == "measured" and point.source == source
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file of the atomic write is gone


def test_the_source_names_tool_method_hardware_and_date_without_commas():
    text = source_text("served", 2, 50, "CPU Xeon, 2 sockets", date="2026-11-30")
    assert text == "rlscale profile served p99 of 50 after 2 warm-up; CPU Xeon  2 sockets; 2026-11-30"
    row = profile_csv([_exact("v", 1, 1)], text).splitlines()[1]
    assert row.split(",")[4] == text  # one plain field: no quoting needed


def test_the_cpu_model_is_named():
    assert cpu_model().strip()
