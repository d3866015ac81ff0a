"""``rlscale train --continue SWEEP`` trusts nothing it reads and loses nothing already on disk.

- a garbled line of ``trainings.jsonl`` is one error line naming the file and the line: the finished training it
  stood for is never trained again behind the user's back, and its run folder is not moved;
- a record with a non-finite score, or whose run folder lies outside the sweep folder, is refused the same way and
  never reaches ``selection.json``;
- a training started over keeps its cut-short folder beside the earlier attempts, never over them.

The sweep folders are written here from `rlscale.evaluate.train_sweep.plan` (one or two tiny trainings), so only the
last test trains (128 steps, in this process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")

from agents.train_config import TrainConfig  # noqa: E402
from rlscale.cli import main  # noqa: E402
from rlscale.evaluate.train_sweep import RECORDS, SELECTION, plan  # noqa: E402

TINY = ["--timesteps", "128", "--n-steps", "64", "--batch-size", "32", "--n-envs", "1", "--validation-windows", "1"]
TINY = [*TINY, "--eval-every", "100000", "--checkpoint-every", "100000"]


def _sweep(tmp_path: Path, seeds: int) -> Path:
    """A sweep folder of ``seeds`` tiny trainings (runs ``s0``, ``s1``...), none recorded yet."""
    folder = tmp_path / "video__sweep__20250101-000000"
    folder.mkdir()
    settings = dict(timesteps=128, n_steps=64, batch_size=32, n_envs=1, validation_windows=1, eval_every=10**5)
    base = TrainConfig(out=str(folder), checkpoint_every=10**5, prior="none", eval_traces="none", **settings)
    jobs = plan(base, seeds, {})
    document = {"jobs": [{"index": j.index, "grid": {}, "settings": dict(j.settings)} for j in jobs]}
    (folder / "sweep.json").write_text(json.dumps(document, default=list))
    return folder


def _finished(folder: Path, index: int, **fields) -> str:
    """A finished training: its run folder (an actor file) and its record line."""
    run = folder / f"s{index}"
    run.mkdir()
    (run / "actor.npz").write_bytes(b"trained for hours")
    record = {"index": index, "seed": index, "run": f"s{index}", "validation_score": -2.0 - index}
    record |= {"validation_violation_rate": 0.0, "train_wall_s": 3600.0, **fields}
    return json.dumps(record)


def _continue(tmp_path: Path, folder: Path, capsys) -> tuple[int, list[str]]:
    args = ["train", "--pipeline", "video", "--out", str(tmp_path / "runs"), *TINY, "--executor", "serial"]
    code = main([*args, "--continue", str(folder)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_garbled_record_stops_continue_and_nothing_is_retrained(tmp_path, capsys):
    folder = _sweep(tmp_path, 2)
    garbled = _finished(folder, 0)[:-20] + "###"  # a finished training's record, damaged in the middle of the file
    (folder / RECORDS).write_text(garbled + "\n" + _finished(folder, 1) + "\n")
    before = _files(folder)

    code, err = _continue(tmp_path, folder, capsys)

    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert f"{folder / RECORDS} line 1" in err[0], err
    assert _files(folder) == before  # s0 neither trained again nor moved aside; the records untouched
    assert not list(folder.glob("*.interrupted*"))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"validation_score": float("nan")}, "validation_score nan is not a finite number"),
        ({"validation_score": float("inf")}, "validation_score inf is not a finite number"),
        ({"run": "../../elsewhere"}, "not a run folder inside the sweep folder"),
        ({"run": "/etc"}, "not a run folder inside the sweep folder"),
    ],
    ids=["nan-score", "inf-score", "run-escapes", "run-absolute"],
)
def test_a_tampered_record_never_reaches_the_selection(tmp_path, capsys, fields, problem):
    folder = _sweep(tmp_path, 1)
    (folder / RECORDS).write_text(_finished(folder, 0, **fields) + "\n")
    (folder / SELECTION).write_text('{"finished": 0, "total": 1}\n')  # what an earlier summary wrote
    before = _files(folder)

    code, err = _continue(tmp_path, folder, capsys)

    assert code == 2, err
    assert len(err) == 1 and f"{folder / RECORDS} line 1" in err[0] and problem in err[0], err
    assert _files(folder) == before  # selection.json as it was: no NaN, no actor outside the sweep


@pytest.mark.e2e
def test_a_training_started_over_keeps_every_earlier_attempt(tmp_path, capsys):
    folder = _sweep(tmp_path, 1)
    (folder / "s0").mkdir()
    (folder / "s0" / "interrupted.json").write_text('{"attempt": 2}')  # cut short: no record
    (folder / "s0.interrupted").mkdir()
    (folder / "s0.interrupted" / "interrupted.json").write_text('{"attempt": 1}')  # cut short before that

    code, err = _continue(tmp_path, folder, capsys)

    assert code == 0, err
    assert (folder / "s0.interrupted" / "interrupted.json").read_text() == '{"attempt": 1}'
    assert (folder / "s0.interrupted-2" / "interrupted.json").read_text() == '{"attempt": 2}'
    assert (folder / "s0" / "actor.npz").is_file()
    selection = json.loads((folder / SELECTION).read_text())
    assert selection["finished"] == 1 and Path(selection["actor"]) == folder / "s0" / "actor.npz"
