"""`rlscale.evaluate.sweep`'s ``ray`` executor: the same results as ``serial`` on a local Ray (2 CPUs, started once for
the module), a bad ``--ray-address`` is one line and exit 2 in bounded time, and a missing ray extra is one line.

A Ray that cannot start skips these tests, but fails them under ``CI=true`` (where the ray extra is installed)."""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
import time

import pytest

from rlscale.cli import main
from rlscale.evaluate import sweep
from rlscale.evaluate.compare import RunSpec, run, run_comparison
from rlscale.evaluate.sweep import make_executor
from tests.evaluate.test_sweep import FACTORY, _grid, _rows, _trace

CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with 2 CPUs for the module; the executor uses it (and leaves it running) rather than start one."""
    try:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ImportError without the extra, or a Ray that cannot start here
        message = f"a local Ray cannot start: {type(exc).__name__}: {exc}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    yield ray
    ray.shutdown()


@pytest.mark.e2e
def test_ray_gives_the_same_results_as_serial_in_the_same_order(tmp_path, ray_session):
    traces, policies, kwargs = _grid(tmp_path)
    run_comparison("video", traces, policies, out=tmp_path / "serial", executor="serial", **kwargs)
    ray = run_comparison("video", traces, policies, out=tmp_path / "ray", executor="ray", workers=2, **kwargs)
    order = [(t, p, s) for t in traces for p in policies for s in range(2)]
    assert [(r["trace"], r["policy"], r["seed"]) for r in ray.records] == order
    assert len(_rows(tmp_path / "ray")) == 12
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "serial")
    assert ray_session.is_initialized()  # the caller's Ray is left running
    paths = [f"/a/{i}.csv" for i in range(5)]  # any module-level function: here a plain Python one
    assert dict(make_executor("ray", 2).imap_unordered(posixpath.basename, paths)) == {i: f"{i}.csv" for i in range(5)}


@pytest.mark.e2e
def test_the_ray_cli_keeps_stdout_to_the_table(tmp_path, capfd, ray_session):
    trace = _trace(tmp_path / "short.csv", [5, 25, 8])
    out = tmp_path / "out"
    code = main(
        ["compare", "--pipeline", "video", "--traces", trace, "--policies", "static-min,fa2-low"]
        + ["--out", str(out), "--no-timelines", "--executor", "ray", "--workers", "2"]
    )
    assert code == 0
    stdout = capfd.readouterr().out.splitlines()
    assert stdout[0].startswith("# video") and stdout[-1].startswith("wrote ")
    assert all(line == "" or line.startswith(("#", "|", "- ", "wrote ")) for line in stdout)  # ("- ": notes)
    assert len(_rows(out)) == 2


@pytest.mark.subprocess
def test_a_bad_ray_address_is_one_line_and_exit_2_in_bounded_time(tmp_path):
    # a process of its own: this one may hold the module's Ray; sweep.RAY_CONNECT_ENV bounds Ray's connect
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = tmp_path / "out"  # earlier results, which --overwrite must not remove before the cluster is reached
    out.mkdir()
    earlier = {
        "records.jsonl": '{"trace": "bursty"}\n',
        "results.csv": "trace,policy\nbursty,ipa\n",
        "settings.json": "{}",
    }
    for name, text in earlier.items():
        (out / name).write_text(text)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", "compare", "--pipeline", "video", "--traces", "bursty"]
        + ["--policies", "static-min", "--out", str(out), "--executor", "ray", "--overwrite"]
        + ["--ray-address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    elapsed = time.monotonic() - start
    if result.returncode != 2 and "No module named 'ray'" in result.stderr and not CI:
        pytest.skip("ray is not installed")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("rlscale compare: error: --ray-address 127.0.0.1:1: cannot connect to Ray")
    assert elapsed < 30
    assert {name: (out / name).read_text() for name in earlier} == earlier  # nothing already written is lost


def test_without_the_ray_extra_the_ray_executor_is_one_line(monkeypatch, capsys):
    real = sweep.importlib.util.find_spec
    monkeypatch.setattr(sweep.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code = main(
        ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min", "--executor", "ray"]
    )
    assert code == 2
    assert capsys.readouterr().err == "rlscale compare: error: " + sweep.RAY_MISSING + "\n"


@pytest.mark.e2e
def test_closing_a_ray_sweep_early_cancels_the_rest_and_keeps_what_finished(ray_session):
    specs = [RunSpec("video", "steady_low", "static-min", s, "poisson", None, FACTORY, None) for s in range(8)]
    results = make_executor("ray", 2).imap_unordered(run, specs)
    first, record = next(results)  # a finished run: the caller's to keep
    assert record["seed"] == first
    start = time.monotonic()
    results.close()  # as on an interrupt: the runs not yielded are cancelled
    assert time.monotonic() - start < 10
    assert ray_session.is_initialized()  # the caller's Ray (not started by the sweep) is left running


@pytest.mark.e2e
def test_trainings_on_ray_equal_serial(tmp_path, ray_session):
    """``rlscale train --seeds 2 --executor ray``: the same records as serial (tiny trainings)."""
    pytest.importorskip("stable_baselines3", reason="training needs the train extra")
    from rlscale.evaluate.train_sweep import train_sweep
    from tests.evaluate.test_train_sweep import _without_timing, tiny

    serial = train_sweep(tiny(tmp_path / "serial"), seeds=2, executor="serial")
    ray = train_sweep(tiny(tmp_path / "ray"), seeds=2, executor="ray", workers=2)
    assert _without_timing(ray[1]) == _without_timing(serial[1])
    assert [r["run"] for r in ray[1]] == ["s0", "s1"] and ray[2]["run"] == serial[2]["run"]
    assert all((ray[0] / r["run"] / "actor.npz").is_file() for r in ray[1])
