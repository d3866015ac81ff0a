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
@pytest.mark.subprocess
def test_help_everywhere(command):
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: rlscale" in result.stdout


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_traces_json_has_lengths_and_totals():
    result = run("traces", "--json")
    assert result.returncode == 0, result.stderr
    traces = {t["name"]: t for t in json.loads(result.stdout)}
    assert set(traces) >= {"bursty", "steady_low", "steady_high", "fluctuating", "infadapter"}
    assert traces["bursty"]["requests"] == 14437
    assert traces["bursty"]["duration_s"] == 1200
    assert traces["infadapter"]["duration_s"] == 1260


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table, as stripped cells (header and rule lines dropped)."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


@pytest.mark.subprocess
def test_pipelines_table_lists_every_bundled_pipeline_with_its_stages():
    from rlscale.spec import bundled_pipelines, load_spec

    result = run("pipelines")
    assert result.returncode == 0, result.stderr
    rows = _table_rows(result.stdout)
    names = [r[0] for r in rows if r[0]]
    assert sorted(names) == sorted(bundled_pipelines())  # each once, nothing else
    for name in bundled_pipelines():
        spec = load_spec(name)
        start = next(i for i, r in enumerate(rows) if r[0] == name)
        end = next((i for i, r in enumerate(rows) if i > start and r[0]), len(rows))
        assert rows[start][1] == f"{spec.sla_s:g}", rows[start]  # its SLA
        assert [r[2] for r in rows[start:end] if r[2]] == [st.name for st in spec.stages]
        assert {r[6] for r in rows[start:end]} == {v for st in spec.stages for v in st.variant_names}
    assert "bursty" not in result.stdout  # the traces' table is the other command's


@pytest.mark.subprocess
def test_traces_table_lists_every_bundled_trace_with_its_duration():
    from rlscale.workload import bundled_traces, load_trace

    result = run("traces")
    assert result.returncode == 0, result.stderr
    lengths = {r[0]: r[1] for r in _table_rows(result.stdout)}
    assert lengths == {name: str(load_trace(name).duration_s) for name in bundled_traces()}
    assert "yolov5n" not in result.stdout  # the pipelines' table is the other command's


def _assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.subprocess
def test_bad_spec_file_gives_one_line(write_spec):
    path = write_spec(lambda d: d.update(sla_s=-3))
    _assert_one_clear_line(run("pipelines", "--spec", str(path)), str(path), "sla_s", "must be > 0")


@pytest.mark.subprocess
def test_unknown_pipeline_name_gives_one_line():
    _assert_one_clear_line(run("pipelines", "--spec", "vidoe"), "unknown pipeline 'vidoe'")


@pytest.mark.subprocess
def test_malformed_trace_csv_gives_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("rps\n1\nlots\n")
    _assert_one_clear_line(run("traces", "--trace", str(bad)), "bad.csv", "line 3")


@pytest.mark.subprocess
def test_unknown_flag_and_command_give_one_line():
    _assert_one_clear_line(run("pipelines", "--jsn"), "unrecognized arguments")
    _assert_one_clear_line(run("fly"), "invalid choice")


# ------------------------------------------------------------------------------------------------ simulate

RECORD_KEYS = {
    "pipeline",
    "trace",
    "policy",
    "seed",
    "requests",
    "completed",
    "dropped",
    "sla_violation_rate",
    "accuracy",
    "cost_cores",
    "objective",
    "score",
    "p99_latency_s",
    "decision_ms_p50",
    "decision_ms_p99",
    "reconfigurations",
}


def _simulate(policy: str, *extra: str) -> dict:
    result = run("simulate", "--pipeline", "video", "--trace", "bursty", "--policy", policy, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.subprocess
def test_simulate_static_max_and_min_on_video_bursty(tmp_path):
    """Acceptance: the full record, 14,437 requests, < 1% violations; static-min is cheaper and less accurate."""
    plot = tmp_path / "timeline.png"
    high = _simulate("static-max", "--plot", str(plot))
    low = _simulate("static-min")
    assert RECORD_KEYS <= set(high)  # DESIGN.md section 9's keys
    from rlscale.sim.runner import RECORD_KEYS as DOCUMENTED

    assert set(high) == set(DOCUMENTED)  # and exactly the keys the runner documents
    assert high["requests"] == low["requests"] == 14437
    assert high["completed"] + high["dropped"] + high["in_flight"] == 14437
    assert high["sla_violation_rate"] < 0.01
    assert low["cost_cores"] < high["cost_cores"]
    assert low["accuracy"] < high["accuracy"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.subprocess
def test_simulate_is_reproducible_and_seeded():
    a = _simulate("static-min", "--arrivals", "poisson", "--seed", "4")
    b = _simulate("static-min", "--arrivals", "poisson", "--seed", "4")
    c = _simulate("static-min", "--arrivals", "poisson", "--seed", "5")
    assert a == {**b, "decision_ms_p50": a["decision_ms_p50"], "decision_ms_p99": a["decision_ms_p99"]}
    assert a["requests"] != c["requests"] or a["p50_latency_s"] != c["p50_latency_s"]


@pytest.mark.subprocess
def test_simulate_readable_summary():
    result = run("simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "static-min")
    assert result.returncode == 0, result.stderr
    assert "sla_violation_rate" in result.stdout and "per stage" in result.stdout


@pytest.mark.subprocess
def test_simulate_bad_inputs_give_one_line(tmp_path, write_spec):
    _assert_one_clear_line(
        run("simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "magic"), "invalid choice"
    )
    bad = tmp_path / "t.csv"
    bad.write_text("rps\n-4\n")
    _assert_one_clear_line(
        run("simulate", "--pipeline", "video", "--trace", str(bad), "--policy", "static-max"), "t.csv", "line 2"
    )
    spec = write_spec(lambda d: d["stages"][0].update(batch_sizes=[1, 16]))
    _assert_one_clear_line(
        run("simulate", "--pipeline", str(spec), "--trace", "bursty", "--policy", "static-max"), "batch size 16"
    )
    _assert_one_clear_line(
        run("simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "static-max", "--plot", "x.pdf"),
        ".png",
    )


@pytest.mark.subprocess
def test_simulate_on_a_csv_trace(tmp_path):
    trace = tmp_path / "ramp.csv"
    trace.write_text("rps\n" + "\n".join(str(i // 10) for i in range(300)) + "\n")
    result = run("simulate", "--pipeline", "video", "--trace", str(trace), "--policy", "static-max", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["requests"] == sum(i // 10 for i in range(300))
    assert record["duration_s"] == 300


# written under the test's tmp_path ({tmp}), never into the source tree; the test ids stay the same in every process
# (pytest-xdist's workers must collect the same ids)
TUNE_OUT = "{tmp}/tuning.json"
PROFILE_OUT = "{tmp}/profile.csv"

# every command that takes --json, with arguments that make it do real work (HiGHS and CBC included)
JSON_RUNS = {
    "pipelines": [("pipelines",), ("pipelines", "--spec", "video")],
    "traces": [("traces",)],
    "simulate": [
        ("simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "ipa", "--solver", solver)
        for solver in ("highs", "cbc", "dp")
    ],
    "bench": [("bench", "--repeats", "1", "--quick")],
    "check": [("check", "--spec", "video", "--trace", "bursty")],
    # issue 14: the tuning file goes to a temporary folder, never into the source tree
    "tune": [("tune", "--pipeline", "video", "--windows", "1", "--window-s", "200", "--out", TUNE_OUT)],
    # issue 18: the numpy example (no torch), one point, a few repeats
    "profile": [
        (
            "profile",
            "--model",
            "rlscale.examples.mlp:build",
            "--variants",
            "mlp-256",
            "--batch",
            "1",
            "--cores",
            "1",
            "--warmup",
            "1",
            "--repeats",
            "3",
            "--out",
            PROFILE_OUT,
        )
    ],
}


def _json_commands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return {name for name, sub in action.choices.items() if any("--json" in a.option_strings for a in sub._actions)}


JSON_ELSEWHERE = {"calibrate": "tests/calibrate/test_e2e.py"}
"""--json commands whose one document is checked where their servers are (real serving, marked e2e)."""


def test_every_json_command_is_covered():
    assert _json_commands() == set(JSON_RUNS) | set(JSON_ELSEWHERE)


@pytest.mark.parametrize("args", [a for runs in JSON_RUNS.values() for a in runs], ids=" ".join)
@pytest.mark.subprocess
def test_json_stdout_is_exactly_one_document(tmp_path, args):
    result = run(*(a.replace("{tmp}", str(tmp_path)) for a in args), "--json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # one document, nothing before or after it (json.loads rejects extra data)
    assert result.stdout.lstrip()[0] in "[{"
    assert "HiGHS" not in result.stdout + result.stderr  # the banner is discarded at the source


@pytest.mark.subprocess
def test_json_guard_sends_library_prints_to_stderr():
    """Whatever a library prints while a --json command runs (Python or C, on fd 1) goes to stderr."""
    code = (
        "import os, sys, rlscale.cli as cli, rlscale.cli.traces as traces\n"
        "orig = traces.cmd_traces\n"
        "def noisy(args):\n"
        "    print('python noise'); os.write(1, b'fd noise\\n')\n"
        "    return orig(args)\n"
        "traces.cmd_traces = noisy\n"
        "sys.exit(cli.main(['traces', '--json']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {t["name"] for t in json.loads(result.stdout)} >= {"bursty"}
    assert "python noise" in result.stderr and "fd noise" in result.stderr


@pytest.mark.subprocess
def test_bench_json_shape():
    result = run("bench", "--json", "--repeats", "1", "--quick", "--sections", "sim,decisions")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sim"]["events_per_s"] > 0 and report["sim"]["naive_events_per_s"] > 0
    assert report["sim"]["events"] == 2 * 14437  # every request visits both stages
    assert set(report) == {"sim", "decision_ms", "ratios"}  # the train section only when asked for or by default
    assert set(report["decision_ms"]) == {"ipa-cbc", "ipa-highs", "dp", "ppo", "ppo+safety"}
    assert report["decision_ms"]["dp"]["2"]["p50"] > 0


@pytest.mark.subprocess
@pytest.mark.e2e
def test_bench_train_section_json():
    """PPO steps/s on the pipeline and on CartPole from one run (one rollout each), their ratio, nothing else."""
    pytest.importorskip("stable_baselines3")
    result = run("bench", "--json", "--sections", "train", "--train-steps", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"train"}
    train = report["train"]
    assert train["pipeline"]["env"] == "rlscale/Pipeline-v0" and train["cartpole"]["env"] == "CartPole-v1"
    for key in ("pipeline", "cartpole"):
        r = train[key]
        assert r["timesteps"] == 2048  # one step asked for: one whole rollout of 4 environments x 512 steps
        assert r["steps_per_s"] > 0 and r["rollout_s"] > 0 and r["update_s"] > 0
        assert r["rollout_s"] + r["update_s"] <= r["wall_s"] * 1.01
        assert r["steps_per_s"] == pytest.approx(r["timesteps"] / r["wall_s"], rel=0.01)
    assert train["ratio"] == pytest.approx(
        train["pipeline"]["steps_per_s"] / train["cartpole"]["steps_per_s"], rel=0.01
    )
    assert train["torch_threads"] >= 1
