"""``rlscale profile``: the bundled and a user's own factory in-process, a served model, the CSV a spec accepts with
its run times beside it, ``--json`` as one document, each bad input as one line (exit 2), and an interrupt keeping
the finished points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlscale.cli.parser import main
from rlscale.profiles import DISTRIBUTION_COLUMNS, PROFILE_COLUMNS, RUNS_COLUMNS, load_profile, runs_path
from rlscale.profiling.inprocess import usable_cpus
from tests.profiling.v2_server import ServedModel, serve

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--warmup", "1", "--repeats", "3"]

USER_FACTORY = """
import os, signal, sys, time

VARIANTS = ("a", "b")


def build(variant):
    print("factory noise on stdout")
    os.write(1, b"C-level noise on fd 1\\n")
    if variant == os.environ.get("BREAK_VARIANT"):
        raise RuntimeError("cannot load weights.bin")
    if variant == "b" and os.environ.get("INTERRUPT_WITH"):
        # the profiler gets the signal while it waits for this point
        os.kill(os.getppid(), getattr(signal, os.environ["INTERRUPT_WITH"]))
        time.sleep(60)

    def model(batch):
        if len(batch) > 4:
            raise ValueError(f"at most 4 inputs per batch, got {len(batch)}")
        print("model noise")
        return sum(batch)

    return model, lambda b: [1.0] * b
"""


@pytest.fixture
def user_dir(tmp_path):
    """A folder holding the user's own factory module ``mymodels`` (and the outputs)."""
    (tmp_path / "mymodels.py").write_text(USER_FACTORY)
    return tmp_path


def rlscale(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m rlscale.cli ARGS`` in ``cwd`` (this checkout's rlscale first on the path)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environ.pop("RLSCALE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=environ
    )


@pytest.mark.slow
def test_the_bundled_numpy_model_json_is_one_document_matching_the_csv(tmp_path, capfd):
    out = tmp_path / "mlp.csv"
    argv = ["profile", "--model", "rlscale.examples.mlp:build", "--variants", "mlp-256,mlp-512", "--batch", "4,1,2"]
    assert main([*argv, "--cores", "1", *FAST, "--out", str(out), "--json"]) == 0
    captured = capfd.readouterr()
    doc = json.loads(captured.out)  # the whole of stdout is one document
    assert set(doc) == {"mode", "model", "out", "runs", "source", "points", "fits", "overhead"}
    assert doc["mode"] == "in-process" and doc["out"] == str(out) and doc["model"] == "rlscale.examples.mlp:build"
    assert doc["runs"] == str(tmp_path / "mlp.runs.csv") and doc["overhead"] is None
    assert [(p["variant"], p["batch"], p["cores"]) for p in doc["points"]] == [
        (v, b, 1) for v in ("mlp-256", "mlp-512") for b in (1, 2, 4)
    ]
    assert all(p["repeats"] == 3 and 0 < p["p50_s"] <= p["p90_s"] <= p["p99_s"] for p in doc["points"])
    assert all(p["min_s"] <= p["mean_s"] <= p["max_s"] and p["overhead_s"] is None for p in doc["points"])
    assert [f["variant"] for f in doc["fits"]] == ["mlp-256", "mlp-512"]
    for fit in doc["fits"]:
        assert fit["points"] == 3 and fit["max_rel_error"] >= fit["mean_rel_error"] >= 0
        assert min(fit["gamma"], fit["delta"], fit["eps"], fit["eta"]) >= 0 and fit["loo_max_rel_error"] is None
    assert doc["source"].startswith("rlscale profile in-process p99 of 3 after 1 warm-up; CPU ")
    model = load_profile(out)
    for p in doc["points"]:
        key = (p["variant"], p["batch"], p["cores"])
        assert model.latency_s(*key) == pytest.approx(p["p99_s"], rel=1e-5)
        for name in ("p50", "mean", "p90", "p99"):
            assert model.statistic_s(*key, name) == pytest.approx(p[f"{name}_s"], rel=1e-5)
        runs = model.runs_s(*key)
        assert len(runs) == 3 and min(runs) == pytest.approx(p["min_s"], rel=1e-5)


@pytest.mark.slow
def test_the_table_shows_each_point_and_each_variants_fit(tmp_path, capfd):
    out = tmp_path / "p.csv"
    cores = ",".join(map(str, sorted({1, len(usable_cpus())})))
    argv = ["profile", "--model", "rlscale.examples.mlp:build", "--variants", "mlp-256", "--batch", "1,2,4"]
    assert main([*argv, "--cores", cores, *FAST, "--out", str(out)]) == 0
    text = capfd.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("│ mlp-256")]
    n_cores = len(cores.split(","))
    assert len(rows) == 3 * n_cores + 1  # the points, then the fit's row
    assert "fit of p99: l = gamma*b/c + delta*b + eps/c + eta" in text and "leave-one-out max" in text
    assert f"wrote {3 * n_cores} points to {out}" in text
    assert ("fitted exactly" in text) == (n_cores == 1)  # 3 points: the fit says nothing about its error


@pytest.mark.slow
def test_the_written_profile_is_accepted_by_a_spec(tmp_path, capfd):
    """Profile the tiny model, point a spec's stage at the CSV, and `rlscale pipelines --spec` validates it."""
    out = tmp_path / "tiny.csv"
    argv = ["profile", "--model", "rlscale.examples.mlp:build", "--variants", "mlp-256,mlp-1024", "--batch", "1,2"]
    assert main([*argv, "--cores", "1", *FAST, "--out", str(out)]) == 0
    spec = {
        "name": "tiny",
        "description": "one stage of profiled MLPs",
        "sla_s": 1.0,
        "drop_limit_s": 2.0,
        "interval_s": 10,
        "batch_timeout_s": 0.05,
        "core_budget": 8,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0.001, "accuracy_method": "product"},
        "stages": [
            {
                "name": "classify",
                "task": "tiny-mlp",
                "profile": "tiny.csv",
                "batch_sizes": [1, 2],
                "cores": [1],
                "min_replicas": 1,
                "max_replicas": 4,
                "variants": [
                    {"name": "mlp-256", "accuracy": 0.5, "startup_s": 1},
                    {"name": "mlp-1024", "accuracy": 0.6, "startup_s": 2},
                ],
            }
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    capfd.readouterr()
    assert main(["pipelines", "--spec", str(path), "--json"]) == 0
    (loaded,) = json.loads(capfd.readouterr().out)
    assert [v["name"] for v in loaded["stages"][0]["variants"]] == ["mlp-256", "mlp-1024"]
    from rlscale.spec import load_spec

    latency = load_spec(path).stages[0].latency
    assert latency.latency_s("mlp-1024", 2, 1) == load_profile(out).latency_s("mlp-1024", 2, 1)


@pytest.mark.slow
def test_a_users_own_factory_from_the_current_folder(user_dir, monkeypatch, capfd):
    """``--model mymodels:build`` from the folder that holds mymodels.py: found there, by the workers too, and what
    it prints does not break ``--json``."""
    monkeypatch.chdir(user_dir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(user_dir))])
    assert (
        main(
            [
                "profile",
                "--model",
                "mymodels:build",
                "--batch",
                "1,3",
                "--cores",
                "1",
                *FAST,
                "--out",
                "u.csv",
                "--json",
            ]
        )
        == 0
    )
    captured = capfd.readouterr()
    doc = json.loads(captured.out)
    assert [(p["variant"], p["batch"]) for p in doc["points"]] == [("a", 1), ("a", 3), ("b", 1), ("b", 3)]
    assert "factory noise on stdout" in captured.err and "C-level noise on fd 1" in captured.err
    rows = (user_dir / "u.csv").read_text().splitlines()
    assert rows[0] == ",".join(PROFILE_COLUMNS + DISTRIBUTION_COLUMNS) and len(rows) == 5
    runs = (user_dir / "u.runs.csv").read_text().splitlines()
    assert runs[0] == ",".join(RUNS_COLUMNS) and len(runs) == 1 + 4 * 3  # every timed run, the repeats of each


def test_a_served_model(tmp_path, capfd):
    out = tmp_path / "served.csv"
    with serve(ServedModel(name="classifier")) as (url, served):
        argv = ["profile", "--url", url, "--model-name", "classifier", "--variant", "mlp-256", "--batch", "1,2"]
        assert main([*argv, "--cores", "2", *FAST, "--out", str(out), "--json"]) == 0
    captured = capfd.readouterr()
    doc = json.loads(captured.out)
    assert doc["mode"] == "served" and doc["model"] == f"{url} classifier"
    assert [(p["variant"], p["batch"], p["cores"]) for p in doc["points"]] == [("mlp-256", 1, 2), ("mlp-256", 2, 2)]
    assert f"server {url} model classifier input images FP32 b x 3x32x32 on this machine's CPU " in doc["source"]
    assert {tuple(s) for s in served.requests} == {(1, 3, 32, 32), (2, 3, 32, 32)}
    model = load_profile(out)
    assert model.variants == ["mlp-256"] and model.latency_s("mlp-256", 2, 2) == pytest.approx(
        doc["points"][1]["p99_s"], rel=1e-5
    )
    assert len(model.runs_s("mlp-256", 2, 2)) == 3 and not model.has_overhead
    # a server without metrics: the overhead is left empty, said in one line on stderr, and nothing is sent for it
    overhead = doc["overhead"]
    assert overhead["overhead_s"] is None and overhead["note"] == f"no metrics at {url}/metrics (HTTP 404)"
    assert captured.err.strip() == (
        f"rlscale profile: overhead_s left empty: no metrics at {url}/metrics (HTTP 404) (where the server exports its "
        "metrics elsewhere: --metrics-url)"
    )
    assert len(served.requests) == 2 * (1 + 3)


def test_overhead_requests_zero_measures_no_overhead(tmp_path, capfd):
    out = tmp_path / "served.csv"
    with serve() as (url, served):
        argv = ["profile", "--url", url, "--model-name", "mlp", "--batch", "1", "--cores", "1", *FAST]
        assert main([*argv, "--out", str(out), "--overhead-requests", "0", "--json"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["overhead"] is None and captured.err == ""
    assert len(served.requests) == 1 + 3


def test_a_rerun_replaces_its_run_times_but_never_a_file_of_another_kind(tmp_path, capfd):
    argv = ["profile", "--model", "rlscale.examples.mlp:build", "--variants", "mlp-256", "--cores", "1", *FAST]
    out = tmp_path / "p.csv"
    assert main([*argv, "--batch", "1,2", "--out", str(out)]) == 0
    assert main([*argv, "--batch", "4", "--out", str(out)]) == 0
    assert "wrote 1 point to" in capfd.readouterr().out
    assert sorted(load_profile(out).points) == [("mlp-256", 4, 1.0)]
    assert len(runs_path(out).read_text().splitlines()) == 1 + 3
    theirs = tmp_path / "q.runs.csv"
    theirs.write_text("name,score\nalice,3\n")
    assert main([*argv, "--batch", "1", "--out", str(tmp_path / "q.csv")]) == 2
    err = capfd.readouterr().err
    assert f"--out's run times {theirs}: is not a run-times file (variant,batch,cores,run_s)" in err
    assert theirs.read_text() == "name,score\nalice,3\n" and not (tmp_path / "q.csv").exists()


def _one_line_exit_2(result: subprocess.CompletedProcess, expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]


BAD_INPUT = {
    "unknown module": (["--model", "nosuchmodels:build"], "no module named 'nosuchmodels'"),
    "no such function": (["--model", "mymodels:make"], "module mymodels has no function 'make'"),
    "not module:function": (["--model", "mymodels"], "expected MODULE:FUNCTION"),
    "factory raises": (
        ["--model", "mymodels:build", "--variants", "a"],
        "the factory failed for variant 'a': RuntimeError: cannot load weights.bin",
    ),
    "variant not in VARIANTS": (["--model", "rlscale.examples.mlp:build", "--variants", "mlp-7"], "mlp-7 not in"),
    "batch zero": (["--model", "mymodels:build", "--batch", "0"], "argument --batch: must be between 1 and"),
    "batch negative": (["--model", "mymodels:build", "--batch=-2"], "argument --batch: must be between 1 and"),
    "batch not an integer": (["--model", "mymodels:build", "--batch", "1,2.5"], "expected an integer, got '2.5'"),
    "cores not an integer": (["--model", "mymodels:build", "--cores", "two"], "expected an integer, got 'two'"),
    "cores zero": (["--model", "mymodels:build", "--cores", "0"], "argument --cores: must be between 1 and"),
    "more cores than the machine": (
        ["--model", "mymodels:build", "--cores", str(len(usable_cpus()) + 1)],
        f"this machine lets rlscale use {len(usable_cpus())} CPU",
    ),
    "out in a missing folder": (
        ["--model", "mymodels:build", "--out", "nowhere/p.csv"],
        "folder nowhere does not exist",
    ),
    "out not a csv": (["--model", "mymodels:build", "--out", "p.txt"], "give a path ending in .csv"),
    "no source": (["--variants", "a"], "one of the arguments --model --url is required"),
    "url without model name": (["--url", "http://127.0.0.1:1"], "--url needs --model-name"),
    "variants with url": (["--url", "http://127.0.0.1:1", "--model-name", "m", "--variants", "a"], "--variants is for"),
    "served flag with model": (["--model", "mymodels:build", "--datatype", "FP32"], "--datatype is for a served model"),
    "metrics url with model": (
        ["--model", "mymodels:build", "--metrics-url", "http://127.0.0.1:1/metrics"],
        "--metrics-url is for a served model",
    ),
    "overhead requests negative": (["--url", "http://127.0.0.1:1", "--overhead-requests=-1"], "must be between 0"),
    "metrics url not http": (
        ["--url", "http://127.0.0.1:1", "--model-name", "m", "--metrics-url", "ftp://u:secret@h/metrics"],
        "--metrics-url 'ftp://***@h/metrics': expected http://HOST:PORT",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
@pytest.mark.subprocess
def test_bad_input_is_one_line_and_exit_2(user_dir, case):
    extra, expected = BAD_INPUT[case]
    args = ["--batch", "1", "--cores", "1", "--out", "p.csv", *FAST]
    env = {"BREAK_VARIANT": "a"} if case == "factory raises" else None
    result = rlscale("profile", *args, *extra, cwd=user_dir, env=env)  # later flags win: extra overrides the defaults
    _one_line_exit_2(result, expected)
    assert not (user_dir / "p.csv").exists()
    # nothing on stdout but what the user's module printed there (no --json here)
    assert result.stdout in ("", "factory noise on stdout\nC-level noise on fd 1\n"), result.stdout


@pytest.mark.subprocess
def test_an_unreachable_server_and_a_model_not_ready(user_dir):
    args = ["profile", "--model-name", "mlp", "--batch", "1", "--cores", "1", "--out", "p.csv"]
    result = rlscale(*args, "--url", "http://127.0.0.1:1", cwd=user_dir)
    _one_line_exit_2(result, "--url http://127.0.0.1:1: cannot reach the server: Connection refused")
    with serve(ServedModel(ready=False)) as (url, _):
        result = rlscale(*args, "--url", url, cwd=user_dir)
    _one_line_exit_2(result, f"model 'mlp' at {url} is not ready (GET {url}/v2/models/mlp/ready: HTTP 503: loading)")
    assert not (user_dir / "p.csv").exists()


@pytest.mark.subprocess
def test_a_batch_the_model_rejects_keeps_the_points_finished_before(user_dir):
    result = rlscale("profile", "--model", "mymodels:build", "--variants", "a", "--batch", "2,8", "--cores", "1",
                     "--out", "p.csv", *FAST, cwd=user_dir)  # fmt: skip
    _one_line_exit_2(result, "variant 'a' rejects batch 8: ValueError: at most 4 inputs per batch, got 8")
    assert "1 point finished before, written to p.csv" in result.stderr
    assert [r.split(",")[:3] for r in (user_dir / "p.csv").read_text().splitlines()[1:]] == [["a", "2", "1"]]


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.subprocess
def test_an_interrupt_writes_the_finished_points(user_dir, signal_name, code):
    """The worker of variant b signals the profiler while it waits: a's two points are written, b's are not."""
    result = rlscale("profile", "--model", "mymodels:build", "--batch", "1,2", "--cores", "1", "--out", "p.csv",
                     *FAST, "--json", cwd=user_dir, env={"INTERRUPT_WITH": signal_name})  # fmt: skip
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"rlscale profile: interrupted by {signal_name}: 2 of 4 points finished, written to p.csv"
    assert "Traceback" not in result.stderr and result.stdout == ""
    model = load_profile(user_dir / "p.csv")
    assert sorted(model.points) == [("a", 1, 1.0), ("a", 2, 1.0)]
    assert [len(model.runs_s("a", b, 1)) for b in (1, 2)] == [3, 3]  # their run times too
    assert not list(user_dir.glob(".p.tmp-*")) and not list(user_dir.glob(".p.runs.tmp-*"))
