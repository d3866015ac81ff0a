"""Sweeps of trainings: several seeds (and a grid of settings) trained side by side, the best kept by validation.

``rlscale train --seeds N [--grid FIELD=V1,V2 ...]`` trains one PPO agent per (setting, seed) through the sweep
executors (`rlscale.evaluate.sweep`: ``serial``, ``process``, ``ray``), then selects the training with the best mean
score on the **validation windows** (kept out of every training: the Twitter training split's last day, the last
``--validation-fraction`` of each own trace; `rlscale.workload`). The evaluation traces are scored for the report
only and never decide.

A sweep folder ``{out}/{pipeline}__sweep__{time}`` holds:

- ``sweep.json``: the plan (base settings, seeds, grid, one job per training with its run folder's name);
- one run folder per training (``g{k}-s{seed}``, as ``rlscale train`` writes it);
- ``trainings.jsonl``: a record per finished training, appended as each finishes (an interrupt keeps them);
- ``trainings.csv`` and ``selection.json`` (the best training, its actor file, how it was chosen).

``--continue SWEEP`` finishes an interrupted sweep: finished trainings are not run again; a training that was cut
short is started over (its folder is kept as ``NAME.interrupted``, or ``NAME.interrupted-2``... beside earlier
attempts, which are kept), so the result is what an uninterrupted sweep gives. A line of ``trainings.jsonl`` that is
not a valid record (but a last line a kill cut short) stops it with one line naming the line: a finished training
is never trained again silently, and ``selection.json`` never names a non-finite score or a run outside the sweep.
Every training of a sweep runs torch on one thread, so the records are the same whatever the executor.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from agents.inference import ACTOR_FILE
from agents.train_config import TrainConfig
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import make_executor, progress_bar
from rlscale.inputs import (
    MAX_JSON_DEPTH,
    MAX_RECORDS_BYTES,
    MAX_SETTINGS_BYTES,
    nesting_depth,
    read_json_limited,
    read_text_limited,
)
from rlscale.interrupts import Interrupted, signum_of
from rlscale.paths import OutputError, atomic_write_text, check_name, inside, new_folder

log = logging.getLogger(__name__)

PLAN = "sweep.json"
RECORDS = "trainings.jsonl"
TABLE = "trainings.csv"
SELECTION = "selection.json"
MAX_TRAININGS = 1000
NOT_IN_GRID = ("pipeline", "seed", "out", "resume", "name", "vec_env", "torch_threads")
"""Settings a grid cannot vary: the sweep sets them (seeds come from ``--seeds``)."""


@dataclass(frozen=True)
class TrainingJob:
    """One training of a sweep: picklable, plain values only.

    Attributes:
        index: its place in the sweep (the order of the records in the files).
        settings: every `TrainConfig` field, by name (lists as lists).
        grid: the grid's values for this training (empty without a grid).
    """

    index: int
    settings: tuple[tuple[str, Any], ...]
    grid: tuple[tuple[str, Any], ...] = ()

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(**{k: list(v) if isinstance(v, tuple) else v for k, v in self.settings})


class SweepInterrupted(Interrupted):
    """A sweep of trainings stopped on a signal; the finished trainings are recorded.

    Attributes:
        folder: the sweep folder (``--continue`` takes it).
        finished: trainings finished (recorded), of ``total``.
    """

    def __init__(self, signum: int, folder: Path, finished: int, total: int) -> None:
        super().__init__(signum)
        self.folder = folder
        self.finished = finished
        self.total = total


def run_training(job: TrainingJob) -> dict[str, Any]:
    """Train one job (`agents.training.train`) and return its record: validation and evaluation scores, run folder.

    Torch runs on one thread (`plan` sets ``torch_threads``: several trainings share the machine, and the same
    thread count everywhere makes the result independent of the executor). A SIGTERM (the sweep ending this
    worker) saves the model so far.
    """
    from agents.training import train
    from rlscale.interrupts import StopRequest, stop_on_signals

    cfg = job.config
    started = time.perf_counter()
    with stop_on_signals(StopRequest(), signals=(signal.SIGTERM,)) as stop:
        run = train(cfg, progress_bar=False, stop=stop)
    report = json.loads((run / "eval.json").read_text())
    validation = report.get("validation", {})
    record: dict[str, Any] = {"index": job.index, "seed": cfg.seed, **dict(job.grid), "run": run.name}
    record["validation_score"] = report.get("validation_score")
    record["validation_violation_rate"] = _mean([r["sla_violation_rate"] for r in validation.values()])
    for trace, rec in report.get("eval", {}).items():  # reported, never selected by
        record[f"eval_{trace}_score"] = rec["score"]
    record["train_wall_s"] = round(time.perf_counter() - started, 1)
    return record


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def parse_grid(entries: Sequence[str], parsers: dict[str, Callable[[str], Any]]) -> dict[str, list[Any]]:
    """``FIELD=V1,V2,...`` entries as ``{field: [values]}``; a list field's values are separated by ``;``
    (``net_arch=64,64;128,128``). ``parsers`` parses (and range-checks) one value of each field that may vary.

    Raises:
        RlscaleError: an unknown or fixed field, a field given twice, no value, or a value out of range.
    """
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, sep, text = entry.partition("=")
        field_name = key.strip().replace("-", "_")
        if not sep or not field_name:
            raise RlscaleError(f"--grid {entry!r}: expected FIELD=V1,V2,... (e.g. learning_rate=1e-4,3e-4)")
        if field_name in NOT_IN_GRID:
            raise RlscaleError(f"--grid: {field_name} cannot vary in a grid (seeds come from --seeds)")
        if field_name not in parsers:
            raise RlscaleError(f"--grid: unknown setting {field_name!r}; one of {', '.join(sorted(parsers))}")
        if field_name in grid:
            raise RlscaleError(f"--grid: {field_name} given twice; list its values in one entry")
        separator = ";" if field_name == "net_arch" else ","
        values = []
        for item in (v.strip() for v in text.split(separator)):
            if not item:
                raise RlscaleError(f"--grid {entry!r}: an empty value")
            try:
                values.append(parsers[field_name](item))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:  # the CLI's range-checking types
                raise RlscaleError(f"--grid {field_name}: {exc}") from None
        grid[field_name] = values
    return grid


def plan(base: TrainConfig, seeds: int, grid: dict[str, list[Any]]) -> list[TrainingJob]:
    """One job per (grid point, seed), grid points in the order given, seeds ``base.seed .. + seeds - 1``, each
    on one torch thread."""
    points = list(itertools.product(*grid.values())) or [()]
    if not 1 <= seeds * len(points) <= MAX_TRAININGS:
        raise RlscaleError(f"a sweep holds 1..{MAX_TRAININGS} trainings, got {seeds * len(points)}")
    jobs = []
    for g, point in enumerate(points):
        values = dict(zip(grid, point, strict=True))
        for s in range(seeds):
            seed = base.seed + s
            name = check_name((f"g{g}-" if grid else "") + f"s{seed}", "run name")
            settings = {**asdict(base), **values, "seed": seed, "name": name, "torch_threads": 1}
            frozen = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items())
            jobs.append(TrainingJob(len(jobs), frozen, tuple(values.items())))
    return jobs


def _write_plan(folder: Path, base: TrainConfig, seeds: int, grid: dict, jobs: list[TrainingJob]) -> None:
    document = {
        "base": asdict(base),
        "seeds": seeds,
        "grid": grid,
        "jobs": [{"index": j.index, "grid": dict(j.grid), "settings": dict(j.settings)} for j in jobs],
    }
    atomic_write_text(folder / PLAN, json.dumps(document, indent=2, default=list) + "\n")


def _moved(job: TrainingJob, folder: Path) -> TrainingJob:
    """``job`` training into ``folder`` (its run folder: ``folder/name``)."""
    return TrainingJob(job.index, tuple((k, str(folder) if k == "out" else v) for k, v in job.settings), job.grid)


def read_plan(folder: Path) -> list[TrainingJob]:
    """The jobs of the sweep in ``folder`` (`PLAN`).

    Raises:
        RlscaleError: no sweep there, or a plan this version cannot read.
    """
    path = folder / PLAN
    if not path.exists():
        raise RlscaleError(f"--continue {folder}: not a sweep folder (no {PLAN})")
    try:
        document = read_json_limited(path, MAX_SETTINGS_BYTES, RlscaleError, "sweep plan")
    except RlscaleError as exc:
        raise RlscaleError(f"--continue {exc}") from None
    try:
        known = {f.name for f in fields(TrainConfig)}
        jobs = []
        for j in document["jobs"]:
            settings = {k: v for k, v in j["settings"].items() if k in known}
            frozen = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items())
            jobs.append(TrainingJob(int(j["index"]), frozen, tuple(j["grid"].items())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RlscaleError(f"--continue {folder}: cannot read {PLAN}: {exc}") from None
    jobs = [_moved(j, folder) for j in jobs]  # the folder may have been moved since
    if [j.index for j in jobs] != list(range(len(jobs))) or not jobs:
        raise RlscaleError(f"--continue {folder}: {PLAN} lists no jobs or jobs out of order")
    for job in jobs:
        check_name(str(job.config.name), "run name")
    return jobs


NUMBERS = ("validation_score", "validation_violation_rate", "train_wall_s")
"""Fields of a record that hold a finite number or null (and every ``eval_*_score``)."""


def check_record(folder: Path, record: Any, total: int) -> str | None:
    """What is wrong with ``record`` as a training record of the sweep in ``folder`` of ``total`` trainings, or None.

    A record names its training (``index`` in the plan), its run folder (``run``: one safe name that stays inside
    the sweep folder, so ``selection.json`` never points elsewhere) and finite scores (or null).
    """
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record"
    if nesting_depth(record, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < total:
        return f"index {index!r} is not a training of the plan (0 to {total - 1})"
    run = record.get("run")
    if not isinstance(run, str):
        return f"run {run!r} is not a run folder's name"
    try:
        inside(folder, run, "run name")
    except RlscaleError:
        return f"run {run!r} is not a run folder inside the sweep folder"
    for key, value in record.items():
        if key in NUMBERS or (key.startswith("eval_") and key.endswith("_score")):
            finite = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if value is not None and not finite:
                return f"{key} {value!r} is not a finite number"
    return None


def read_records(folder: Path, total: int | None = None) -> dict[int, dict[str, Any]]:
    """The finished trainings recorded in ``folder`` by index.

    A last line cut short by a kill (no newline at its end, not JSON) is dropped from the file, and its training
    runs again; any other line that is not a valid record (`check_record`) stops the sweep: a finished training is
    never trained again behind the user's back.

    Args:
        folder: the sweep folder.
        total: the trainings of its plan (default: from the plan).

    Raises:
        RlscaleError: the file is not a regular file, too large or not UTF-8, or a line is not a training record
            (the message names the line).
    """
    path = folder / RECORDS
    records: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return records
    total = len(read_plan(folder)) if total is None else total
    try:
        text = read_text_limited(path, MAX_RECORDS_BYTES, RlscaleError, "training records")
    except RlscaleError as exc:
        raise RlscaleError(f"--continue {exc}") from None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            record, problem = None, f"nested deeper than {MAX_JSON_DEPTH} levels"
        except ValueError:
            if i == len(lines) - 1 and not text.endswith("\n"):  # the write a kill cut short: it runs again
                log.warning("%s: dropping an incomplete last line", path)
                atomic_write_text(path, "".join(f"{kept}\n" for kept in lines[:i]))
                break
            record, problem = None, "not JSON"
        else:
            problem = check_record(folder, record, total)
        if problem is not None:
            raise RlscaleError(
                f"--continue: {path} line {i + 1} is not a training record ({problem}); fix or remove that line (its "
                "training then runs again)"
            )
        records[record["index"]] = record
    return records


def _append(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / RECORDS, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def select(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record with the best (finite) validation score (ties: the first in sweep order); None without one."""
    scored = [r for r in records if _finite(r.get("validation_score"))]
    return max(scored, key=lambda r: (r["validation_score"], -r["index"])) if scored else None


def write_summary(folder: Path, records: list[dict[str, Any]], total: int) -> dict[str, Any] | None:
    """``trainings.csv`` (the records in sweep order) and ``selection.json``; returns the selected record."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(folder / TABLE, buffer.getvalue())
    best = select(records)
    selection: dict[str, Any] = {"finished": len(records), "total": total, "selected_by": "validation_score"}
    if best is not None:  # its score is finite (`select`); its actor is never outside the sweep folder
        selection |= {"best": best, "actor": str(inside(folder, str(best["run"]), "run name") / ACTOR_FILE)}
    atomic_write_text(folder / SELECTION, json.dumps(selection, indent=2) + "\n")
    return best


MAX_ASIDE = 1000
"""The most folders a training's interrupted attempts are kept in (``NAME.interrupted``, ``-2``...)."""


def set_aside(run: Path) -> Path | None:
    """A training cut short is started over: its folder is kept beside, as ``NAME.interrupted`` (``-2``, ``-3``...
    when an earlier attempt holds that name: nothing already there is removed). Returns where it went.

    Raises:
        RlscaleError: the folder cannot be moved, or `MAX_ASIDE` attempts are kept already.
    """
    if not run.exists():
        return None
    for n in range(1, MAX_ASIDE + 1):
        aside = run.with_name(f"{run.name}.interrupted" + (f"-{n}" if n > 1 else ""))
        if aside.exists() or aside.is_symlink():
            continue
        try:
            run.rename(aside)
        except OSError as exc:
            raise RlscaleError(f"cannot move {run} aside to {aside.name}: {exc.strerror or exc}") from None
        return aside
    raise RlscaleError(f"{run.parent}: {MAX_ASIDE} interrupted attempts of {run.name} kept; remove some")


def train_sweep(
    base: TrainConfig | None = None,
    *,
    seeds: int = 1,
    grid: dict[str, list[Any]] | None = None,
    resume_from: Path | None = None,
    executor: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> tuple[Path, list[dict[str, Any]], dict[str, Any] | None]:
    """Run a sweep of trainings (or finish the one in ``resume_from``); returns its folder, the records in sweep
    order and the selected record.

    Raises:
        RlscaleError: bad settings, grid, executor or folder (nothing is created then).
        SweepInterrupted: a signal stopped it; the finished trainings are recorded.
    """
    from agents.train_config import check_config  # every setting checked before anything is created
    from rlscale.spec import load_spec

    sweeper = make_executor(executor, workers, ray_address)
    if resume_from is not None:
        folder = Path(resume_from)
        jobs = read_plan(folder)
        done = read_records(folder, len(jobs))
        sweeper.prepare()
    else:
        if base is None:
            raise RlscaleError("a new sweep needs its base settings")
        check_config(base)
        spec = load_spec(base.pipeline)
        jobs = plan(base, seeds, grid or {})
        for job in jobs:
            check_config(job.config)
        out = Path(base.out)
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out}: exists and is not a folder")
        sweeper.prepare()  # a Ray cluster that cannot be reached fails before anything is created
        folder = new_folder(
            out, check_name(f"{spec.name}__sweep__{time.strftime('%Y%m%d-%H%M%S')}", "sweep name"), "sweep"
        )
        jobs = [_moved(j, folder) for j in jobs]
        _write_plan(folder, base, seeds, grid or {}, jobs)
        done = {}
    todo = [j for j in jobs if j.index not in done]
    for job in todo:
        set_aside(Path(job.config.out) / str(job.config.name))
    log.info("sweep %s: %d trainings, %d to run on %s", folder, len(jobs), len(todo), sweeper.name)
    interrupted: int | None = None
    try:
        with contextlib.ExitStack() as stack:
            advance = stack.enter_context(
                progress_bar("trainings", len(jobs), sweeper, enabled=progress, completed=len(done))
            )
            results = stack.enter_context(contextlib.closing(sweeper.imap_unordered(run_training, todo)))
            for i, record in results:
                done[todo[i].index] = record
                _append(folder, record)
                advance(f"{todo[i].config.name} done")
    # SIGINT, or SIGTERM through rlscale.interrupts (serial: TrainingInterrupted, the training here saved its model)
    except KeyboardInterrupt as exc:
        interrupted = signum_of(exc)
    records = [done[j.index] for j in jobs if j.index in done]
    best = write_summary(folder, records, len(jobs)) if records or interrupted is None else None
    if interrupted is not None:
        raise SweepInterrupted(interrupted, folder, len(records), len(jobs))
    return folder, records, best
