"""``rlscale tune`` and ``--tuning`` (issue 14): tuning files written where the user says, read by ``ipa-tuned`` and
``hpa-tuned``; a pipeline without a tuning is one line naming the command that makes one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlscale.cli import main
from rlscale.errors import RlscaleError
from rlscale.evaluate.tune_headroom import tune
from rlscale.policies.registry import PolicyOptions, make_policy, tuned_headroom
from rlscale.policies.tunings import TUNED_PATH
from rlscale.spec import load_spec
from rlscale.workload import load_trace

SMALL = ["--windows", "2", "--window-s", "200", "--seed", "3"]


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> str:
    """A user's 40-minute trace: a slow wave between 5 and 35 rps."""
    path = tmp_path_factory.mktemp("traffic") / "ours.csv"
    rps = 20 + 15 * np.sin(np.arange(2400) / 200)
    path.write_text("rps\n" + "\n".join(str(int(x)) for x in rps) + "\n")
    return str(path)


@pytest.mark.slow
def test_tune_writes_the_report_of_the_sweep_into_out_and_merges(tmp_path, capfd, ours):
    out = tmp_path / "tunings" / "t.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"other": {"headroom": 1.3}}))
    assert main(["tune", "--pipeline", "video", "--traces", ours, *SMALL, "--out", str(out), "--json"]) == 0
    printed = json.loads(capfd.readouterr().out)  # --json: one document
    expected = tune("video", traces=ours, windows=2, window_s=200, seed=3)  # the same windows, the same sweep
    assert printed["headroom"] == expected["headroom"] and printed["sweep"] == expected["sweep"]
    assert printed["windows"] == expected["windows"] and all(w.startswith("ours.csv@") for w in expected["windows"])
    # training windows only: the last 15 % of the trace (360 s) stays out, as rlscale train holds it out
    assert all(int(w.split("@")[1]) + 200 <= 2400 - 360 for w in expected["windows"])
    table = json.loads(out.read_text())
    assert table["other"] == {"headroom": 1.3} and table["video"]["headroom"] == printed["headroom"]
    assert main(["tune", "--pipeline", "video", "--policy", "hpa", "--traces", ours, *SMALL, "--out", str(out)]) == 0
    assert "hpa target" in capfd.readouterr().out
    table = json.loads(out.read_text())
    assert table["video"]["headroom"] == printed["headroom"]  # IPA's tuning kept beside the HPA's
    assert table["video"]["hpa"]["target"] in (0.5, 0.6, 0.7, 0.8, 0.9)
    assert [r["target"] for r in table["video"]["hpa"]["sweep"]] == [0.5, 0.6, 0.7, 0.8, 0.9]
    best = max(table["video"]["hpa"]["sweep"], key=lambda r: r["mean_score"])
    assert table["video"]["hpa"]["target"] == best["target"]


def test_tuned_policies_read_the_tuning_file(tmp_path):
    spec = load_spec("video")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"video": {"headroom": 1.75, "hpa": {"target": 0.55}}}))
    trace = load_trace("steady_low")
    ipa = make_policy("ipa-tuned", spec, trace, PolicyOptions(tuning=str(path)))
    assert ipa.policy.headroom == 1.75 != tuned_headroom(spec)
    hpa = make_policy("hpa-tuned", spec, trace, PolicyOptions(tuning=str(path)))
    assert hpa.policy.target == 0.55 and hpa.name == "hpa-tuned"
    assert make_policy("hpa", spec, trace, PolicyOptions(hpa_target=0.6)).policy.target == 0.6
    assert make_policy("hpa", spec, trace).policy.target == 0.8  # Kubernetes' default, as before


def test_the_bundled_tunings_without_tuning_and_one_line_for_a_pipeline_without_one(tmp_path):
    spec = load_spec("video")
    bundled = json.loads(TUNED_PATH.read_text())
    assert tuned_headroom(spec) == bundled["video"]["headroom"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"sum-qa": {"headroom": 1.5}}))
    with pytest.raises(RlscaleError) as err:
        make_policy("ipa-tuned", spec, None, PolicyOptions(tuning=str(path)))
    assert "no tuned ipa headroom for pipeline 'video'" in str(err.value)
    assert f"rlscale tune --pipeline video --out {path}" in str(err.value)
    with pytest.raises(RlscaleError, match="--policy hpa"):
        make_policy("hpa-tuned", spec, None, PolicyOptions(tuning=str(path)))


def test_a_pipeline_of_ones_own_is_told_which_command_makes_its_tuning(tmp_path):
    import yaml

    from tests.conftest import base_spec_dict, write_profile

    write_profile(tmp_path)
    data = base_spec_dict()
    data["name"] = "speech"
    (tmp_path / "speech.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(str(tmp_path / "speech.yaml"))
    with pytest.raises(RlscaleError) as err:
        make_policy("ipa-tuned", spec, None)
    text = str(err.value)
    assert f"rlscale tune --pipeline {tmp_path / 'speech.yaml'} --out tuning.json" in text
    assert "then pass --tuning tuning.json" in text


@pytest.mark.slow
def test_python_m_tune_headroom_still_writes_its_file(tmp_path, capsys):
    from rlscale.evaluate import tune_headroom

    out = tmp_path / "t.json"
    assert tune_headroom.main(["--pipeline", "video", "--windows", "1", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text())["video"]["headroom"] == report["headroom"]
