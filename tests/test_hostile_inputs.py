"""Hostile and careless input to every command: one line on stderr, exit 2, no traceback, nothing on disk lost.

Each case runs ``rlscale`` in a folder that already holds earlier work (``keep/results.csv``, ``keep.png``); after
the run that work must be byte-for-byte intact. Inputs that depend on files (a 100,000-deep YAML, /dev/zero as a
spec, a binary token, another pipeline's agent...) are written by the ``hostile`` fixture. Most cases run in this
process through ``rlscale.cli.main(argv)`` (the ``cli_main`` fixture, tests/cli_inprocess.py); the cases in
`SUBPROCESS` run the real process (marked ``subprocess``): those whose failure would be a hang, a read without end
or a memory blow-up (/dev/zero, 100,000-deep documents, a format width of 10**8), and a few smoke cases that prove
the entry point itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import base_spec_dict, write_profile
from tests.hostile import assert_one_error_line, params, run

ROOT = Path(__file__).resolve().parents[1]
SUM_QA_AGENT = str(ROOT / "agents" / "data" / "ppo_sum-qa.npz")
EVAL_CSV = str(ROOT / "rlscale" / "data" / "traces" / "eval_windows.csv")  # a valid CSV trace of 6,060 s
DOWN = "http://127.0.0.1:9"  # discard port: nothing listens; refused at once
SERVE = ["serve", "--model", "m:build", "--variant", "v", "--pipeline", "p", "--stage", "s"]
VPA_INFADAPTER = ["simulate", "--pipeline", "infadapter", "--trace", "infadapter", "--policy", "vpa"]


def _spec(mutate) -> dict:
    data = base_spec_dict()
    mutate(data)
    return data


def _task_is_a_path(d: dict) -> None:
    """A stage without a profile whose task names a file outside the bundled profiles folder."""
    d["stages"][0].pop("profile")
    d["stages"][0]["task"] = "../traces/eval_windows"  # a real CSV, but not a profile


SPECS = {
    "escaping-name.yaml": _spec(lambda d: d.update(name="../../escaped/evil")),
    "huge-cores.yaml": _spec(lambda d: d["stages"][0].update(cores=[1, 2, 4, 8, 10**9])),
    "tiny-interval.yaml": _spec(lambda d: d.update(interval_s=1e-9)),
    "unknown-field.yaml": _spec(lambda d: d.update(colour="blue")),
    "huge-sla.yaml": _spec(lambda d: d.update(sla_s=1e300)),
    "kube-system.yaml": _spec(lambda d: d.update(kubernetes={"namespace": "kube-system"})),
    "task-path.yaml": _spec(_task_is_a_path),
    "bad-template.yaml": _spec(lambda d: d.update(kubernetes={"promql": {"arrival_rate": "{pipeline!r:>100000000}"}})),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A folder of bad input files."""
    d = tmp_path_factory.mktemp("hostile")
    for name, data in SPECS.items():
        (d / name).write_text(yaml.safe_dump(data, sort_keys=False))
    (d / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000)
    (d / "binary.yaml").write_bytes(b"name: \xff\xfe\x00\x01\n")
    (d / "empty.yaml").write_text("")
    (d / "broken.yaml").write_text("name: [unclosed\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "blank-row.csv").write_text("rps\n3\n\n4\n")
    (d / "huge-rps.csv").write_text("rps\n1e300\n")
    (d / "negative.csv").write_text("rps\n3\n-1\n")
    (d / "nan.csv").write_text("rps\nnan\n")
    (d / "words.csv").write_text("rps\nmany\n")
    (d / "no-rps.csv").write_text("load\n3\n")
    (d / "garbage.zip").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    (d / "token.bin").write_bytes(b"\xff\xfe\x00\x01\x02binary")
    (d / "a-file").write_text("I am a file, not a folder\n")
    write_profile(d)  # the toy specs' profile (relative profile paths resolve from the spec's folder)
    return d


# (id, argv with {h} for the hostile folder, a fragment the one error line must contain)
PROFILE = ["profile", "--batch", "1", "--cores", "1", "--out", "p.csv"]
MLP_PROFILE = [*PROFILE, "--model", "rlscale.examples.mlp:build"]
CALIBRATE = ["calibrate", "--model", "rlscale.examples.mlp:build", "--trace", "bursty", "--out", "cal"]


CASES = [
    # pipelines: bad specs of every kind
    ("spec-missing", ["pipelines", "--spec", "{h}/missing.yaml"], "not found"),
    ("spec-dev-zero", ["pipelines", "--spec", "/dev/zero"], "not a regular file"),
    ("spec-deep", ["pipelines", "--spec", "{h}/deep.yaml"], "nested"),
    ("spec-binary", ["pipelines", "--spec", "{h}/binary.yaml"], "UTF-8"),
    ("spec-empty", ["pipelines", "--spec", "{h}/empty.yaml"], "empty"),
    ("spec-broken-yaml", ["pipelines", "--spec", "{h}/broken.yaml"], "not valid YAML"),
    ("spec-list", ["pipelines", "--spec", "{h}/list.yaml"], "mapping"),
    ("spec-folder", ["pipelines", "--spec", "{h}"], "folder"),
    ("spec-huge-cores", ["pipelines", "--spec", "{h}/huge-cores.yaml"], "<= 1024"),
    ("spec-tiny-interval", ["pipelines", "--spec", "{h}/tiny-interval.yaml"], "interval_s"),
    ("spec-unknown-field", ["pipelines", "--spec", "{h}/unknown-field.yaml"], "colour"),
    ("spec-huge-sla", ["pipelines", "--spec", "{h}/huge-sla.yaml"], "sla_s"),
    ("spec-escaping-name", ["pipelines", "--spec", "{h}/escaping-name.yaml"], "name"),
    ("spec-unknown-bundled", ["pipelines", "--spec", "vidoe"], "unknown pipeline"),
    ("spec-bad-template", ["pipelines", "--spec", "{h}/bad-template.yaml"], "promql"),
    # traces
    ("trace-missing", ["traces", "--trace", "{h}/missing.csv"], "not found"),
    ("trace-blank-row", ["traces", "--trace", "{h}/blank-row.csv"], "blank row"),
    ("trace-huge-rps", ["traces", "--trace", "{h}/huge-rps.csv"], "limit"),
    ("trace-dev-zero", ["traces", "--trace", "/dev/zero"], "not a regular file"),
    ("trace-negative", ["traces", "--trace", "{h}/negative.csv"], "line 3"),
    ("trace-nan", ["traces", "--trace", "{h}/nan.csv"], "finite"),
    ("trace-words", ["traces", "--trace", "{h}/words.csv"], "not a number"),
    ("trace-no-rps", ["traces", "--trace", "{h}/no-rps.csv"], "rps"),
    ("trace-unknown", ["traces", "--trace", "burstyy"], "unknown trace"),
    # simulate
    ("sim-policy", ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "magic"], "invalid choice"),
    (
        "sim-seed-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--seed", "-1"],
        "--seed",
    ),
    (
        "sim-seed-word",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--seed", "x"],
        "--seed",
    ),
    ("sim-trace-huge", ["simulate", "--pipeline", "video", "--trace", "{h}/huge-rps.csv", "--policy", "ipa"], "limit"),
    (
        "sim-plot-proc",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--plot", "/proc/x.png"],
        "--plot",
    ),
    (
        "sim-plot-folder",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--plot", "keep"],
        "--plot",
    ),
    (
        "sim-plot-pdf",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--plot", "x.pdf"],
        ".png",
    ),
    (
        "sim-plot-dev-full",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--plot", "/dev/full"],
        "--plot",
    ),
    (
        "sim-plot-under-file",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--plot", "{h}/a-file/x.png"],
        "not a folder",
    ),
    (
        "sim-agent-garbage",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ppo", "--agent", "{h}/garbage.zip"],
        "garbage.zip",
    ),
    (
        "sim-agent-missing",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ppo", "--agent", "{h}/none.zip"],
        "none.zip",
    ),
    (
        "sim-agent-other-pipeline",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ppo", "--agent", SUM_QA_AGENT],
        "agent",
    ),
    (
        "sim-headroom-nan",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--headroom", "nan"],
        "--headroom",
    ),
    (
        "sim-headroom-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--headroom", "-1"],
        "--headroom",
    ),
    (
        "sim-spec-escaping",
        ["simulate", "--pipeline", "{h}/escaping-name.yaml", "--trace", "bursty", "--policy", "ipa"],
        "name",
    ),
    (
        "sim-agent-for-ipa",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--agent", SUM_QA_AGENT],
        "--agent",
    ),
    (
        "compare-agent-without-ppo",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa", "--agent", SUM_QA_AGENT],
        "--agent",
    ),
    (
        "sidecar-agent-for-ipa",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "ipa", "--agent", SUM_QA_AGENT, "--once"],
        "--agent",
    ),
    ("spec-task-path", ["pipelines", "--spec", "{h}/task-path.yaml"], "no bundled profile for task"),
    (
        "sim-guard",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--guard", "maybe"],
        "--guard",
    ),
    (
        "sim-set-unknown-field",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--set", "objective.alfa=1"],
        "alfa",
    ),
    (
        "sim-set-bad-value",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--set", "sla_s=-1"],
        "sla_s",
    ),
    ("pipelines-schema-with-spec", ["pipelines", "--schema", "--spec", "video"], "--schema"),
    # bench
    ("bench-repeats-zero", ["bench", "--repeats", "0"], "--repeats"),
    ("bench-repeats-negative", ["bench", "--repeats", "-5"], "--repeats"),
    ("bench-repeats-word", ["bench", "--repeats", "many"], "--repeats"),
    # train
    ("train-seed-negative", ["train", "--pipeline", "video", "--seed", "-1", "--out", "runs"], "--seed"),
    ("train-timesteps-zero", ["train", "--pipeline", "video", "--timesteps", "0", "--out", "runs"], "--timesteps"),
    ("train-n-envs-zero", ["train", "--pipeline", "video", "--n-envs", "0", "--out", "runs"], "--n-envs"),
    (
        "train-resume-garbage",
        ["train", "--pipeline", "video", "--resume", "{h}/garbage.zip", "--out", "runs"],
        "garbage.zip",
    ),
    (
        "train-resume-other-pipeline",
        ["train", "--pipeline", "video", "--resume", SUM_QA_AGENT, "--out", "runs"],
        "sum-qa",
    ),
    ("train-out-file", ["train", "--pipeline", "video", "--out", "{h}/a-file", "--timesteps", "64"], "a-file"),
    ("train-out-proc", ["train", "--pipeline", "video", "--out", "/proc/rlscale-runs", "--timesteps", "64"], "/proc"),
    (
        "train-learning-rate",
        ["train", "--pipeline", "video", "--learning-rate", "-1", "--out", "runs"],
        "--learning-rate",
    ),
    ("train-net-arch", ["train", "--pipeline", "video", "--net-arch", "0,5", "--out", "runs"], "--net-arch"),
    ("train-gamma", ["train", "--pipeline", "video", "--gamma", "2", "--out", "runs"], "--gamma"),
    ("train-escaping-name", ["train", "--pipeline", "{h}/escaping-name.yaml", "--out", "runs"], "name"),
    ("train-vec-env", ["train", "--pipeline", "video", "--vec-env", "threads", "--out", "runs"], "--vec-env"),
    ("train-run-name", ["train", "--pipeline", "video", "--name", "../up", "--out", "runs"], "name"),
    ("train-seeds-zero", ["train", "--pipeline", "video", "--seeds", "0", "--out", "runs"], "--seeds"),
    (
        "train-grid-field",
        ["train", "--pipeline", "video", "--seeds", "2", "--grid", "magic=1", "--out", "runs"],
        "magic",
    ),
    ("train-grid-range", ["train", "--pipeline", "video", "--grid", "gamma=0.9,7", "--out", "runs"], "gamma"),
    ("train-workers-alone", ["train", "--pipeline", "video", "--workers", "2", "--out", "runs"], "--seeds"),
    ("train-continue-missing", ["train", "--pipeline", "video", "--continue", "{h}/nowhere"], "nowhere"),
    ("train-validation-windows", ["train", "--pipeline", "video", "--validation-windows", "0"], "--validation-windows"),
    # compare
    ("compare-policy", ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa,magic"], "magic"),
    (
        "compare-trace",
        ["compare", "--pipeline", "video", "--traces", "{h}/missing.csv", "--policies", "ipa"],
        "not found",
    ),
    (
        "compare-seeds-zero",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa", "--seeds", "0"],
        "--seeds",
    ),
    ("compare-empty-list", ["compare", "--pipeline", "video", "--traces", ",", "--policies", "ipa"], "--traces"),
    (
        "compare-out-file",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", "--out", "{h}/a-file"],
        "a-file",
    ),
    (
        "compare-out-proc",
        [
            "compare",
            "--pipeline",
            "video",
            "--traces",
            "bursty",
            "--policies",
            "static-min",
            "--out",
            "/proc/rlscale-out",
        ],
        "/proc",
    ),
    (
        "compare-out-has-results",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", "--out", "keep"],
        "--resume",
    ),
    # compare and demo: where the runs go (`rlscale.evaluate.sweep.add_executor_flags`)
    (
        "compare-executor",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", "--executor", "dask"],
        "--executor",
    ),
    (
        "compare-workers-zero",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", "--workers", "0"],
        "--workers",
    ),
    (
        "compare-ray-address-without-ray",
        [
            *("compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min"),
            *("--executor", "process", "--ray-address", "auto"),
        ],
        "--ray-address needs --executor ray",
    ),
    ("demo-workers-huge", ["demo", "--workers", "257"], "--workers"),
    # sidecar
    ("sidecar-url", ["sidecar", "--spec", "video", "--prometheus", "not a url", "--once"], "--prometheus"),
    (
        "sidecar-interval-zero",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--interval", "0", "--once"],
        "--interval",
    ),
    (
        "sidecar-interval-huge",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--interval", "1e308", "--once"],
        "--interval",
    ),
    (
        "sidecar-interval-nan",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--interval", "nan", "--once"],
        "--interval",
    ),
    (
        "sidecar-timeout-negative",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--timeout", "-1", "--once"],
        "--timeout",
    ),
    (
        "sidecar-token-binary",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--prometheus-token-file", "{h}/token.bin", "--once"],
        "token",
    ),
    (
        "sidecar-token-missing",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--prometheus-token-file", "{h}/none.token", "--once"],
        "token",
    ),
    (
        "sidecar-token-dev-zero",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--prometheus-token-file", "/dev/zero", "--once"],
        "token",
    ),
    (
        "sidecar-namespace",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--namespace", "Bad_NS", "--once"],
        "namespace",
    ),
    (
        "sidecar-kube-system",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--namespace", "kube-system", "--once"],
        "kube-system",
    ),
    (
        "sidecar-agent-other-pipeline",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--agent", SUM_QA_AGENT, "--once"],
        "agent",
    ),
    (
        "sidecar-metrics-port",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--metrics-port", "70000", "--once"],
        "--metrics-port",
    ),
    ("sidecar-spec-missing", ["sidecar", "--spec", "{h}/missing.yaml", "--prometheus", DOWN, "--once"], "not found"),
    # manifests
    ("manifests-interval-huge", ["manifests", "--spec", "video", "--interval", "1e308"], "--interval"),
    ("manifests-kube-system-flag", ["manifests", "--spec", "video", "--namespace", "kube-system"], "kube-system"),
    ("manifests-kube-system-spec", ["manifests", "--spec", "{h}/kube-system.yaml"], "kube-system"),
    ("manifests-namespace", ["manifests", "--spec", "video", "--namespace", "Bad_NS"], "namespace"),
    ("manifests-policy", ["manifests", "--spec", "video", "--policy", "magic"], "magic"),
    ("manifests-spec-deep", ["manifests", "--spec", "{h}/deep.yaml"], "nested"),
    # demo
    ("demo-out-file", ["demo", "--out", "{h}/a-file"], "a-file"),
    ("demo-out-proc", ["demo", "--out", "/proc/rlscale-demo"], "/proc"),
    # issue 14: hard limits, rlscale check, damping
    ("check-rps-negative", ["check", "--spec", "video", "--rps", "-1"], "--rps"),
    ("check-rps-nan", ["check", "--spec", "video", "--rps", "nan"], "--rps"),
    ("check-rps-huge", ["check", "--spec", "video", "--rps", "1e308"], "--rps"),
    ("check-trace-and-rps", ["check", "--spec", "video", "--trace", "bursty", "--rps", "3"], "not allowed"),
    ("check-trace-missing", ["check", "--spec", "video", "--trace", "{h}/missing.csv"], "not found"),
    ("check-spec-missing", ["check", "--spec", "{h}/missing.yaml"], "not found"),
    ("check-spec-deep", ["check", "--spec", "{h}/deep.yaml"], "nested"),
    ("check-sla-mode", ["check", "--spec", "video", "--set", "objective.sla_mode=strict"], "sla_mode"),
    (
        "simulate-damping-no-window",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--set", "damping.max_rollouts=3"],
        "rollout_window_s",
    ),
    (
        "simulate-damping-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--set", "damping.min_dwell_s=-5"],
        "min_dwell_s",
    ),
    # issue 14: deployable agents, monitors and network policy in manifests; the sidecar's agent hint
    ("manifests-agent-other-pipeline", ["manifests", "--spec", "video", "--agent", SUM_QA_AGENT], "sum-qa"),
    ("manifests-agent-garbage", ["manifests", "--spec", "video", "--agent", "{h}/garbage.zip"], "agent"),
    ("manifests-agent-dev-zero", ["manifests", "--spec", "video", "--agent", "/dev/zero"], "not a regular file"),
    ("manifests-agent-folder", ["manifests", "--spec", "video", "--agent", "{h}"], "folder"),
    ("manifests-agent-missing", ["manifests", "--spec", "video", "--agent", "{h}/missing.npz"], "no such file"),
    (
        "manifests-agent-wrong-policy",
        ["manifests", "--spec", "video", "--agent", SUM_QA_AGENT, "--policy", "hpa"],
        "--agent is for",
    ),
    ("manifests-tuning-binary", ["manifests", "--spec", "video", "--tuning", "{h}/token.bin"], "JSON"),
    ("manifests-tuning-dev-zero", ["manifests", "--spec", "video", "--tuning", "/dev/zero"], "not a regular file"),
    (
        "manifests-tuning-wrong-policy",
        ["manifests", "--spec", "video", "--tuning", "{h}/nan.csv", "--policy", "ipa"],
        "--tuning is for",
    ),  # fmt: skip
    ("manifests-two-monitors", ["manifests", "--spec", "video", "--service-monitor", "--pod-monitor"], "not allowed"),
    ("manifests-monitor-label-alone", ["manifests", "--spec", "video", "--monitor-label", "a=b"], "--pod-monitor"),
    (
        "manifests-monitor-label-value",
        ["manifests", "--spec", "video", "--pod-monitor", "--monitor-label", "a=" + "x" * 100],
        "label value",
    ),
    (
        "manifests-api-server-cidr",
        ["manifests", "--spec", "video", "--network-policy", "--api-server-cidr", "999.0.0.0/8"],
        "CIDR",
    ),
    ("manifests-cidr-alone", ["manifests", "--spec", "video", "--api-server-cidr", "10.0.0.1"], "--network-policy"),
    (
        "manifests-prometheus-user-only",
        ["manifests", "--spec", "video", "--prometheus", "http://alice@prom:9090"],
        "user and a password",
    ),
    (
        "sidecar-agent-policy-hpa",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--agent", SUM_QA_AGENT, "--policy", "hpa", "--once"],
        "--agent",
    ),
    # issue 14: visibility (--timeline of simulate and sidecar)
    (
        "simulate-timeline-not-csv",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--timeline", "t.png"],
        ".csv",
    ),
    (
        "simulate-timeline-under-a-file",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--timeline", "{h}/a-file/t.csv"],
        "not a folder",
    ),
    (
        "simulate-timeline-proc",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--timeline", "/proc/t.csv"],
        "--timeline",
    ),
    (
        "sidecar-timeline-other-csv",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--timeline", "keep/results.csv", "--once"],
        "another",
    ),
    (
        "sidecar-timeline-proc",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--timeline", "/proc/t.csv", "--once"],
        "--timeline",
    ),
    # issue 14: own traffic, tuning, fair baselines
    (
        "train-traces-short",
        ["train", "--pipeline", "video", "--traces", EVAL_CSV, "--window-s", "5000", "--out", "runs"],
        "shorter than one training window",
    ),
    ("train-traces-eval-window", ["train", "--pipeline", "video", "--traces", "bursty", "--out", "runs"], "never"),
    ("train-traces-bad-csv", ["train", "--pipeline", "video", "--traces", "{h}/negative.csv"], "rps must be"),
    ("train-traces-twice", ["train", "--pipeline", "video", "--traces", "twitter,twitter"], "listed twice"),
    ("train-eval-traces", ["train", "--pipeline", "video", "--eval-traces", "nowhere"], "unknown trace"),
    ("train-validation-fraction", ["train", "--pipeline", "video", "--validation-fraction", "1"], "fraction"),
    ("train-window-s", ["train", "--pipeline", "video", "--window-s", "0"], "--window-s"),
    ("train-damping", ["train", "--pipeline", "video", "--damping", "0"], "--damping"),
    ("tune-no-out", ["tune", "--pipeline", "video"], "--out"),
    ("tune-out-folder", ["tune", "--pipeline", "video", "--out", "{h}"], "folder"),
    ("tune-out-not-json", ["tune", "--pipeline", "video", "--out", "{h}/a-file"], "cannot read it"),
    ("tune-out-proc", ["tune", "--pipeline", "video", "--windows", "1", "--out", "/proc/rlscale/t.json"], "/proc"),
    ("tune-windows-zero", ["tune", "--pipeline", "video", "--windows", "0", "--out", "t.json"], "--windows"),
    ("tune-policy", ["tune", "--pipeline", "video", "--policy", "ppo", "--out", "t.json"], "--policy"),
    ("tune-traces-eval", ["tune", "--pipeline", "video", "--traces", "bursty", "--out", "t.json"], "never"),
    ("tune-traces-none", ["tune", "--pipeline", "video", "--traces", "none", "--out", "t.json"], "none"),
    ("tune-traces-bad-csv", ["tune", "--pipeline", "video", "--traces", "{h}/nan.csv", "--out", "t.json"], "nan"),
    ("tune-spec-deep", ["tune", "--pipeline", "{h}/deep.yaml", "--out", "t.json"], "nested"),
    (
        "simulate-tuning-missing",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa-tuned", "--tuning", "{h}/no.json"],
        "rlscale tune --pipeline video",
    ),
    (
        "simulate-tuning-garbage",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa-tuned", "--tuning", "{h}/a-file"],
        "cannot read",
    ),
    (
        "simulate-tuning-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--tuning", "{h}/a-file"],
        "--tuning",
    ),
    (
        "simulate-hpa-variant",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--hpa-variant", "gpt9"],
        "gpt9",
    ),
    (
        "simulate-hpa-variant-count",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--hpa-variant", "a,b,c"],
        "one per stage",
    ),
    (
        "simulate-hpa-batch",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--hpa-batch", "3"],
        "batch size 3",
    ),
    (
        "simulate-hpa-cores",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--hpa-cores", "1,999"],
        "core count 999",
    ),
    (
        "simulate-hpa-target",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--hpa-target", "1.5"],
        "--hpa-target",
    ),
    (
        "simulate-hpa-flag-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--hpa-target", "0.5"],
        "--hpa-target",
    ),
    (
        "compare-hpa-batch-word",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "hpa", "--hpa-batch", "big"],
        "--hpa-batch",
    ),
    (
        "sidecar-tuning-missing",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "ipa-tuned", "--tuning", "{h}/no.json"],
        "no such file",
    ),
    (
        "sidecar-hpa-cores",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "hpa", "--hpa-cores", "0"],
        "--hpa-cores",
    ),
    # issue 15: training throughput (bench's train section)
    ("bench-sections-unknown", ["bench", "--sections", "sim,gpu"], "--sections"),
    ("bench-sections-empty", ["bench", "--sections", ","], "--sections"),
    ("bench-train-steps-zero", ["bench", "--sections", "train", "--train-steps", "0"], "--train-steps"),
    ("bench-train-steps-word", ["bench", "--train-steps", "lots"], "--train-steps"),
    ("bench-train-steps-huge", ["bench", "--train-steps", "99999999999"], "--train-steps"),
    ("bench-train-steps-without-train", ["bench", "--sections", "sim", "--train-steps", "10"], "--train-steps"),
    # issue 15: the conditioned agent's training flags
    (
        "train-action-design",
        ["train", "--pipeline", "video", "--action-design", "both", "--out", "runs"],
        "--action-design",
    ),
    ("train-weights", ["train", "--pipeline", "video", "--weights", "random", "--out", "runs"], "--weights"),
    ("train-curriculum", ["train", "--pipeline", "video", "--curriculum", "genet", "--out", "runs"], "--curriculum"),
    ("train-prior", ["train", "--pipeline", "video", "--prior", "imitate", "--out", "runs"], "--prior"),
    (
        "train-reward-scale",
        ["train", "--pipeline", "video", "--reward-scale", "cores", "--out", "runs"],
        "--reward-scale",
    ),
    (
        "train-min-load-scale-zero",
        ["train", "--pipeline", "video", "--min-load-scale", "0", "--out", "runs"],
        "--min-load-scale",
    ),
    (
        "train-max-load-scale-nan",
        ["train", "--pipeline", "video", "--max-load-scale", "nan", "--out", "runs"],
        "--max-load-scale",
    ),
    (
        "train-load-scales-inverted",
        ["train", "--pipeline", "video", "--min-load-scale", "2", "--max-load-scale", "1", "--out", "runs"],
        "--min-load-scale",
    ),
    # issue 15: ipa-hold (--hold-delta) and --load-scale
    (
        "simulate-load-scale-zero",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "0"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "-2"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-nan",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "nan"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-inf",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "inf"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-word",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "double"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-huge",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--load-scale", "1e9"],
        "--load-scale",
    ),
    (
        "simulate-load-scale-over-limit",
        ["simulate", "--pipeline", "video", "--trace", EVAL_CSV, "--policy", "ipa", "--load-scale", "1000"],
        "limit",
    ),
    (
        "compare-load-scale-zero",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa", "--load-scale", "0"],
        "--load-scale",
    ),
    (
        "compare-load-scale-nan",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa", "--load-scale", "nan"],
        "--load-scale",
    ),
    (
        "simulate-hold-delta-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa-hold", "--hold-delta", "-1"],
        "--hold-delta",
    ),
    (
        "simulate-hold-delta-nan",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa-hold", "--hold-delta", "nan"],
        "--hold-delta",
    ),
    (
        "simulate-hold-delta-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--hold-delta", "1"],
        "--hold-delta is for the ipa-hold",
    ),
    (
        "compare-hold-delta-unused",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "ipa,hpa", "--hold-delta", "1"],
        "--hold-delta is for the ipa-hold",
    ),
    (
        "simulate-hold-tuning-missing",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa-hold", "--tuning", "{h}/no.json"],
        "rlscale tune --pipeline video --policy ipa-hold",
    ),
    (
        "simulate-hold-tuning-garbage",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa-hold", "--tuning", "{h}/a-file"],
        "cannot read",
    ),
    (
        "sidecar-hold-delta",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "ipa-hold", "--hold-delta", "x"],
        "--hold-delta",
    ),
    # issue 16: the VPA policy's flags
    (
        "simulate-vpa-target-zero",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "vpa", "--vpa-target", "0"],
        "--vpa-target",
    ),
    (
        "simulate-vpa-target-over-1",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "vpa", "--vpa-target", "1.5"],
        "--vpa-target",
    ),
    (
        "simulate-vpa-margin-nan",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "vpa", "--vpa-margin", "nan"],
        "--vpa-margin",
    ),
    (
        "simulate-vpa-margin-negative",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "vpa", "--vpa-margin", "-0.1"],
        "--vpa-margin",
    ),
    (
        "simulate-vpa-min-replicas-zero",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "vpa", "--vpa-min-replicas", "0"],
        "--vpa-min-replicas",
    ),
    (
        "simulate-vpa-flag-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--vpa-target", "0.5"],
        "--vpa-target is for the vpa policy",
    ),
    (
        "compare-vpa-margin-word",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "vpa", "--vpa-margin", "big"],
        "--vpa-margin",
    ),
    (
        "sidecar-vpa-min-replicas",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "vpa", "--vpa-min-replicas", "1.5"],
        "--vpa-min-replicas",
    ),
    # the VPA's InfAdapter updater and its pins
    (
        "simulate-vpa-updater-unknown",
        [*VPA_INFADAPTER, "--vpa-updater", "kubelet"],
        "--vpa-updater",
    ),
    (
        "simulate-vpa-updater-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "hpa", "--vpa-updater", "infadapter"],
        "--vpa-updater is for the vpa policy",
    ),
    (
        "simulate-vpa-min-replicas-with-infadapter-updater",
        [*VPA_INFADAPTER, "--vpa-updater", "infadapter", "--vpa-min-replicas", "2"],
        "--vpa-min-replicas is for --vpa-updater kubernetes",
    ),
    (
        "simulate-vpa-variant-unknown",
        [*VPA_INFADAPTER, "--vpa-variant", "resnet9000"],
        "--vpa-variant: stage resnet has no variant 'resnet9000'",
    ),
    (
        "simulate-vpa-variant-too-many",
        [*VPA_INFADAPTER, "--vpa-variant", "resnet18,resnet50"],
        "--vpa-variant: give one name, or one per stage",
    ),
    (
        "simulate-vpa-variant-empty",
        [*VPA_INFADAPTER, "--vpa-variant", ","],
        "--vpa-variant",
    ),
    (
        "simulate-vpa-variant-unused",
        ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "ipa", "--vpa-variant", "resnet50"],
        "--vpa-variant is for the vpa policy",
    ),
    (
        "simulate-vpa-cores-off-the-list",
        [*VPA_INFADAPTER, "--vpa-cores", "1"],
        "--vpa-cores: stage resnet has no core count 1",
    ),
    (
        "simulate-vpa-cores-zero",
        [*VPA_INFADAPTER, "--vpa-cores", "0"],
        "--vpa-cores",
    ),
    (
        "simulate-vpa-cores-word",
        [*VPA_INFADAPTER, "--vpa-cores", "twenty"],
        "--vpa-cores",
    ),
    (
        "simulate-vpa-cores-too-many",
        [*VPA_INFADAPTER, "--vpa-cores", "20,20"],
        "--vpa-cores: give one value, or one per stage",
    ),
    (
        "compare-vpa-cores-unused",
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "hpa", "--vpa-cores", "2"],
        "--vpa-cores is for the vpa policy",
    ),
    (
        "sidecar-vpa-updater-unknown",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "vpa", "--vpa-updater", "none"],
        "--vpa-updater",
    ),
    # profile: each point setting, the factory and the output folder are checked before anything is measured
    ("profile-no-module", [*PROFILE, "--model", "nope:build"], "no module named 'nope'"),
    ("profile-not-module-function", [*PROFILE, "--model", "rlscale.examples.mlp"], "expected MODULE:FUNCTION"),
    ("profile-no-function", [*PROFILE, "--model", "rlscale.examples.mlp:nothing"], "has no function 'nothing'"),
    ("profile-unknown-variant", [*MLP_PROFILE, "--variants", "mlp-7"], "mlp-7"),
    ("profile-too-many-cores", [*MLP_PROFILE, "--cores", "4096"], "--cores 4096"),  # the last --cores counts
    ("profile-batch-zero", [*MLP_PROFILE, "--batch", "0"], "--batch"),
    ("profile-out-missing-folder", [*MLP_PROFILE, "--out", "{h}/no/such/p.csv"], "does not exist"),
    (
        "profile-url-refused",
        [*PROFILE, "--url", "http://127.0.0.1:9", "--model-name", "m", "--variant", "v"],
        "cannot reach the server",
    ),  # fmt: skip
    # serve: every setting is checked before a port is bound or the factory imported
    ("serve-nothing", ["serve"], "no model factory: give --model or set RLSCALE_MODEL_FACTORY"),
    ("serve-factory-path", [*SERVE, "--model", "../evil.py"], "expected MODULE:FUNCTION"),
    ("serve-batch-words", [*SERVE, "--batch", "many"], "--batch 'many': expected an integer"),
    ("serve-batch-huge", [*SERVE, "--batch", "1e300"], "--batch '1e300': expected an integer"),
    ("serve-timeout-nan", [*SERVE, "--batch-timeout", "nan"], "--batch-timeout 'nan'"),
    ("serve-stage-newline", [*SERVE, "--stage", "a\nb"], "--stage 'a\\nb': expected 1-253 printable"),
    ("serve-name-escapes", [*SERVE, "--name", "../x"], "--name '../x' cannot name the model"),
    ("serve-port-zero", [*SERVE, "--http-port", "0"], "--http-port: must be between 1 and 65535"),
    ("serve-ports-shared", [*SERVE, "--http-port", "9", "--metrics-port", "9"], "already --http-port's"),
    # calibrate: the spec and the flags, before anything is served (more: tests/test_hostile_inputs_calibrate.py)
    ("calibrate-spec-deep", [*CALIBRATE, "--spec", "{h}/deep.yaml"], "nested"),
    ("calibrate-unknown-stage", [*CALIBRATE, "--spec", "video", "--model", "nope=m:f"], "unknown stage 'nope'"),
    ("calibrate-fraction-zero", [*CALIBRATE, "--spec", "video", "--load-fraction", "0"], "must be > 0 and <= 1.5"),
]


def test_enough_hostile_inputs_over_every_command():
    from rlscale.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    covered = {argv[0] for _, argv, _ in CASES}
    assert covered == set(action.choices)
    assert len(CASES) >= 50


# cases that run the real process: a regression would hang, read without end or blow up memory in the test process
BOUNDED = {
    *("spec-dev-zero", "trace-dev-zero", "sidecar-token-dev-zero", "manifests-agent-dev-zero"),
    *("manifests-tuning-dev-zero", "spec-deep", "manifests-spec-deep", "check-spec-deep", "tune-spec-deep"),
    "calibrate-spec-deep",
    "spec-bad-template",
}
# and a few smoke cases, one per kind of failure (usage error, spec, output folder, agent, url, import)
SMOKE = {"sim-policy", "spec-missing", "compare-out-has-results", "train-resume-other-pipeline", "sidecar-url"}
SMOKE |= {"profile-no-module"}
SUBPROCESS = BOUNDED | SMOKE


def test_the_subprocess_cases_exist():
    assert SUBPROCESS <= {c[0] for c in CASES}


@pytest.mark.parametrize(("argv", "fragment", "in_subprocess"), list(params(CASES, SUBPROCESS)))
def test_bad_input_gets_one_line_and_exit_2(tmp_path, hostile, cli_main, argv, fragment, in_subprocess):
    (tmp_path / "keep").mkdir()
    kept = {tmp_path / "keep" / "results.csv": b"trace,policy\nbursty,ipa\n", tmp_path / "keep.png": b"\x89PNG..."}
    for path, data in kept.items():
        path.write_bytes(data)
    args = [a.replace("{h}", str(hostile)) for a in argv]
    result = run(cli_main, args, tmp_path, in_subprocess)
    assert_one_error_line(result, args[0], fragment)
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run folder was left"
    assert not (ROOT.parent / "escaped").exists()
