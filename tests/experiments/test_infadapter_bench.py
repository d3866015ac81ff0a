"""InfAdapter's benchmark script: one run per policy through the registry, and the summary's reductions."""

from __future__ import annotations

import pytest

from experiments.guard_floor import run_floor
from experiments.infadapter_bench import label, main, run_one, summary


def test_summary_reports_infadapters_reductions_against_each_vpa_run():
    base = {"score": 0.5, "accuracy": 0.7, "reconfigurations": 1, "mixed_share": 0.0}
    records = [
        {**base, "policy": "infadapter", "seed": 0, "sla_violation_rate": 0.05, "cost_cores": 12.0, "mixed_share": 0.5},
        {**base, "policy": "vpa-152", "seed": 0, "sla_violation_rate": 0.50, "cost_cores": 16.0},
        {**base, "policy": "vpa-18", "seed": 0, "sla_violation_rate": 0.05, "cost_cores": 6.0},
    ]
    text = summary(records)
    assert "| vpa-152 | 90% | 25% |" in text  # 1 - 0.05/0.5, 1 - 12/16
    assert "| vpa-18 | 0% | -100% |" in text  # more cores than a cheap VPA run: a negative reduction, shown
    assert "| infadapter | 0.5000 | 5.00% | 0.7000 | 12.00 | 1.0 | 0.50 |" in text


def test_one_run_through_the_registry_and_the_vpa_label():
    assert label("vpa", "resnet152") == "vpa-152" and label("ipa", None) == "ipa"
    record = run_one(("ms-plus", None, 0, None))
    assert record["policy"] == "ms-plus" and 0 <= record["sla_violation_rate"] <= 1
    assert record["mixed_share"] == 0.0  # one pool at a time
    vpa = run_one(("vpa", "resnet18", 0, None))
    assert vpa["policy"] == "vpa-18" and vpa["accuracy"] == pytest.approx(0.69758)  # only resnet18 serves


def test_bad_seeds_is_one_line_and_exit_2(capsys):
    assert main(["--seeds", "0", "--out", "unused"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_guard_floor_runs_a_policy_behind_a_floor_and_without_a_guard():
    guarded = run_floor(("video", 2.0, 1.0, "steady_low", "drain", "ipa-hold", None))
    bare = run_floor(("video", 2.0, 1.0, "steady_low", "off", "ipa-hold", None))
    assert guarded["floor"] == "drain" and bare["floor"] == "off"
    assert guarded["cost_cores"] >= bare["cost_cores"] - 1e-9  # a guard only ever adds capacity here
