"""How each stage ran over a run, in the record: most-used variant and batch, time-weighted cores and replicas."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.cli.output import run_notes
from rlscale.sim.metrics import stage_config_summary
from rlscale.types import PipelineConfig, StageConfig


def _configs(*stages: tuple[str, int, int, int]) -> list[PipelineConfig]:
    return [PipelineConfig((StageConfig.one(v, b, n, c),)) for v, b, n, c in stages]


def test_modes_and_means_are_weighted_by_time():
    configs = _configs(("small", 1, 2, 1), ("small", 1, 2, 1), ("big", 4, 6, 3))
    equal = stage_config_summary(configs, 0)
    assert (equal["variant_mode"], equal["batch_mode"]) == ("small", 1)
    assert equal["replicas_mean"] == pytest.approx(10 / 3) and equal["cores_mean"] == pytest.approx(5 / 3)
    assert equal["allocated_cores_mean"] == pytest.approx((2 + 2 + 18) / 3)
    # the last configuration held five times as long: it is the one in force longest
    weighted = stage_config_summary(configs, 0, [10.0, 10.0, 50.0])
    assert (weighted["variant_mode"], weighted["batch_mode"]) == ("big", 4)
    assert weighted["replicas_mean"] == pytest.approx((20 + 20 + 300) / 70)


def test_a_tie_goes_to_the_configuration_in_force_last_and_no_configs_are_zero():
    assert stage_config_summary(_configs(("a", 1, 1, 1), ("b", 2, 1, 1)), 0)["variant_mode"] == "b"
    empty = stage_config_summary([], 0)
    assert empty["variant_mode"] is None and empty["cores_mean"] == 0.0


def test_the_run_record_has_every_stages_configuration(tmp_path):
    from rlscale.policies.registry import make_policy
    from rlscale.sim.runner import run_episode
    from rlscale.spec import load_spec
    from rlscale.workload import Trace

    spec = load_spec("video")
    trace = Trace("steps", np.concatenate([np.full(60, 5.0), np.full(60, 25.0)]))
    result = run_episode(spec, trace, make_policy("ipa", spec, trace, None))
    assert result.record["in_flight_share"] == result.record["in_flight"] / result.record["requests"]
    for s, stage in enumerate(result.record["stages"]):
        used = [c.stages[s] for c in result.configs]
        assert stage["variant_mode"] in {sc.variant for sc in used}
        assert stage["batch_mode"] in {sc.batch for sc in used}
        assert min(sc.cores for sc in used) <= stage["cores_mean"] <= max(sc.cores for sc in used)
        assert stage["replicas_mean"] == pytest.approx(np.mean([sc.replicas for sc in used]))


def test_run_notes_say_what_was_left_queued_and_budget_breaches():
    assert run_notes({"in_flight": 0, "requests": 10}) == []
    (note,) = run_notes({"in_flight": 10226, "in_flight_share": 0.25, "requests": 40904})
    assert "10226 requests (25.0% of arrivals) still queued at the end" in note
    notes = run_notes({"in_flight": 0, "budget_breaches": 3})
    assert len(notes) == 1 and "3 budget breach" in notes[0]
    assert run_notes({"in_flight": 0, "budget_breaches": 0, "sla_violation_rate": 0.01}) == []
    (late,) = run_notes({"in_flight": 0, "sla_violation_rate": 0.778})
    assert "77.80% of requests late or dropped" in late
