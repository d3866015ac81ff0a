"""An agent file is data: the numpy actor ``.npz`` is the only format an agent is loaded from, and nothing is ever
unpickled but by ``train --resume`` of a model in a run folder (and the documented converter).

The hostile model is a zip holding ``policy.pth`` (what makes it a stable-baselines3 model) whose ``data`` member
carries a pickle that creates a marker file when anything unpickles it (SB3 unpickles ``data`` first).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from agents.actor import load_actor
from agents.inference import PPOPolicy, is_model_zip, load_agent
from rlscale.errors import RlscaleError
from rlscale.spec import load_spec
from tests.test_hostile_inputs_files import MARKER, evil_model_zip

RUN_SETTINGS = {"pipeline": "video", "spec_name": "video", "load_scale_rps": 40.0}


@pytest.fixture
def evil(tmp_path) -> Path:
    """A pickled model named like an actor file, outside any run folder."""
    return evil_model_zip(tmp_path / "evil.npz", tmp_path / MARKER)


@pytest.mark.parametrize("load", [load_actor, load_agent, lambda p: PPOPolicy(load_spec("video"), p)])
def test_a_pickled_model_is_refused_as_an_agent_and_never_unpickled(evil, load):
    with pytest.raises(RlscaleError) as info:
        load(evil)
    message = str(info.value)
    assert "not an agent file" in message and "actor.npz" in message, message
    assert f"python -m agents.ppo {evil} OUT.npz" in message, message
    assert "\n" not in message
    assert not (evil.parent / MARKER).exists(), "the agent file's pickle ran"


def test_a_pickled_model_with_any_name_is_refused(tmp_path):
    for name in ("model.zip", "agent.bin", "actor.npz"):
        path = evil_model_zip(tmp_path / name, tmp_path / MARKER)
        assert is_model_zip(path)
        with pytest.raises(RlscaleError, match="not an agent file"):
            load_agent(path)
    assert not (tmp_path / MARKER).exists()


def _in_time(call, seconds: float = 10.0):
    """``call()``'s outcome (its result or the exception it raised), failing when it takes over ``seconds``
    (a blocking open of a FIFO would never return: the thread is left behind, the test fails)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 - returned for the test to check
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a FIFO or reading a device?)"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_agent_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, kind):
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "agent.npz"
        os.mkfifo(path)
    assert _in_time(lambda: is_model_zip(path)) is False
    outcome = _in_time(lambda: load_agent(path))
    assert isinstance(outcome, RlscaleError), outcome
    assert "not an agent file" in str(outcome) and ("FIFO" if kind == "fifo" else "device") in str(outcome)


def _run_folder(root: Path, settings: dict | None = RUN_SETTINGS) -> Path:
    run = root / "video__ppo__0__20250101-000000"
    (run / "checkpoints").mkdir(parents=True)
    if settings is not None:
        (run / "config.json").write_text(json.dumps(settings))
    return run


def test_resume_takes_a_model_only_from_a_run_folder(tmp_path):
    from agents.training import check_run_model

    run = _run_folder(tmp_path)
    check_run_model(run / "model.zip")  # what `rlscale train` saves, and its checkpoints
    check_run_model(run / "checkpoints" / "ppo_128_steps.zip")
    for outside in (tmp_path / "model.zip", run / "other.zip", run / "checkpoints" / "notes.txt"):
        with pytest.raises(RlscaleError, match="not a model saved by rlscale train in a run folder.*your own runs"):
            check_run_model(outside)


@pytest.mark.parametrize(
    "settings", [None, {"pipeline": "video"}, ["spec_name", "load_scale_rps"]], ids=["none", "partial", "list"]
)
def test_resume_refuses_a_folder_without_the_runs_settings(tmp_path, settings):
    from agents.training import check_run_model

    run = _run_folder(tmp_path, settings)
    with pytest.raises(RlscaleError, match="not a model saved by rlscale train"):
        check_run_model(run / "model.zip")


def test_resume_refuses_a_pickled_model_outside_a_run_folder_before_unpickling(evil):
    """``train``'s own check, on the real loader path: nothing is unpickled (needs the train extra)."""
    pytest.importorskip("stable_baselines3", reason="resume needs the train extra")
    from agents.training import _load_for_resume

    with pytest.raises(RlscaleError, match="your own runs"):
        _load_for_resume(evil, load_spec("video"), venv=None)
    assert not (evil.parent / MARKER).exists(), "the model's pickle ran"
