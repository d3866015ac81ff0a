"""The data-prep script that derives the bundled profiles and pipeline specs (experiments/data_prep/).

The bundled files are reproduced byte for byte from the reference data in ../shared/data when it is there; the
pure pieces (the core-budget sizing, the scale calibration, the monotone repair, fragment selection) are checked
on small inputs.
"""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import pytest

from experiments.data_prep import derive_profiles as dp
from experiments.data_prep import sponge_data
from rlscale.spec import data_dir

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the reference data is not at {SHARED}")
def test_the_bundled_profiles_and_pipelines_are_reproduced_from_the_reference_data(tmp_path, capsys):
    dp.main(["--shared", str(SHARED), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    sponge_data.main(["--shared", str(SHARED), "--out", str(tmp_path)])  # Sponge's pipeline and bandwidth trace
    # the calibrated pair is rlscale's own measurement (experiments/data_prep/bundle_calibrated.py), not derived
    calibrated = {"resnet-mlp.yaml", "resnet-tiny.csv", "resnet-tiny.runs.csv", "mlp.csv", "mlp.runs.csv"}
    for folder in ("profiles", "pipelines", "bandwidth"):
        made = sorted(p.name for p in (tmp_path / folder).iterdir())
        pattern = "*.yaml" if folder == "pipelines" else "*.csv"
        bundled = sorted(p.name for p in (data_dir() / folder).glob(pattern) if p.name not in calibrated)
        assert made == bundled, folder
        for name in made:
            assert (tmp_path / folder / name).read_text() == (data_dir() / folder / name).read_text(), name
    assert "budget video: min cores at 34 RPS = " in printed
    capacity = "infadapter_capacity.csv"
    assert (tmp_path / capacity).read_text() == (data_dir() / capacity).read_text()


# ------------------------------------------------------------------------------------- core budget sizing

TOY = dp.Task("toy", None, ("small", "big"), (1, 2, 4), (1, 2, 4), "accuracy (%)")


def _toy_profile() -> dict[dp.Key, dp.Point]:
    """Latency ``a_v * (0.02 b / c + 0.01 b + 0.005)`` seconds: batching and cores both help, with diminishing
    returns; the big variant is 3x slower."""
    return {
        (v, b, c): dp.Point(a * (0.02 * b / c + 0.01 * b + 0.005), "test", "measured")
        for (v, a), b, c in product((("small", 1.0), ("big", 3.0)), TOY.batches, TOY.cores)
    }


def _toy_spec(sla_s: float, max_replicas: int = 30) -> dict:
    stage = {
        "task": "toy",
        "metric": TOY.metric,
        "batch_sizes": list(TOY.batches),
        "cores": list(TOY.cores),
        "min_replicas": 1,
        "max_replicas": max_replicas,
        "variants": [
            {"name": "small", "accuracy": 0.5, "startup_s": 5},
            {"name": "big", "accuracy": 0.7, "startup_s": 9},
        ],
    }
    return {
        "name": "toy",
        "description": "two stages of one toy task",
        "sla_s": sla_s,
        "drop_limit_s": 2 * sla_s,
        "interval_s": 10.0,
        "batch_timeout_s": 1.0,
        "core_budget": 0,
        "objective": {"alpha": 1.0, "beta": 0.01, "gamma": 0.0, "accuracy_method": "sum"},
        "stages": [{**stage, "name": "first"}, {**stage, "name": "second"}],
    }


def _brute_force_min_cores(points, variants, sla_s: float, load_rps: float, max_replicas: int) -> int | None:
    """IPA's sizing by enumeration: stage latency ``l + (b - 1) / load``, replicas ``ceil(load / (b / l))``."""
    per_stage = []
    for v in variants:
        opts = []
        for b, c in product(TOY.batches, TOY.cores):
            lat = points[(v, b, c)].latency_s
            n = math.ceil(load_rps / (b / lat) - 1e-9)
            if n <= max_replicas:
                opts.append((n * c, lat + (b - 1) / load_rps))
        per_stage.append(opts)
    fits = [sum(o[0] for o in combo) for combo in product(*per_stage) if sum(o[1] for o in combo) <= sla_s + 1e-9]
    return min(fits) if fits else None


@pytest.mark.parametrize(
    ("variants", "sla_s", "load_rps"),
    [
        (["small", "small"], 1.0, 34.0),
        (["small", "big"], 1.0, 34.0),
        (["big", "big"], 0.6, 20.0),
        (["small", "big"], 0.3, 5.0),
        (["big", "small"], 2.0, 80.0),
    ],
)
def test_min_cores_is_the_fewest_cores_that_serve_the_load_within_the_sla(tmp_path, variants, sla_s, load_rps):
    points = _toy_profile()
    (tmp_path / "profiles").mkdir()
    dp.write_profile(tmp_path / "profiles" / "toy.csv", TOY, points)
    need, plan = dp.min_cores(_toy_spec(sla_s), tmp_path / "profiles", variants, load_rps)
    assert need == _brute_force_min_cores(points, variants, sla_s, load_rps, 30)
    assert sum(c * n for _v, _b, c, n in plan) == need
    assert [v for v, _b, _c, _n in plan] == variants
    latency = sum(points[(v, b, c)].latency_s + (b - 1) / load_rps for v, b, c, _n in plan)
    assert latency <= sla_s + 1e-9
    assert all(n * b / points[(v, b, c)].latency_s >= load_rps - 1e-9 for v, b, c, n in plan)


def test_min_cores_refuses_a_load_nothing_serves(tmp_path):
    (tmp_path / "profiles").mkdir()
    dp.write_profile(tmp_path / "profiles" / "toy.csv", TOY, _toy_profile())
    with pytest.raises(SystemExit, match="cannot serve 500 rps"):
        dp.min_cores(_toy_spec(1.0, max_replicas=3), tmp_path / "profiles", ["big", "big"], 500.0)


# ------------------------------------------------------------------------------------- pure pieces


def test_calibrate_scales_keeps_anchored_variants_and_interpolates_the_others_as_a_power_law():
    size = {"a": 1.0, "b": 4.0, "c": 16.0, "d": 64.0}
    anchors = {"a": [(2.0, 1.0), (8.0, 2.0)], "b": [], "c": [(32.0, 2.0)], "d": []}  # a: geomean(2, 4)
    scales, p = dp.calibrate_scales(anchors, size, ("a", "b", "c", "d"))
    assert scales["a"] == pytest.approx(math.sqrt(8.0)) and scales["c"] == pytest.approx(16.0)
    assert p == pytest.approx(math.log(16.0 / math.sqrt(8.0)) / math.log(16.0))  # the line through a and c
    assert scales["b"] == pytest.approx(math.sqrt(8.0) * 4.0**p)  # between its calibrated neighbours
    assert scales["d"] == pytest.approx(16.0 * 4.0**p)  # beyond them: the fitted exponent


def test_repair_makes_derived_points_monotone_and_never_moves_measured_ones():
    task = dp.Task("toy", None, ("small", "big"), (1, 2), (1, 2), "accuracy (%)")
    points = {
        ("small", 1, 1): dp.Point(1.0, "m", "measured"),
        ("small", 2, 1): dp.Point(0.8, "d", "derived"),  # faster at a bigger batch: not allowed
        ("small", 1, 2): dp.Point(1.2, "d", "derived"),  # slower with more cores: not allowed
        ("small", 2, 2): dp.Point(1.0, "d", "derived"),
        ("big", 1, 1): dp.Point(0.9, "d", "derived"),  # the big variant faster than the small one
        ("big", 2, 1): dp.Point(3.0, "m", "measured"),
        ("big", 1, 2): dp.Point(1.5, "d", "derived"),
        ("big", 2, 2): dp.Point(2.0, "d", "derived"),
    }
    changed, left = dp.repair(points, task)
    assert changed >= 3 and left == []
    assert points[("small", 1, 1)].latency_s == pytest.approx(1.0) and points[("big", 2, 1)].latency_s == pytest.approx(
        3.0
    )
    tol = 1e-6
    for v, c in product(task.variants, task.cores):
        l1, l2 = points[(v, 1, c)].latency_s, points[(v, 2, c)].latency_s
        assert l1 <= l2 * (1 + tol) and 2 / l2 >= (1 / l1) * (1 - tol)  # latency and throughput up with batch
    for v, b in product(task.variants, task.batches):
        l1, l2 = points[(v, b, 1)].latency_s, points[(v, b, 2)].latency_s
        assert l2 <= l1 * (1 + tol) and 2 * l2 >= l1 * (1 - tol)  # cores help, never super-linearly
    for b, c in product(task.batches, task.cores):
        assert points[("small", b, c)].latency_s <= points[("big", b, c)].latency_s * (1 + tol)
    moved = [k for k, p in points.items() if p.source.endswith("+monotone-repair")]
    assert len(moved) == changed and all(points[k].kind == "derived" for k in moved)


def _fragment(series=1, load=20.0, batch=1, cores=1, p99=1.0, avg=0.5, variant="v") -> dp.Fragment:
    return dp.Fragment(series, "0", "nb.ipynb", "node", variant, batch, cores, load, p99, avg)


def test_fragments_need_load_and_a_batch_that_fills_within_the_window():
    assert dp.usable(_fragment(load=10.0, batch=8))
    assert not dp.usable(_fragment(load=5.0))  # a p99 of a few dozen samples
    assert not dp.usable(_fragment(load=10.0, batch=16))  # 16 requests do not arrive within 1 s at 10 rps
    ratio, n = dp.p99_over_avg([_fragment(p99=3.0, avg=1.0), _fragment(p99=2.0, avg=1.0), _fragment(load=1.0)])
    assert (ratio, n) == (2.5, 2)


def test_pick_fragments_prefers_the_runs_series_then_the_profiling_load():
    task = dp.Task("toy", "node", ("v",), (1,), (1,), "accuracy (%)", run_series=(7,), profiling_load=20.0)
    chosen = dp.pick_fragments(
        task,
        [
            _fragment(series=3, load=20.0, p99=1.0),
            _fragment(series=7, load=40.0, p99=2.0),
            _fragment(series=7, load=25.0, p99=3.0),
        ],
        "p99",
    )
    assert chosen[("v", 1, 1)].p99 == 3.0  # series 7 (the runs'), load 25 nearest to 20


def test_full_variant_name_undoes_the_tables_truncation():
    assert dp.full_variant_name("dinalzein-xlm-roberta-base-finetuned-language-...") == dp.LI[0]
    assert dp.full_variant_name("yolov5n") == "yolov5n"
