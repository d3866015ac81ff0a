"""``rlscale compare`` keeps every finished run on disk: an interrupt loses nothing, ``--resume`` finishes the rest.

The runs go through a small wrapper around the real CLI (a real process, real signals) that makes every episode
take a moment and logs which (trace, policy, seed) it ran, so the tests can interrupt after the first record and
check that ``--resume`` runs only what is missing. The runs stay in the CLI's process (``--executor serial``): the
process executor's interrupt and resume are tested in ``test_sweep.py``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.evaluate.compare import run_comparison
from rlscale.policies.registry import make_policy

WRAPPER = """
import os, sys, time
import rlscale.evaluate.compare as compare

_run = compare.run_episode

def run_episode(spec, trace, policy, seed=0, **kwargs):
    time.sleep(float(os.environ.get("RUN_DELAY", "0")))
    result = _run(spec, trace, policy, seed=seed, **kwargs)
    with open(os.environ["RUNS_LOG"], "a") as fh:
        fh.write(f"{policy.name}|{seed}\\n")
    return result

compare.run_episode = run_episode
from rlscale.cli import main
sys.exit(main(sys.argv[1:]))
"""
TIMING = {"decision_ms_p50", "decision_ms_p99"}  # wall-clock figures: the only fields that differ between runs
SEEDS = 3
POLICIES = ["static-min", "static-max"]
TOTAL = SEEDS * len(POLICIES)


@pytest.fixture
def short_trace(tmp_path):
    path = tmp_path / "short.csv"
    rps = np.concatenate([np.full(60, 5), np.full(60, 25), np.full(60, 8)])
    path.write_text("rps\n" + "\n".join(map(str, rps)) + "\n")
    return path


def _args(trace: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--pipeline",
        "video",
        "--traces",
        str(trace),
        "--policies",
        ",".join(POLICIES),
        "--seeds",
        str(SEEDS),
        "--out",
        str(out),
        "--executor",  # the wrapper patches run_episode in this process; the process executor: test_sweep.py
        "serial",
        *extra,
    ]


def _start(args: list[str], log: Path, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "RUNS_LOG": str(log), "RUN_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _run(args: list[str], log: Path) -> subprocess.CompletedProcess:
    proc = _start(args, log)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _interrupt_after_first_record(args: list[str], log: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    proc = _start(args, log, delay=0.7)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while not (records.exists() and records.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def _ran(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in stderr, stderr
    return lines[-1]


@pytest.mark.subprocess
def test_sigint_keeps_finished_runs_and_resume_runs_only_the_rest(tmp_path, short_trace):
    reference = tmp_path / "reference"
    done = _run(_args(short_trace, reference), tmp_path / "reference.log")
    assert done.returncode == 0, done.stderr
    assert len(_ran(tmp_path / "reference.log")) == TOTAL

    out = tmp_path / "out"
    first_log = tmp_path / "first.log"
    first = _interrupt_after_first_record(_args(short_trace, out), first_log, out, signal.SIGINT)
    assert first.returncode == 130, first.stderr
    line = _last_line(first.stderr)
    finished = len(_ran(first_log))
    assert 1 <= finished < TOTAL
    assert f"{finished} of {TOTAL} runs finished" in line and "--resume" in line, line
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == finished
    assert len(_rows(out)) == finished  # the summary holds what finished
    assert (out / "results.md").exists() and (out / "violations.png").exists()
    assert not list(out.glob(".*tmp*")), "no temporary file is left behind"

    again = _run(_args(short_trace, out), tmp_path / "again.log")  # neither flag: refused, nothing run
    assert again.returncode == 2
    line = _last_line(again.stderr)
    assert "--resume" in line and "--overwrite" in line, line
    assert _ran(tmp_path / "again.log") == []

    other = _run(_args(short_trace, out, "--resume", "--arrivals", "even"), tmp_path / "other.log")
    assert other.returncode == 2 and "settings" in _last_line(other.stderr), other.stderr
    assert _ran(tmp_path / "other.log") == []

    resume_log = tmp_path / "resume.log"
    resumed = _run(_args(short_trace, out, "--resume"), resume_log)
    assert resumed.returncode == 0, resumed.stderr
    before = {f"{r['policy']}|{r['seed']}" for r in records}
    after = _ran(resume_log)
    assert len(after) == TOTAL - finished and not before & set(after), (before, after)
    assert _rows(out) == _rows(reference)
    for pattern in ("timeline-*.png", "timeline-*.csv"):
        assert sorted(p.name for p in out.glob(pattern)) == sorted(p.name for p in reference.glob(pattern))
    assert [(p.name, p.read_text()) for p in sorted(out.glob("timeline-*.csv"))] == [
        (p.name, p.read_text()) for p in sorted(reference.glob("timeline-*.csv"))
    ]


@pytest.mark.subprocess
def test_sigterm_exits_143_with_the_summary_written(tmp_path, short_trace):
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    result = _interrupt_after_first_record(_args(short_trace, out, "--no-timelines"), log, out, signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    assert "--resume" in _last_line(result.stderr)
    assert len(_rows(out)) == len(_ran(log)) >= 1


@pytest.mark.subprocess
def test_overwrite_removes_the_previous_results_timelines_included(tmp_path, short_trace):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("pipeline,trace\nold,old\n")
    (out / "timeline-old-ipa.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")  # not a result: left alone
    refused = _run(_args(short_trace, out, "--no-timelines"), tmp_path / "a.log")
    assert refused.returncode == 2 and "--overwrite" in _last_line(refused.stderr)
    no_records = _run(_args(short_trace, out, "--no-timelines", "--resume"), tmp_path / "b.log")
    assert no_records.returncode == 2 and "--overwrite" in _last_line(no_records.stderr), no_records.stderr
    both = _run(_args(short_trace, out, "--resume", "--overwrite"), tmp_path / "c.log")
    assert both.returncode == 2

    fresh = _run(_args(short_trace, out, "--no-timelines", "--overwrite"), tmp_path / "d.log")
    assert fresh.returncode == 0, fresh.stderr
    assert not (out / "timeline-old-ipa.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert len(_rows(out)) == TOTAL and all(r["pipeline"] == "video" for r in _rows(out))


@pytest.mark.slow
def test_library_resume_appends_to_the_records(tmp_path, short_trace):
    out = tmp_path / "out"
    run_comparison(
        "video",
        [str(short_trace)],
        ["static-min"],
        seeds=2,
        out=out,
        progress=False,
        make_policy=make_policy,
        timelines=False,
    )
    with pytest.raises(RlscaleError, match="--resume"):
        run_comparison(
            "video",
            [str(short_trace)],
            ["static-min"],
            seeds=2,
            out=out,
            progress=False,
            make_policy=make_policy,
            timelines=False,
        )
    comp = run_comparison(
        "video",
        [str(short_trace)],
        ["static-min"],
        seeds=2,
        out=out,
        progress=False,
        make_policy=make_policy,
        timelines=False,
        resume=True,
    )
    assert [r["seed"] for r in comp.records] == [0, 1]
    assert len((out / "records.jsonl").read_text().splitlines()) == 2


def test_a_torn_last_record_is_ignored_on_resume(tmp_path, short_trace):
    out = tmp_path / "out"
    kwargs = {"seeds": 2, "out": out, "progress": False, "timelines": False, "make_policy": make_policy}
    full = run_comparison("video", [str(short_trace)], ["static-min"], **kwargs)
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    comp = run_comparison("video", [str(short_trace)], ["static-min"], resume=True, **kwargs)
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in comp.records]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in full.records]
    assert [json.loads(x)["seed"] for x in (out / "records.jsonl").read_text().splitlines()] == [0, 1]


@pytest.mark.parametrize("target", ["file", "/proc/x/out", "/dev/full"])
@pytest.mark.subprocess
def test_an_unwritable_out_is_one_line(tmp_path, short_trace, target):
    if target == "file":
        target = str(tmp_path / "a-file")
        Path(target).write_text("x")
    result = _run(_args(short_trace, Path(target), "--no-timelines"), tmp_path / "x.log")
    assert result.returncode == 2, result.stderr
    assert "--out" in _last_line(result.stderr)
    assert len([x for x in result.stderr.splitlines() if x.strip()]) == 1, result.stderr
