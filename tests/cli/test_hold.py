"""``ipa-hold`` in the registry and in ``rlscale tune``, and ``--load-scale`` (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlscale.cli import main
from rlscale.errors import RlscaleError, TraceError
from rlscale.evaluate.compare import run_comparison
from rlscale.evaluate.tune_headroom import merge, tune
from rlscale.policies.registry import LIVE_POLICIES, PolicyOptions, make_live_policy, make_policy
from rlscale.policies.tunings import HOLD_DEFAULTS, TUNED_PATH, tuned_hold
from rlscale.spec import load_spec
from rlscale.workload import Trace, load_trace, scale_trace

POLICY_FACTORY = "rlscale.policies.registry:make_policy"


def test_registry_builds_ipa_hold_from_the_bundled_tuning_and_the_flags():
    spec = load_spec("video")
    bundled = json.loads(TUNED_PATH.read_text())["video"]["ipa-hold"]
    trace = load_trace("steady_low")
    policy = make_policy("ipa-hold", spec, trace).policy
    assert (policy.headroom, policy.hold_delta) == (bundled["headroom"], bundled["delta"]) == tuned_hold(spec)
    assert policy.name == "ipa-hold" and policy.mode == "ipa"
    flagged = make_policy("ipa-hold", spec, trace, PolicyOptions(headroom=1.25, hold_delta=3.0)).policy
    assert (flagged.headroom, flagged.hold_delta) == (1.25, 3.0)
    one = make_policy("ipa-hold", spec, trace, PolicyOptions(hold_delta=0.0)).policy  # the other value stays tuned
    assert (one.headroom, one.hold_delta) == (bundled["headroom"], 0.0)
    assert "ipa-hold" in LIVE_POLICIES
    assert make_live_policy("ipa-hold", spec).policy.hold_delta == bundled["delta"]


def test_ipa_hold_reads_a_tuning_file_and_falls_back_only_without_one(tmp_path):
    import yaml

    from tests.conftest import base_spec_dict, write_profile

    spec = load_spec("video")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"video": {"headroom": 1.2, "ipa-hold": {"headroom": 1.3, "delta": 0.0}}}))
    policy = make_policy("ipa-hold", spec, None, PolicyOptions(tuning=str(path))).policy
    assert (policy.headroom, policy.hold_delta) == (1.3, 0.0)  # δ = 0 is a valid tuning
    path.write_text(json.dumps({"video": {"headroom": 1.2}}))  # a file of ipa only: say which command tunes ipa-hold
    with pytest.raises(RlscaleError, match="rlscale tune --pipeline video --policy ipa-hold"):
        make_policy("ipa-hold", spec, None, PolicyOptions(tuning=str(path)))
    write_profile(tmp_path)
    data = base_spec_dict()
    data["name"] = "speech"
    (tmp_path / "speech.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    own = load_spec(str(tmp_path / "speech.yaml"))  # no bundled tuning: the prototype's values
    assert tuned_hold(own) is None
    policy = make_policy("ipa-hold", own, None).policy
    assert (policy.headroom, policy.hold_delta) == HOLD_DEFAULTS


@pytest.mark.slow
def test_tune_ipa_hold_writes_both_values_and_keeps_the_other_tunings(tmp_path, capfd):
    out = tmp_path / "t.json"
    out.write_text(json.dumps({"video": {"headroom": 1.3, "hpa": {"target": 0.7}}}))
    pairs = [(1.0, 0.0), (1.0, 4.0), (1.2, 0.5)]
    report = tune("video", policy="ipa-hold", windows=1, window_s=300, seed=2, candidates=pairs)
    assert [(r["headroom"], r["delta"]) for r in report["sweep"]] == pairs
    best = max(report["sweep"], key=lambda r: r["mean_score"])
    assert (report["headroom"], report["delta"]) == (best["headroom"], best["delta"])
    assert len({r["mean_score"] for r in report["sweep"]}) > 1  # the candidates do differ
    table = merge(json.loads(out.read_text()), "video", "ipa-hold", report)
    assert table["video"]["headroom"] == 1.3 and table["video"]["hpa"] == {"target": 0.7}
    assert merge(table, "video", "ipa", {"headroom": 1.1})["video"]["ipa-hold"] == report  # kept by ipa's merge
    argv = ["tune", "--pipeline", "video", "--policy", "ipa-hold", "--windows", "1", "--window-s", "200"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "delta" in printed and "--policy ipa-hold --tuning" in printed
    written = json.loads(out.read_text())["video"]
    assert written["headroom"] == 1.3 and written["hpa"] == {"target": 0.7}
    assert len(written["ipa-hold"]["sweep"]) == 30  # the default grid: 5 headrooms x 6 deltas
    spec = load_spec("video")
    assert tuned_hold(spec, out) == (written["ipa-hold"]["headroom"], written["ipa-hold"]["delta"])


@pytest.mark.parametrize("bad", [[(1.0,)], [(0.0, 1.0)], [(1.0, -1.0)], [(1.0, float("nan"))], [1.0]])
def test_tune_refuses_a_bad_hold_candidate(bad):
    with pytest.raises(RlscaleError, match="ipa-hold candidate"):
        tune("video", policy="ipa-hold", windows=1, candidates=bad)


def test_scale_trace_rounds_half_up_and_names_the_scale():
    trace = Trace(name="t", rps=np.array([0.2, 0.25, 1.0, 3.0, 0.0]))
    doubled = scale_trace(trace, 2)
    assert doubled.rps.tolist() == [0.0, 1.0, 2.0, 6.0, 0.0]  # floor(x * 2 + 0.5)
    assert doubled.name == "t@x2" and scale_trace(trace, 0.5).name == "t@x0.5"
    assert scale_trace(trace, 1) is trace
    bursty = load_trace("bursty")
    assert scale_trace(bursty, 2).total_requests == 2 * bursty.total_requests  # integer counts: exact
    half = scale_trace(bursty, 0.5)
    assert abs(half.total_requests - 0.5 * bursty.total_requests) <= 0.5 * bursty.duration_s
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(TraceError, match="load scale"):
            scale_trace(bursty, bad)
    with pytest.raises(TraceError, match="limit"):
        scale_trace(bursty, 1e6)


def test_simulate_load_scale_doubles_the_requests_and_is_recorded(capfd):
    argv = ["simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "static-min", "--json"]
    assert main(argv) == 0
    one = json.loads(capfd.readouterr().out)
    assert main([*argv, "--load-scale", "2"]) == 0
    two = json.loads(capfd.readouterr().out)
    assert one["trace"] == "steady_low" and one["load_scale"] == 1.0
    assert two["trace"] == "steady_low@x2" and two["load_scale"] == 2.0
    assert two["requests"] == 2 * one["requests"]


@pytest.mark.slow
def test_compare_names_the_scaled_traces_and_resumes_only_at_the_same_scale(tmp_path):
    out = tmp_path / "cmp"
    comp = run_comparison(
        "video", ["steady_low"], ["static-min"], make_policy=POLICY_FACTORY, out=out, timelines=True, load_scale=2
    )
    (record,) = comp.records
    assert record["trace"] == "steady_low@x2" and record["load_scale"] == 2
    assert record["requests"] == 2 * load_trace("steady_low").total_requests
    assert comp.traces == ["steady_low@x2"]
    assert "| steady_low@x2 | static-min |" in (out / "results.md").read_text()
    assert (out / "timeline-steady_low-x2-static-min.png").exists()
    assert json.loads((out / "settings.json").read_text())["load_scale"] == 2
    again = run_comparison(
        "video", ["steady_low"], ["static-min"], make_policy=POLICY_FACTORY, out=out, resume=True, load_scale=2
    )
    assert again.records == comp.records  # nothing run again
    with pytest.raises(RlscaleError, match="load_scale"):
        run_comparison("video", ["steady_low"], ["static-min"], make_policy=POLICY_FACTORY, out=out, resume=True)
