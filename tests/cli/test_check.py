"""``rlscale check`` (issue 14): each rule fires on the mistake it names and not on the bundled pipelines; exit 0
when the SLA can be met, 1 when it cannot, 2 on bad input; ``--json`` is one document; ``pipelines --spec``
prints the same problems as warnings; ``simulate`` prints a repeated warning once, with a count."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from rlscale.cli.check import check, spec_problems
from rlscale.cli.parser import main
from rlscale.cli.simulate import collapsed_warnings
from rlscale.spec import bundled_pipelines, load_spec
from tests.conftest import PROFILE_ROWS, base_spec_dict, write_profile


def rules(report_or_problems) -> set[str]:
    problems = report_or_problems["problems"] if isinstance(report_or_problems, dict) else report_or_problems
    return {p["rule"] if isinstance(p, dict) else p.rule for p in problems}


@pytest.mark.parametrize("name", bundled_pipelines())
def test_bundled_pipelines_have_no_problem(name):
    assert spec_problems(load_spec(name)) == []


def test_sla_below_the_fastest_chain_is_an_error():
    spec = load_spec("video", ["sla_s=0.02"])  # the fastest chain is ~0.034 s
    report = check(spec)
    assert not report["meets_sla"] and not report["ok"]
    assert rules(report) == {"sla-below-fastest-chain"}
    assert report["fastest_chain_s"] > 0.02
    # the chain is the sum of each stage's fastest option
    assert report["fastest_chain_s"] == pytest.approx(sum(c["latency_s"] for c in report["fastest_chain"]))


def _toy(tmp_path, rows, **changes):
    write_profile(tmp_path, rows)
    data = base_spec_dict()
    data.update(changes)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_profile_latencies_in_milliseconds_are_flagged_per_stage(tmp_path):
    ms = [(v, b, c, lat * 1000) for v, b, c, lat in PROFILE_ROWS]
    spec = _toy(tmp_path, ms, sla_s=4.0, drop_limit_s=8.0)
    problems = spec_problems(spec)
    assert rules(problems) == {"latency-looks-like-ms", "sla-below-fastest-chain"}
    assert sum(p.rule == "latency-looks-like-ms" for p in problems) == 2  # one line per stage, not per row


def test_latencies_in_seconds_are_not_flagged(tmp_path):
    spec = _toy(tmp_path, PROFILE_ROWS, sla_s=4.0, drop_limit_s=8.0)
    assert spec_problems(spec) == []


def test_tiny_sla_is_flagged(tmp_path):
    fast = [(v, b, c, lat / 100) for v, b, c, lat in PROFILE_ROWS]  # a chain of well under 10 ms
    spec = _toy(tmp_path, fast, sla_s=0.01, drop_limit_s=1.0)
    assert rules(spec_problems(spec)) == {"sla-tiny"}
    assert rules(spec_problems(_toy(tmp_path, fast, sla_s=0.02, drop_limit_s=1.0))) == set()


def test_sla_in_milliseconds_is_flagged():
    assert rules(spec_problems(load_spec("video", ["sla_s=700", "drop_limit_s=1000"]))) == {"sla-looks-like-ms"}
    assert rules(spec_problems(load_spec("video", ["sla_s=60", "drop_limit_s=100"]))) == set()


def test_startup_in_milliseconds_is_flagged():
    spec = load_spec("video", ["stages.0.variants.1.startup_s=644"])
    problems = spec_problems(spec)
    assert rules(problems) == {"startup-looks-like-ms"}
    assert "yolov5s" in problems[0].message


def test_budget_too_small_at_the_load_is_an_error():
    spec = load_spec("video", ["core_budget=5"])
    report = check(spec, 300.0, "--rps")
    assert rules(report) == {"budget-too-small"} and not report["ok"]
    assert report["min_cores"] > 5 and report["fits_budget"] is False
    # the same spec at a load the budget carries is fine, and needs at most the budget
    low = check(spec, 10.0, "--rps")
    assert low["ok"] and low["fits_budget"] and low["min_cores"] <= 5
    # the planner's minimum is a minimum: more load never needs fewer cores
    assert check(spec, 20.0)["min_cores"] >= low["min_cores"]


def test_load_beyond_any_capacity_is_an_error():
    report = check(load_spec("video"), 1e6, "--rps")
    assert rules(report) == {"load-beyond-capacity"} and report["fits_budget"] is False


def test_cli_exit_codes_and_json(capfd):
    assert main(["check", "--spec", "video", "--trace", "bursty"]) == 0
    out = capfd.readouterr().out
    assert "can meet the SLA" in out and "needs" in out
    assert main(["check", "--spec", "video", "--rps", "300", "--set", "core_budget=5", "--json"]) == 1
    doc = json.loads(capfd.readouterr().out)
    assert doc["ok"] is False and rules(doc) == {"budget-too-small"} and doc["load_source"] == "--rps"
    assert main(["check", "--spec", "video", "--set", "sla_s=0.02"]) == 1
    assert "CANNOT" in capfd.readouterr().out
    assert main(["check", "--spec", "no-such-pipeline"]) == 2
    assert "error" in capfd.readouterr().err


def test_pipelines_prints_the_problems_as_warnings(capfd):
    assert main(["pipelines", "--spec", "video", "--set", "sla_s=0.02", "--json"]) == 0
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "sla-below-fastest-chain" in lines[0]
    json.loads(captured.out)
    assert main(["pipelines", "--spec", "video", "--json"]) == 0
    assert capfd.readouterr().err == ""


def test_repeated_warnings_collapse_to_one_line_with_a_count(caplog):
    log = logging.getLogger("rlscale.test")
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with collapsed_warnings():
            for t in range(50):
                log.warning("t=%ds: no configuration fits", t)
            log.warning("something else")
    finally:
        root.removeHandler(handler)
    assert records == ["t=0s: no configuration fits", "something else", "49 more like: t=0s: no configuration fits"]
