"""The CLI: --help everywhere, JSON listings, and bad input -> one line on stderr, non-zero exit, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlscale.cli import build_parser


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_help_everywhere(command):
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: rlscale" in result.stdout


def test_pipelines_json_lists_the_bundled_pipelines():
    result = run("pipelines", "--json")
    assert result.returncode == 0, result.stderr
    specs = {p["name"]: p for p in json.loads(result.stdout)}
    assert {"video", "audio-qa", "audio-sent", "sum-qa", "nlp", "resnet"} <= set(specs)
    assert specs["video"]["sla_s"] == pytest.approx(6.89)
    for spec in specs.values():
        assert spec["stages"]
        for stage in spec["stages"]:
            assert stage["variants"]
            assert all(0 <= v["accuracy"] <= 1 for v in stage["variants"])


def test_traces_json_has_lengths_and_totals():
    result = run("traces", "--json")
    assert result.returncode == 0, result.stderr
    traces = {t["name"]: t for t in json.loads(result.stdout)}
    assert set(traces) >= {"bursty", "steady_low", "steady_high", "fluctuating", "infadapter"}
    assert traces["bursty"]["requests"] == 14437
    assert traces["bursty"]["duration_s"] == 1200
    assert traces["infadapter"]["duration_s"] == 1260


def test_tables_render():
    for cmd in ("pipelines", "traces"):
        result = run(cmd)
        assert result.returncode == 0, result.stderr
        assert "bursty" in result.stdout or "video" in result.stdout


def _assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_spec_file_gives_one_line(write_spec):
    path = write_spec(lambda d: d.update(sla_s=-3))
    _assert_one_clear_line(run("pipelines", "--spec", str(path)), str(path), "sla_s", "must be > 0")


def test_unknown_pipeline_name_gives_one_line():
    _assert_one_clear_line(run("pipelines", "--spec", "vidoe"), "unknown pipeline 'vidoe'")


def test_malformed_trace_csv_gives_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("rps\n1\nlots\n")
    _assert_one_clear_line(run("traces", "--trace", str(bad)), "bad.csv", "line 3")


def test_unknown_flag_and_command_give_one_line():
    _assert_one_clear_line(run("pipelines", "--jsn"), "unrecognized arguments")
    _assert_one_clear_line(run("fly"), "invalid choice")
