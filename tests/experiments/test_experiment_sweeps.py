"""The tuning search (`rlscale.evaluate.tune_headroom`) and the solver check (``experiments.verify_solvers``) run their
independent runs on an executor of `rlscale.evaluate.sweep`: the report is the same whatever the executor, and bad
input is one line and exit 2."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from experiments import verify_solvers
from experiments.verify_solvers import Episode, Problem, verify
from rlscale.evaluate import tune_headroom
from rlscale.evaluate.sweep import EXECUTORS
from rlscale.evaluate.tune_headroom import WindowRun, tune
from rlscale.workload import TrainingSampler

SMALL_TUNE = {"windows": 2, "window_s": 200, "candidates": (1.0, 1.5), "seed": 3}


def _trace(path, levels: list[float]) -> str:
    rps = np.concatenate([np.full(100, level) for level in levels])
    path.write_text("rps\n" + "\n".join(map(str, rps)) + "\n")
    return str(path)


@pytest.fixture
def short_traces(tmp_path) -> list[str]:
    return [_trace(tmp_path / "ramp.csv", [5, 25, 8]), _trace(tmp_path / "spike.csv", [3, 40, 3])]


@pytest.mark.slow
def test_tuning_gives_the_same_report_on_serial_and_process():
    serial = tune("video", executor="serial", **SMALL_TUNE)
    process = tune("video", executor="process", workers=2, **SMALL_TUNE)
    assert json.dumps(process) == json.dumps(serial)  # same keys, same order, same values
    # the windows are drawn in the caller, as before: the sampler's first draws for the seed
    sampler = TrainingSampler(np.random.default_rng(3), window_s=200, damping=8)
    assert serial["windows"] == [sampler.sample().name for _ in range(2)]
    assert [row["headroom"] for row in serial["sweep"]] == [1.0, 1.5]


def test_a_tuning_run_is_a_picklable_item_and_pure():
    item = WindowRun("video", "train@0", tuple(float(x) for x in np.full(120, 6.0)), 1.2, 0)
    assert pickle.loads(pickle.dumps(item)) == item and hash(item)
    first, again = tune_headroom.run(item), tune_headroom.run(item)
    assert first == again and set(first) == {"score", "sla_violation_rate"}


@pytest.mark.slow
def test_verifying_gives_the_same_report_and_problem_order_on_serial_and_process(short_traces):
    kwargs = {"policies": ("ipa", "rim"), "solvers": ("highs",)}
    serial = verify("video", short_traces, executor="serial", **kwargs)
    process = verify("video", short_traces, executor="process", workers=2, **kwargs)
    assert json.dumps(process) == json.dumps(serial)
    assert serial["distinct_problems"] > 0 and serial["mismatches"] == []
    # a tolerance below 0 makes every feasible problem a "mismatch": the list shows the problems' order, which
    # is the order of first appearance, trace-major and policy-minor, whatever the executor
    order = {"tolerance": -1.0, "max_decisions": 30, **kwargs}
    serial = verify("video", short_traces, executor="serial", **order)
    process = verify("video", short_traces, executor="process", workers=2, **order)
    assert process["mismatches"] == serial["mismatches"]
    first_seen: dict = {}
    for t in short_traces:
        for p in kwargs["policies"]:
            plans, _ = verify_solvers.run_episode_plans(Episode("video", t, p))
            for key, dp in plans:
                first_seen.setdefault(key, dp)
    expected = [(mode, load) for (mode, load, _rim), dp in list(first_seen.items())[:30] if dp is not None]
    assert [(m["mode"], m["load_rps"]) for m in serial["mismatches"]] == expected
    assert len(expected) == 30 - serial["infeasible_problems"] > 0


def test_the_sweep_items_of_verify_are_picklable():
    items = [Episode("video", "bursty", "ipa"), Problem("video", "rim", 12.5, ((1, 2), (2, 1)), ("cbc", "highs"))]
    assert [pickle.loads(pickle.dumps(i)) for i in items] == items


def _one_line_exit_2(capsys, call) -> str:
    try:
        code = call()
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


BAD_EXECUTOR_FLAGS = [
    (["--executor", "dask"], "invalid choice"),
    (["--workers", "0"], "--workers"),
    (["--workers", "257"], "--workers"),
    (["--workers", "two"], "--workers"),
    (["--executor", "process", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--pipeline", "nosuch"], "nosuch"),
]


@pytest.mark.parametrize(
    ("flags", "fragment"), BAD_EXECUTOR_FLAGS, ids=lambda v: "_".join(v) if isinstance(v, list) else ""
)
def test_tune_refuses_bad_input_with_one_line(flags, fragment, capsys, tmp_path):
    out = tmp_path / "tuned.json"
    line = _one_line_exit_2(capsys, lambda: tune_headroom.main(["--windows", "1", "--out", str(out), *flags]))
    assert fragment in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [*BAD_EXECUTOR_FLAGS, (["--traces", "nosuch"], "unknown trace"), (["--traces", ","], "--traces")],
    ids=lambda v: "_".join(v) if isinstance(v, list) else "",
)
def test_verify_refuses_bad_input_with_one_line(flags, fragment, capsys):
    assert fragment in _one_line_exit_2(capsys, lambda: verify_solvers.main(flags))


def test_tune_refuses_an_out_file_it_cannot_merge_into(capsys, tmp_path):
    out = tmp_path / "tuned.json"
    out.write_text("[1, 2]\n")
    assert "not a JSON object" in _one_line_exit_2(capsys, lambda: tune_headroom.main(["--out", str(out)]))
    assert out.read_text() == "[1, 2]\n"


def test_the_ray_executor_is_selectable(capsys, tmp_path):
    """``--executor ray`` is accepted (no Ray starts: the bad pipeline fails first)."""
    assert "ray" in EXECUTORS
    out = tmp_path / "tuned.json"
    for main, extra in ((tune_headroom.main, ["--out", str(out)]), (verify_solvers.main, [])):
        line = _one_line_exit_2(capsys, lambda m=main, e=extra: m(["--executor", "ray", "--pipeline", "nosuch", *e]))
        assert "nosuch" in line


@pytest.mark.parametrize("module", ["rlscale.evaluate.tune_headroom", "experiments.verify_solvers"])
@pytest.mark.subprocess
def test_the_scripts_refuse_a_bad_executor_with_one_line_and_exit_2(module, tmp_path):
    out = ["--out", str(tmp_path / "x.json")] if module.endswith("tune_headroom") else []
    result = subprocess.run(
        [sys.executable, "-m", module, "--executor", "dask", *out],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_tuning_ranks_by_the_spec_s_sla_mode(tmp_path):
    """Priced: the best mean score wins; hard: the lowest mean violation rate wins, the score breaks ties."""
    from rlscale.evaluate.tune_headroom import tune
    from rlscale.model import rank_key
    from rlscale.spec import dump_spec, load_spec

    hard = tmp_path / "hard.yaml"
    hard.write_text(dump_spec(load_spec("video", ["objective.sla_mode=hard"]), "test"))
    kwargs = dict(policy="hpa", windows=2, window_s=300, seed=3)
    for pipeline, mode in (("video", "priced"), (str(hard), "hard")):
        report = tune(pipeline, **kwargs)
        best = min(report["sweep"], key=lambda r: rank_key(mode, r["mean_violation_rate"], r["mean_score"]))
        assert report["target"] == best["target"]
    priced, hard_report = tune("video", **kwargs), tune(str(hard), **kwargs)
    assert min(r["mean_violation_rate"] for r in hard_report["sweep"]) == next(
        r["mean_violation_rate"] for r in hard_report["sweep"] if r["target"] == hard_report["target"]
    )
    assert priced["sweep"] == hard_report["sweep"]  # the same runs; only the choice differs


@pytest.mark.slow
def test_dp_and_ilp_agree_on_every_decision_of_a_run():
    """IPA's exact DP and the ILP (CBC) make the same decision on every interval of a run (the solver check)."""
    report = verify("video", ["bursty"], policies=("ipa", "rim"), solvers=("cbc",), max_decisions=40)
    assert report["distinct_problems"] == 40
    assert report["mismatches"] == []
