"""Names that become paths (pipeline, trace, policy, run names) follow one rule, and no output escapes ``--out``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlscale.errors import RlscaleError, SpecError
from rlscale.paths import check_name, inside, is_safe_name
from rlscale.policies.registry import make_policy
from rlscale.spec import load_spec

BAD_NAMES = ["../../escaped/evil", "a/b", "..", "a..b", ".hidden", "-dash", "a b", "x" * 64, "", "a\\b", "é"]
GOOD_NAMES = ["video", "sum-qa", "my_pipe.v2", "Video2", "x" * 63]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_refused(name):
    assert not is_safe_name(name)
    with pytest.raises(RlscaleError, match="cannot be used in a file name"):
        check_name(name, "trace name")


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_safe_names_pass(name):
    assert is_safe_name(name)
    assert check_name(name, "trace name") == name


def test_inside_refuses_a_symlink_out_of_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    assert inside(tmp_path / "out", "results.csv") == tmp_path / "out" / "results.csv"
    with pytest.raises(RlscaleError, match="outside"):
        inside(tmp_path / "out", "link")
    with pytest.raises(RlscaleError):
        inside(tmp_path / "out", "../x")


@pytest.mark.parametrize("name", ["../../escaped/evil", "a/b", "..", ".hidden", "a b", "x" * 64])
def test_spec_with_an_unsafe_name_is_refused_at_load(write_spec, name):
    def rename(raw):
        raw["name"] = name

    with pytest.raises(SpecError, match="pipeline name") as info:
        load_spec(write_spec(rename))
    assert "\n" not in str(info.value)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _one_line_exit_2(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", ["train", "compare", "simulate", "pipelines"])
@pytest.mark.subprocess
def test_no_command_writes_outside_out_with_an_escaping_spec_name(tmp_path, write_spec, command):
    def rename(raw):
        raw["name"] = "../../escaped/evil"

    spec = write_spec(rename)
    out = tmp_path / "a" / "b" / "out"
    args = {
        "train": ["train", "--pipeline", str(spec), "--timesteps", "64", "--n-envs", "1", "--validation-windows", "1"]
        + ["--out", str(out)],
        "compare": ["compare", "--pipeline", str(spec), "--traces", "bursty", "--policies", "static-min"]
        + ["--out", str(out)],
        "simulate": ["simulate", "--pipeline", str(spec), "--trace", "bursty", "--policy", "static-min"],
        "pipelines": ["pipelines", "--spec", str(spec)],
    }[command]
    _one_line_exit_2(_cli(*args), "pipeline name")
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not out.exists() or not any(out.iterdir())


def test_compare_refuses_a_trace_file_whose_name_cannot_be_a_file_name(tmp_path):
    from rlscale.evaluate.compare import run_comparison

    bad = tmp_path / "my trace.csv"
    bad.write_text("rps\n" + "\n".join(["5"] * 50) + "\n")
    with pytest.raises(RlscaleError, match="trace name 'my trace'"):
        run_comparison(
            "video", [str(bad)], ["static-min"], out=tmp_path / "out", progress=False, make_policy=make_policy
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_traces_with_one_file_name_keep_their_own_timelines_and_rows(tmp_path):
    from rlscale.evaluate.compare import run_comparison

    for folder, level in (("a", 5), ("b", 20)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text("rps\n" + "\n".join([str(level)] * 60) + "\n")
    a, b = str(tmp_path / "a" / "x.csv"), str(tmp_path / "b" / "x.csv")
    out = tmp_path / "out"
    comp = run_comparison("video", [a, b], ["static-min"], out=out, progress=False, make_policy=make_policy)
    timelines = sorted(p.name for p in out.glob("timeline-*.png"))
    assert len(timelines) == 2, timelines
    assert [r["trace"] for r in comp.records] == [a, b]
    assert comp.records[0]["requests"] != comp.records[1]["requests"]
    rows = (out / "results.csv").read_text().splitlines()
    assert sum(a in row for row in rows) == 1 and sum(b in row for row in rows) == 1


def test_compare_refuses_the_same_trace_or_policy_twice(tmp_path):
    from rlscale.evaluate.compare import run_comparison

    with pytest.raises(RlscaleError, match="twice"):
        run_comparison(
            "video", ["bursty", "bursty"], ["static-min"], out=tmp_path / "o", progress=False, make_policy=make_policy
        )
    with pytest.raises(RlscaleError, match="twice"):
        run_comparison(
            "video",
            ["bursty"],
            ["static-min", "static-min"],
            out=tmp_path / "o",
            progress=False,
            make_policy=make_policy,
        )


def test_bundle_path_is_checked_inside_the_bundled_folder(monkeypatch, tmp_path):
    """cmd_train --bundle joins the pipeline name into agents/data through `inside` (a hostile name cannot escape)."""
    from agents.inference import BUNDLED_DIR, bundled_agent

    assert bundled_agent("video") == BUNDLED_DIR / "ppo_video.npz"
    with pytest.raises(RlscaleError):
        bundled_agent("../../evil")


def test_safe_name_rule_matches_every_bundled_name():
    from rlscale.policies.registry import POLICIES
    from rlscale.spec import bundled_pipelines
    from rlscale.workload import EVAL_TRACES

    for name in [*bundled_pipelines(), *EVAL_TRACES, *POLICIES]:
        assert is_safe_name(name), name
    assert os.sep not in "".join(POLICIES)
    assert np.all([is_safe_name(f"{p}__ppo__0__20250101-000000", 255) for p in bundled_pipelines()])


def test_a_write_that_fails_is_one_output_error(tmp_path):
    """A full disk (/dev/full), a file where a folder should be: `OutputError`, one line, no half-written file."""
    from rlscale.paths import OutputError, append_line, atomic_write_text, output_folder

    with pytest.raises(OutputError, match="No space left"):
        append_line(Path("/dev/full"), "{}")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="a-file"):
        atomic_write_text(tmp_path / "a-file" / "results.csv", "x")
    with pytest.raises(OutputError, match="not a folder"):
        output_folder(tmp_path / "a-file")
    with pytest.raises(OutputError, match="--out /proc/x"):
        output_folder(Path("/proc/x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
