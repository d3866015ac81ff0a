"""``rlscale train`` keeps its work: a model on SIGINT/SIGTERM, checkpoints on a time period; bad input is one line.

Training here is tiny (a few hundred steps, one environment); the wrapper skips the final evaluation on IPA's
windows (a report only) so a resumed run finishes in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agents.training as training
from agents.inference import BUNDLED_DIR, bundled_agent
from agents.train_config import TrainConfig
from agents.training import TrainingInterrupted, train
from rlscale.errors import RlscaleError

WRAPPER = """
import sys
import agents.training as training
training.evaluate = lambda *a, **k: {}
from rlscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _train(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, "train", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.subprocess
@pytest.mark.e2e
def test_a_signal_saves_a_model_that_resume_accepts(tmp_path, sig, code):
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "train", "--pipeline", "video", "--timesteps", "1000000", "--n-envs", "1"]
        + ["--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*/config.json")):  # the run has started
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    (run,) = out.iterdir()
    model = run / "model.zip"
    assert model.exists() and model.stat().st_size > 1000
    assert "--resume" in last and str(model) in last, last
    state = json.loads((run / "interrupted.json").read_text())
    assert 0 < state["timesteps_done"] < 1_000_000 and state["signal"] == signal.Signals(sig).name

    args = ["--pipeline", "video", "--timesteps", "64", "--n-envs", "1", "--validation-windows", "1"]
    args += ["--out", str(tmp_path / "r2")]
    resumed = _train(*args, "--resume", str(model))
    assert resumed.returncode == 0, resumed.stderr
    (run2,) = (tmp_path / "r2").iterdir()
    assert (run2 / "model.zip").exists()
    assert json.loads((run2 / "config.json").read_text())["resume"] == str(model)


@pytest.mark.e2e
def test_training_checkpoints_on_a_time_period(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: {})
    cfg = TrainConfig(
        timesteps=256,
        n_envs=1,
        n_steps=64,
        batch_size=32,
        out=str(tmp_path),
        checkpoint_minutes=1e-4,
        validation_days=0,
    )
    run = train(cfg, progress_bar=False)  # checkpoint_every (50,000 steps) never comes: only the clock saves
    saved = sorted((run / "checkpoints").glob("ppo_*_steps.zip"))
    assert saved, list(run.rglob("*"))
    assert all(p.with_suffix(".json").exists() for p in saved)  # what --resume reads beside the model
    assert not list(run.rglob(".*tmp*"))


@pytest.mark.e2e
def test_a_stop_request_ends_training_with_a_saved_model(tmp_path, monkeypatch):
    """The library path: a set stop event ends learning at the next step; the model is saved, nothing evaluated."""
    from rlscale.interrupts import StopRequest

    monkeypatch.setattr(training, "evaluate", lambda *a, **k: pytest.fail("an interrupted run must not evaluate"))
    stop = StopRequest()
    stop.set(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        train(TrainConfig(timesteps=10_000, n_envs=1, n_steps=64, batch_size=32, out=str(tmp_path)), False, stop=stop)
    assert info.value.exit_code == 130
    assert info.value.model.exists() and info.value.timesteps_done < 10_000


@pytest.mark.e2e
def test_a_stop_during_the_final_evaluation_ends_it_with_the_model_kept(tmp_path, monkeypatch):
    from rlscale.interrupts import StopRequest

    stop = StopRequest()
    calls = []

    def evaluate(*_a, **_k):
        calls.append(1)
        stop.set(signal.SIGTERM)  # the signal arrives while the first window is evaluated
        return {}

    monkeypatch.setattr(training, "evaluate", evaluate)
    cfg = TrainConfig(timesteps=128, n_envs=1, n_steps=64, batch_size=32, out=str(tmp_path), validation_windows=1)
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, progress_bar=False, stop=stop)
    assert len(calls) == 1 and info.value.exit_code == 143
    assert info.value.timesteps_done >= 128 and info.value.model.exists()


@pytest.mark.parametrize("minutes", ["-1", "nan", "inf"])
@pytest.mark.subprocess
def test_checkpoint_minutes_must_be_a_sensible_number(tmp_path, minutes):
    result = _train("--pipeline", "video", "--checkpoint-minutes", minutes, "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--checkpoint-minutes" in _one_line(result)
    assert not (tmp_path / "o").exists()


def _garbage(tmp_path: Path) -> str:
    bad = tmp_path / "garbage.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    return str(bad)


BAD_INPUTS = {
    "negative seed": (lambda tmp: ["--seed", "-1"], "--seed"),
    "huge seed": (lambda tmp: ["--seed", str(2**32)], "--seed"),
    "out is a file": (lambda tmp: ["--out", str(tmp / "a-file")], "--out"),
    "out under /proc": (lambda tmp: ["--out", "/proc/x"], "--out"),
    "out is /dev/full": (lambda tmp: ["--out", "/dev/full"], "--out"),
    "garbage resume": (lambda tmp: ["--resume", _garbage(tmp)], "cannot load"),
    "another pipeline's agent": (
        lambda tmp: ["--pipeline", "nlp", "--resume", str(bundled_agent("video"))],
        "pipeline nlp",
    ),
    "resume a folder": (lambda tmp: ["--resume", str(tmp)], "--resume"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.subprocess
def test_bad_train_input_is_one_line_and_leaves_no_run_folder(tmp_path, case):
    make_args, needle = BAD_INPUTS[case]
    (tmp_path / "a-file").write_text("x")
    args = make_args(tmp_path)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "runs")]
    if "--pipeline" not in args:
        args = ["--pipeline", "video", *args]
    result = _train(*args, "--timesteps", "64", "--n-envs", "1")
    assert result.returncode == 2, result.stderr
    assert needle in _one_line(result)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_train_rejects_a_bad_seed_in_the_library_too(tmp_path):
    with pytest.raises(RlscaleError, match="seed"):
        train(TrainConfig(seed=-1, out=str(tmp_path)), progress_bar=False)
    assert not any(tmp_path.iterdir())


def test_the_bundle_flag_resolves_inside_the_bundled_folder():
    assert bundled_agent("sum-qa").resolve().parent == BUNDLED_DIR.resolve()
    assert os.sep not in bundled_agent("video").name
