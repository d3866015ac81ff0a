"""`rlscale.evaluate.train_sweep` (``rlscale train --seeds N --grid ...``): the same trainings whatever the executor,
selection on the validation windows only, an interrupted sweep finished by ``--continue`` without training again
what finished, and one clear line for bad input.

Trainings here are tiny (128 steps, one environment, one validation window).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")

from agents.train_config import TrainConfig  # noqa: E402
from rlscale.cli import main  # noqa: E402
from rlscale.cli.train import value_parsers  # noqa: E402
from rlscale.errors import RlscaleError  # noqa: E402
from rlscale.evaluate.train_sweep import (  # noqa: E402
    RECORDS,
    SweepInterrupted,
    TrainingJob,
    parse_grid,
    plan,
    read_plan,
    select,
    train_sweep,
)

TINY = ["--timesteps", "128", "--n-steps", "64", "--batch-size", "32", "--n-envs", "1", "--validation-windows", "1"]
TINY = [*TINY, "--eval-every", "100000", "--checkpoint-every", "100000"]


def tiny(out: Path, **kw) -> TrainConfig:
    # a uniform start (--prior none): 128 steps from a baseline's start would leave every seed at its action
    settings = dict(timesteps=128, n_steps=64, batch_size=32, n_envs=1, validation_windows=1, eval_every=10**5)
    settings["prior"] = "none"
    return TrainConfig(out=str(out), checkpoint_every=10**5, **(settings | kw))


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_wall_s"} for r in records]


@pytest.mark.e2e
def test_the_same_trainings_whatever_the_executor(tmp_path):
    grid = {"learning_rate": [1e-4, 3e-4]}
    serial = train_sweep(tiny(tmp_path / "serial"), seeds=2, grid=grid, executor="serial")
    process = train_sweep(tiny(tmp_path / "process"), seeds=2, grid=grid, executor="process", workers=2)
    assert _without_timing(serial[1]) == _without_timing(process[1])
    records = serial[1]
    assert [r["run"] for r in records] == ["g0-s0", "g0-s1", "g1-s0", "g1-s1"]
    assert [(r["seed"], r["learning_rate"]) for r in records] == [(0, 1e-4), (1, 1e-4), (0, 3e-4), (1, 3e-4)]
    assert len({r["validation_score"] for r in records}) > 1  # seeds and settings train different agents
    for folder, _records, best in (serial, process):
        assert best == max(_records, key=lambda r: r["validation_score"])
        selection = json.loads((folder / "selection.json").read_text())
        assert selection["best"]["run"] == best["run"] and Path(selection["actor"]).is_file()
        assert (folder / "trainings.csv").read_text().count("\n") == 5


def test_selection_uses_validation_scores_only():
    records = [
        {"index": 0, "validation_score": -3.0, "eval_bursty_score": -1.0},
        {"index": 1, "validation_score": -2.0, "eval_bursty_score": -9.0},
        {"index": 2, "validation_score": -2.0, "eval_bursty_score": -0.5},
    ]
    assert select(records)["index"] == 1  # the best validation score; a tie goes to the first
    assert select([{"index": 0, "validation_score": None}]) is None


def test_plan_orders_grid_points_then_seeds(tmp_path):
    jobs = plan(tiny(tmp_path, seed=5), 2, {"gamma": [0.9, 0.99], "n_epochs": [1, 2]})
    assert [(j.config.gamma, j.config.n_epochs, j.config.seed) for j in jobs][:3] == [
        (0.9, 1, 5),
        (0.9, 1, 6),
        (0.9, 2, 5),
    ]
    assert len(jobs) == 8 and len({j.config.name for j in jobs}) == 8
    assert {j.config.torch_threads for j in jobs} == {1}  # the same result on every executor
    assert plan(tiny(tmp_path, vec_env="subproc"), 1, {})[0].config.vec_env == "subproc"


@pytest.mark.parametrize(
    "entries,message",
    [
        (["seed=1,2"], "--seeds"),
        (["nosuch=1"], "unknown setting"),
        (["learning_rate=2"], "learning_rate"),
        (["gamma"], "FIELD=V1"),
        (["gamma=0.9,"], "empty"),
        (["gamma=0.9", "gamma=0.8"], "twice"),
    ],
)
def test_bad_grids_are_refused(entries, message):
    parsers = {name: value_parsers(TrainConfig)[name] for name in ("learning_rate", "gamma", "net_arch")}
    with pytest.raises(RlscaleError, match=message):
        parse_grid(entries, parsers)


def test_net_arch_values_are_separated_by_semicolons():
    parsers = {"net_arch": value_parsers(TrainConfig)["net_arch"]}
    assert parse_grid(["net_arch=64,64;32"], parsers) == {"net_arch": [[64, 64], [32]]}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--seeds", "2", "--grid", "seed=1,2"], "--seeds"),
        (["--seeds", "2", "--resume", "x.zip"], "--resume"),
        (["--seeds", "2", "--name", "mine"], "--name"),
        (["--executor", "serial"], "--seeds N or --grid"),
        (["--continue", "{tmp}/nosuch"], "not a sweep folder"),
        (["--seeds", "2", "--grid", "learning_rate=5"], "learning_rate"),
        (["--seeds", "2", "--validation-days", "14"], "--validation-days"),
    ],
)
def test_bad_sweep_arguments_are_one_line(tmp_path, capsys, extra, message):
    args = ["train", "--pipeline", "video", "--out", str(tmp_path / "runs"), *TINY]
    try:
        code = main([*args, *[a.replace("{tmp}", str(tmp_path)) for a in extra]])
    except SystemExit as exc:  # a usage error (argparse)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*__sweep__*"))


@pytest.mark.subprocess
@pytest.mark.e2e
def test_an_interrupted_sweep_continues_without_training_again(tmp_path):
    """SIGINT once the first training is recorded; ``--continue`` trains only what is missing."""
    out = tmp_path / "runs"
    entry = "import sys; from rlscale.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", entry, "train", "--pipeline", "video", "--out", str(out), *TINY]
    proc = subprocess.Popen([*cmd, "--seeds", "3", "--workers", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not any(p.stat().st_size for p in out.glob(f"*/{RECORDS}")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    (folder,) = out.glob("*__sweep__*")
    assert f"rlscale train --pipeline video --continue {folder}" in stderr.strip().splitlines()[-1]
    first = (folder / RECORDS).read_text().splitlines()
    assert 1 <= len(first) < 3
    finished = {json.loads(line)["run"] for line in first}
    stamps = {run: (folder / run / "actor.npz").stat().st_mtime_ns for run in finished}

    resumed = subprocess.run([*cmd, "--continue", str(folder)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = (folder / RECORDS).read_text().splitlines()
    assert lines[: len(first)] == first and len(lines) == 3
    assert sorted(json.loads(line)["index"] for line in lines) == [0, 1, 2]
    for run, stamp in stamps.items():  # not trained again
        assert (folder / run / "actor.npz").stat().st_mtime_ns == stamp
        assert not (folder / f"{run}.interrupted").exists()
    selection = json.loads((folder / "selection.json").read_text())
    assert selection["finished"] == selection["total"] == 3


def test_a_moved_sweep_folder_continues_where_it_is(tmp_path):
    jobs = plan(tiny(tmp_path / "a"), 1, {})
    folder = tmp_path / "moved"
    folder.mkdir()
    plan_doc = {"jobs": [{"index": 0, "grid": {}, "settings": dict(jobs[0].settings)}]}
    (folder / "sweep.json").write_text(json.dumps(plan_doc, default=list))
    (job,) = read_plan(folder)
    assert isinstance(job, TrainingJob) and job.config.out == str(folder)


def test_sweep_interrupted_is_a_keyboard_interrupt():
    exc = SweepInterrupted(signal.SIGTERM, Path("x"), 1, 2)
    assert isinstance(exc, KeyboardInterrupt) and exc.exit_code == 143
