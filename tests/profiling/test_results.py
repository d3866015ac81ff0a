"""Profile results (`rlscale.profiling.results`): percentiles, the per-variant fit and its errors, the CSV the spec
reads with its run times beside it, and its source line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import rlscale
from rlscale.paths import OutputError
from rlscale.profiles import DISTRIBUTION_COLUMNS, PROFILE_COLUMNS, RUNS_COLUMNS, load_profile, runs_path
from rlscale.profiling import results
from rlscale.profiling.results import (
    Measurement,
    cpu_model,
    fit_variants,
    is_runs_file,
    profile_csv,
    source_text,
    write_profile,
)

COEF = (0.02, 0.005, 0.01, 0.002)  # gamma, delta, eps, eta


def _exact(variant: str, b: int, c: int, scale: float = 1.0) -> Measurement:
    gamma, delta, eps, eta = COEF
    latency = scale * (gamma * b / c + delta * b + eps / c + eta)
    return Measurement(variant, b, c, (latency,) * 5)


def test_the_statistics_are_those_of_the_runs():
    m = Measurement("v", 1, 1, tuple(float(x) for x in range(1, 101)))
    assert m.p50_s == pytest.approx(50.5)
    assert m.mean_s == pytest.approx(50.5)
    assert m.p90_s == pytest.approx(90.1)
    assert m.p99_s == pytest.approx(99.01)
    doc = m.to_dict()
    assert doc["repeats"] == 100 and doc["min_s"] == 1.0 and doc["max_s"] == 100.0 and "worker" not in doc
    assert (doc["p50_s"], doc["mean_s"], doc["p90_s"], doc["p99_s"]) == (m.p50_s, m.mean_s, m.p90_s, m.p99_s)
    assert doc["overhead_s"] is None


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
    assert path.read_text().splitlines()[0] == ",".join(PROFILE_COLUMNS + DISTRIBUTION_COLUMNS)
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


def _noisy(variant: str, b: int, c: int, repeats: int, seed: int, overhead_s: float | None = None) -> Measurement:
    rng = np.random.default_rng(seed)
    runs = 0.001 * b / c * rng.lognormal(0.0, 0.3, size=repeats)
    return Measurement(variant, b, c, tuple(float(x) for x in runs), overhead_s=overhead_s)


def test_the_distribution_and_the_runs_are_read_back_by_the_latency_model(tmp_path):
    """The CSV's p50/mean/p90/p99 and the run times beside it, as `rlscale.profiles.load_profile` reads them: the same
    statistics, p50 <= p90 <= p99, every run kept in order, as many as the repeats."""
    points = [_noisy("v1", b, c, 20, seed=b * 10 + c) for b in (1, 4) for c in (1, 2)] + [_noisy("v2", 2, 1, 7, seed=1)]
    path = write_profile(tmp_path / "p.csv", points, "test")
    runs_file = runs_path(path)
    assert runs_file == tmp_path / "p.runs.csv"
    lines = runs_file.read_text().splitlines()
    assert lines[0] == ",".join(RUNS_COLUMNS) and len(lines) == 1 + 4 * 20 + 7
    model = load_profile(path)
    assert model.has_runs and not model.has_overhead
    for m in points:
        point = model.points[(m.variant, m.batch, float(m.cores))]
        assert point.p50_s <= point.p90_s <= point.latency_s
        for name in ("p50", "mean", "p90", "p99"):
            expected = getattr(m, f"{name}_s")
            assert point.statistic_s(name) == pytest.approx(expected, rel=1e-5)
            assert model.statistic_s(m.variant, m.batch, m.cores, name) == pytest.approx(expected, rel=1e-5)
        assert len(point.runs_s) == len(m.samples_s)  # the repeats, no more
        np.testing.assert_allclose(point.runs_s, m.samples_s, rtol=1e-5)
        # the statistics of the runs read back are the CSV's
        assert np.percentile(point.runs_s, 90) == pytest.approx(point.p90_s, rel=1e-4)
        assert point.overhead_s is None


def test_a_measured_overhead_is_written_in_every_row(tmp_path):
    points = [_noisy("v", b, 1, 5, seed=b, overhead_s=0.0012) for b in (1, 2)]
    path = write_profile(tmp_path / "p.csv", points, "test")
    model = load_profile(path)
    assert model.has_overhead and model.overhead_s("v", 1) == pytest.approx(0.0012)
    assert [p.overhead_s for p in model.points.values()] == [pytest.approx(0.0012)] * 2


def test_a_rewrite_replaces_both_files_together(tmp_path):
    path = tmp_path / "p.csv"
    write_profile(path, [_noisy("v", b, 1, 5, seed=b) for b in (1, 2, 4)], "first")
    write_profile(path, [_noisy("w", 8, 1, 3, seed=0)], "second")
    model = load_profile(path)  # no run of the first profile's points is left beside the second
    assert sorted(model.points) == [("w", 8, 1.0)] and len(model.runs_s("w", 8, 1)) == 3
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_failed_write_leaves_both_files_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "p.csv"
    write_profile(path, [_noisy("v", 1, 1, 5, seed=1)], "first")
    before = (path.read_text(), runs_path(path).read_text())

    def disk_full(target, text):
        raise OutputError(f"cannot write {target}: No space left on device")

    monkeypatch.setattr(results, "atomic_write_text", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        write_profile(path, [_noisy("w", 2, 1, 5, seed=2)], "second")
    assert (path.read_text(), runs_path(path).read_text()) == before
    assert not list(tmp_path.glob(".*tmp*"))


def test_runs_too_many_to_read_back_are_not_kept(tmp_path, monkeypatch):
    """Past the size a profile may read, the run times are left out (and an earlier run's removed), never cut."""
    path = tmp_path / "p.csv"
    write_profile(path, [_noisy("v", 1, 1, 5, seed=1)], "first")
    monkeypatch.setattr(results, "MAX_PROFILE_BYTES", 200)
    write_profile(path, [_noisy("v", 1, 1, 50, seed=1)], "second")
    assert not runs_path(path).exists()
    model = load_profile(path)
    assert not model.has_runs and model.points[("v", 1, 1.0)].p90_s is not None
    runs_path(path).write_text("a file of the user's\n")  # another kind of file under that name stays
    write_profile(path, [_noisy("v", 1, 1, 50, seed=1)], "third")
    assert runs_path(path).read_text() == "a file of the user's\n"


def test_a_run_times_file_is_told_by_its_header():
    assert is_runs_file(b"variant,batch,cores,run_s\nv,1,1,0.5\n") and is_runs_file(b"variant,batch,cores,run_s")
    assert not is_runs_file(b"variant,batch,cores,latency_s,source,kind\n") and not is_runs_file(b"hello")


CALIBRATED = ("resnet-tiny", "mlp")
"""The bundled profiles ``rlscale calibrate`` made (pipeline ``resnet-mlp``, issue 28); every other is p99-only."""
BUNDLED = sorted(
    p
    for p in (Path(rlscale.__file__).parent / "data" / "profiles").glob("*.csv")
    if not p.name.endswith(".runs.csv") and p.stem not in CALIBRATED
)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_the_bundled_six_column_profiles_load_unchanged(path):
    """Every bundled IPA-, Sponge- or InfAdapter-derived profile is p99-only (six columns, no run times): read as
    before, each statistic its p99."""
    assert path.read_text().splitlines()[0] == ",".join(PROFILE_COLUMNS) and not runs_path(path).exists()
    model = load_profile(path)
    assert not model.has_runs and not model.has_overhead
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(model.points) == len(rows)
    for row in rows:
        key = (row["variant"], int(row["batch"]), float(row["cores"]))
        point = model.points[key]
        assert point.latency_s == float(row["latency_s"]) and point.source == row["source"]
        assert (point.p50_s, point.mean_s, point.p90_s, point.overhead_s, point.runs_s) == (None,) * 5
        for name in ("p50", "mean", "p90", "p99"):
            assert model.statistic_s(*key, name) == float(row["latency_s"])
        assert model.noise(*key) is None and model.overhead_s(row["variant"], key[2]) == 0.0


@pytest.mark.parametrize("stem", CALIBRATED)
def test_the_bundled_calibrated_profiles_keep_their_runs(stem):
    """The calibrated pair's profiles: every column, the run times beside them, written by the one writer."""
    path = Path(rlscale.__file__).parent / "data" / "profiles" / f"{stem}.csv"
    assert path.read_text().splitlines()[0] == ",".join(PROFILE_COLUMNS + DISTRIBUTION_COLUMNS)
    model = load_profile(path)
    assert model.has_runs and model.has_overhead and runs_path(path).exists()
    assert all(p.source.startswith("rlscale calibrate") for p in model.points.values())
