"""The agent's grid (`experiments.agent_grid`): the criteria it reports, and a small real grid end to end."""

from __future__ import annotations

import json

import pytest

from experiments import agent_grid
from experiments.agent_grid import criteria, main


def rec(alpha, scale, trace, policy, score, viol=0.0):
    return {
        "alpha": alpha,
        "load_scale": scale,
        "trace": trace,
        "policy": policy,
        "score": score,
        "sla_violation_rate": viol,
        "accuracy": 0.3,
        "cost_cores": 5.0,
    }


def grid(ppo_scores, ipa=0.0, tuned=0.0, hold=0.0, ppo_viol=0.0):
    out = []
    for t, s in zip("abcd", ppo_scores, strict=True):
        out += [
            rec(2, 1, t, "ppo", s, ppo_viol),
            rec(2, 1, t, "ipa", ipa),
            rec(2, 1, t, "ipa-tuned", tuned),
            rec(2, 1, t, "ipa-hold", hold),
        ]
    return out


def test_three_of_four_windows_and_half_the_cells_pass():
    c = criteria(grid([1, 1, 1, -1]))
    assert c["settings"][0]["wins_vs_ipa"] == 3 and c["passes"]
    assert c["cells_above"] == {"ipa": 0.75, "ipa-tuned": 0.75, "ipa-hold": 0.75}


def test_two_wins_or_violations_or_losing_to_hold_fail():
    assert not criteria(grid([1, 1, -1, -1]))["passes"]
    assert not criteria(grid([1, 1, 1, 1], ppo_viol=0.006))["passes"]  # 0.6 point above ipa's violations
    assert criteria(grid([1, 1, 1, 1], ppo_viol=0.005))["passes"]
    assert not criteria(grid([1, 1, 1, 1], hold=2.0))["passes"]


@pytest.mark.slow
def test_a_small_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "g"
    code = main(
        [
            "--pipeline",
            "video",
            "--alphas",
            "2,30",
            "--load-scales",
            "2",
            "--traces",
            "steady_low",
            "--policies",
            "ipa,oracle",
            "--out",
            str(out),
            "--executor",
            "serial",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["alpha"], r["policy"]) for r in records} == {(2, "ipa"), (2, "oracle"), (30, "ipa"), (30, "oracle")}
    assert all(r["load_scale"] == 2 for r in records)
    by = {(r["alpha"], r["policy"]): r for r in records}
    # a higher alpha never buys less accuracy from the same planner, and the score counts alpha
    assert by[30, "oracle"]["accuracy"] >= by[2, "oracle"]["accuracy"]
    assert by[30, "oracle"]["score"] > by[2, "oracle"]["score"]
    assert "| 30 | x2 | oracle |" in capsys.readouterr().out
    # twice the load: more requests than the window at its own load
    single = agent_grid.run_cell(agent_grid.Cell("video", 2.0, 1.0, "steady_low", "ipa"))
    assert by[2, "ipa"]["cost_cores"] > single["cost_cores"]


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--pipeline", "nope", "--out", str(tmp_path / "x"), "--executor", "serial"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
