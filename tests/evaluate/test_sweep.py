"""`rlscale.evaluate.sweep`: ``compare`` gives the same results whatever the executor, and the process executor keeps
the finished runs on an interrupt and resumes without running them again."""

from __future__ import annotations

import csv
import json
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rlscale.cli import main
from rlscale.errors import RlscaleError
from rlscale.evaluate.compare import RunSpec, run, run_comparison
from rlscale.evaluate.sweep import EXECUTORS, make_executor
from rlscale.policies.registry import PolicyOptions

TIMING = {"decision_ms_p50", "decision_ms_p99"}  # wall-clock figures: the only fields that differ between runs
FACTORY = "rlscale.policies.registry:make_policy"

# A policy factory that makes each run take a moment and logs it, imported by name in the worker processes (the
# folder holding it is on their PYTHONPATH); the CLI's own check of the policy names (in its process) is not logged.
SLOW_FACTORY = """
import multiprocessing, os, time
from rlscale.policies.registry import make_policy as _make_policy

def make_policy(name, spec, trace, options=None):
    if multiprocessing.parent_process() is not None:
        with open(os.environ["RUNS_LOG"], "a") as fh:
            fh.write(name + "\\n")
        time.sleep(float(os.environ.get("RUN_DELAY", "0")))
    return _make_policy(name, spec, trace, options)
"""
WRAPPER = """
import sys
import rlscale.cli.compare as compare
compare.POLICY_FACTORY = "slow_factory:make_policy"
from rlscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _trace(path: Path, levels: list[float]) -> str:
    rps = np.concatenate([np.full(60, level) for level in levels])
    path.write_text("rps\n" + "\n".join(map(str, rps)) + "\n")
    return str(path)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def _records(out: Path) -> list[str]:
    return (out / "records.jsonl").read_text().splitlines()


def _grid(folder: Path) -> tuple[list[str], list[str], dict]:
    """The small comparison grid every executor is checked on: (traces, policies, run_comparison's keywords)."""
    traces = [_trace(folder / "ramp.csv", [5, 25, 8]), _trace(folder / "spike.csv", [3, 40, 3])]
    policies = ["static-min", "fa2-low", "ipa"]
    kwargs = {
        "seeds": 2,
        "options": PolicyOptions(predictor="reactive"),
        "timelines": False,
        "progress": False,
        "make_policy": FACTORY,
    }
    return traces, policies, kwargs


@pytest.mark.slow
def test_serial_and_process_give_the_same_results_in_the_same_order(tmp_path):
    traces, policies, kwargs = _grid(tmp_path)
    serial = run_comparison("video", traces, policies, out=tmp_path / "serial", executor="serial", **kwargs)
    process = run_comparison(
        "video", traces, policies, out=tmp_path / "process", executor="process", workers=2, **kwargs
    )
    order = [(t, p, s) for t in traces for p in policies for s in range(2)]
    assert [(r["trace"], r["policy"], r["seed"]) for r in process.records] == order
    assert _rows(tmp_path / "process") == _rows(tmp_path / "serial")
    assert len(_rows(tmp_path / "serial")) == 12
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
    assert [strip(r) for r in process.records] == [strip(r) for r in serial.records]
    # records.jsonl holds the same runs (in the order they finished)
    keyed = lambda out: sorted(json.dumps(strip(json.loads(line))) for line in _records(out))  # noqa: E731
    assert keyed(tmp_path / "process") == keyed(tmp_path / "serial")
    table = lambda out: [line.rsplit("|", 2)[0] for line in (out / "results.md").read_text().splitlines()]  # noqa: E731
    assert table(tmp_path / "process") == table(tmp_path / "serial")  # (but the last column, decision p99)


@pytest.mark.slow
def test_the_run_function_is_pure_and_draws_its_timeline(tmp_path):
    spec = RunSpec("video", "steady_low", "fa2-low", 1, "poisson", None, FACTORY, str(tmp_path / "t.png"))
    assert RunSpec(**{**spec.__dict__}) == spec and hash(spec)
    first, again = run(spec), run(RunSpec(**{**spec.__dict__, "timeline": None}))
    assert (tmp_path / "t.png").stat().st_size > 0
    assert {k: v for k, v in first.items() if k not in TIMING} == {k: v for k, v in again.items() if k not in TIMING}
    assert [first[k] for k in ("trace", "policy", "seed", "arrivals")] == ["steady_low", "fa2-low", 1, "poisson"]


def test_executors_yield_every_index_once_and_refuse_bad_settings():
    items = list(range(7))
    for name in ("serial", "process"):  # ray: tests/evaluate/test_sweep_ray.py
        out = dict(make_executor(name, 2).imap_unordered(operator.neg, items))
        assert out == {i: -i for i in items}
    assert set(EXECUTORS) == {"serial", "process", "ray"}
    with pytest.raises(RlscaleError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(RlscaleError, match="--ray-address needs --executor ray"):
        make_executor("process", 2, "auto")
    with pytest.raises(RlscaleError, match="--workers"):
        make_executor("process", 0)
    with pytest.raises(RlscaleError, match="module-level"):
        run_comparison("video", ["bursty"], ["static-min"], make_policy=lambda *a: None, progress=False)


@pytest.mark.parametrize("flags", [["--executor", "dask"], ["--workers", "0"], ["--workers", "257"]])
def test_the_cli_refuses_an_unknown_executor_and_a_bad_worker_count(flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", *flags])
    assert exc.value.code == 2


@pytest.mark.subprocess
def test_an_interrupted_process_sweep_resumes_without_running_finished_runs_again(tmp_path):
    trace = _trace(tmp_path / "short.csv", [5, 25, 8])
    policies, seeds = ["static-min", "static-max"], 3
    total = len(policies) * seeds
    reference = run_comparison(
        "video", [trace], policies, seeds=seeds, out=tmp_path / "reference", timelines=False, progress=False,
        make_policy=FACTORY,
    )  # fmt: skip
    assert len(reference.records) == total
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "slow_factory.py").write_text(SLOW_FACTORY)
    out = tmp_path / "out"
    args = [
        *("compare", "--pipeline", "video", "--traces", trace, "--policies", ",".join(policies)),
        *("--seeds", str(seeds), "--out", str(out), "--no-timelines", "--executor", "process", "--workers", "2"),
    ]
    path = os.pathsep.join([str(tmp_path / "lib"), os.environ.get("PYTHONPATH", "")])

    def start(log: str, delay: float, *extra: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": path, "RUNS_LOG": str(tmp_path / log), "RUN_DELAY": str(delay)}
        cmd = [sys.executable, "-c", WRAPPER, *args, *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    proc = start("first.log", 0.8)
    deadline = time.monotonic() + 60
    while not ((out / "records.jsonl").exists() and (out / "records.jsonl").read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    kept = _records(out)
    assert 1 <= len(kept) < total, "the interrupt came too late to test anything"
    assert f"{len(kept)} of {total} runs finished" in stderr
    assert len(_rows(out)) == len(kept)  # the summary of what finished

    proc = start("resume.log", 0.0, "--resume")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    ran = (tmp_path / "resume.log").read_text().splitlines()
    assert len(ran) == total - len(kept)  # only the runs not recorded
    assert _records(out)[: len(kept)] == kept  # the finished records untouched
    assert len(_records(out)) == total
    assert _rows(out) == _rows(tmp_path / "reference")


def test_counting_bar_counts_on_stderr_and_does_nothing_when_disabled(capsys):
    from rlscale.evaluate.sweep import counting_bar

    with counting_bar("profile", 2, enabled=False) as advance:
        advance("first")
    assert capsys.readouterr() == ("", "")
    with counting_bar("profile", 2) as advance:  # rich draws on stderr only, and clears the bar at the end
        advance("first")
        advance()
    assert capsys.readouterr().out == ""
