"""The planned latency on a calibrated profile (`rlscale.model.calibrated_latency_s`): queueing, the serving overhead
and the delay, against the simulator running the same profile; a p99-only profile plans exactly as IPA did."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.model import calibrated_latency_s, is_calibrated, option_table, stage_latency_s
from rlscale.spec import load_spec
from tests.sim.test_service_model import make_spec, one, run, write_profile

RUNS = {b: [float(x) for x in np.linspace(0.8, 1.2, 21) * (0.002 + 0.0006 * (b - 1))] for b in (1, 2, 4)}


def _spec(tmp_path, overhead=0.0005, delay=0.001, batches=(1, 2, 4), timeout_s=0.0):
    points = {b: {"p99": max(r), "mean": float(np.mean(r)), "overhead": overhead} for b, r in RUNS.items()}
    name = write_profile(tmp_path, points, RUNS)
    if delay:
        path = tmp_path / name
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0] + ",delay_s"] + [f"{line},{delay!r}" for line in lines[1:]]) + "\n")
    return make_spec(tmp_path, [name], batches=batches, timeout_s=timeout_s)


def test_a_p99_profile_plans_as_ipa():
    stage = load_spec("video").stages[0]
    v = stage.variants[0].name
    assert not is_calibrated(stage, v) and option_table(stage).calibrated_rows.size == 0
    for b, load in ((1, 5.0), (4, 20.0)):
        ipa = stage.latency.latency_s(v, b, 2) + (b - 1) / load
        assert stage_latency_s(stage, v, b, 2, load) == pytest.approx(ipa)


def test_planned_latency_grows_with_load_and_is_infinite_at_saturation(tmp_path):
    stage = _spec(tmp_path).stages[0]
    assert is_calibrated(stage, "v")
    # work a request at batch 1: 2 ms + 0.5 ms overhead: saturation at 400 rps
    planned = [calibrated_latency_s(stage, "v", 1, 1, load, replicas=1, timeout_s=0.0) for load in (10, 200, 350)]
    assert planned == sorted(planned) and planned[0] >= 0.0024 + 0.0005 + 0.001
    assert math.isinf(calibrated_latency_s(stage, "v", 1, 1, 450.0, replicas=1, timeout_s=0.0))
    # a batcher that may take up to 4 keeps up at 450 rps (the work a request at batch 2 is 1.3 + 0.5 ms)
    assert math.isfinite(calibrated_latency_s(stage, "v", 4, 1, 450.0, replicas=1, timeout_s=0.0))
    # two replicas share the load; IPA's full-batch wait where the batcher waits for full batches
    assert calibrated_latency_s(stage, "v", 1, 1, 450.0, replicas=2, timeout_s=0.0) < planned[-1]
    full = calibrated_latency_s(stage, "v", 4, 1, 40.0, replicas=1)
    assert full >= 3 / 40.0


@pytest.mark.parametrize("rps", [100.0, 250.0, 330.0])
def test_planned_p99_is_at_least_the_simulated_one_and_not_far_above(tmp_path, rps):
    """Poisson load on one replica at batch 1 (timeout 0): the plan errs high, within 2x of the simulator's p99."""
    spec = _spec(tmp_path)
    sim = run(spec, rps, 400, one(batch=1), seed=3)
    o = sim.outcomes
    lat = o.finish_s[0] - o.stage_in_s[0]
    simulated = float(np.nanpercentile(lat, 99))
    planned = stage_latency_s(spec.stages[0], "v", 1, 1, rps, replicas=1, timeout_s=0.0)
    assert simulated <= planned <= 2.0 * simulated, (simulated, planned)


def test_the_option_table_plans_calibrated_rows_with_their_replicas(tmp_path):
    stage = _spec(tmp_path).stages[0]
    table = option_table(stage)
    assert table.calibrated_rows.size == len(table.rows)
    n = np.ones(len(table.rows))
    latency = table.planned_latency_s(200.0, n)
    for i, (v, b, c) in enumerate(table.rows):
        assert latency[i] == pytest.approx(calibrated_latency_s(stage, v, b, c, 200.0, 1))
