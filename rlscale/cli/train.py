"""``rlscale train``: PPO training (`agents.training.train`), its flags generated from
`agents.train_config.TrainConfig`.

Every field of the config is a ``--field-name`` option with the field's default and its docstring line as help,
so whatever a run depends on can be set from the command line (``--learning-rate 1e-4 --gamma 0.99
--net-arch 256,256``); numeric fields take only values in their ranges, text fields with choices only those (the
fields' `agents.train_config.Flag`; else one usage line, exit 2). Besides them: ``--set`` (spec overrides) and
``--bundle``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlscale.cli.args import add_set, add_spec, float_in, int_in, int_list_in, load_spec, spec_file
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import DEFAULT_EXECUTOR, add_executor_flags


def field_docs(cls: type) -> dict[str, str]:
    """Each attribute's line in the ``Attributes:`` section of a Google-style class docstring (continuation lines
    joined)."""
    doc = inspect.getdoc(cls) or ""
    _, _, section = doc.partition("Attributes:\n")
    docs: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        if not line.strip():
            break
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2).strip()
        elif name is not None and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        else:
            break
    return docs


def _type_of(hint: Any) -> type:
    """``int``, ``float``, ``str`` or ``list`` for a field's annotation (``X | None`` is ``X``)."""
    if typing.get_origin(hint) is list:
        return list
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def value_parsers(cls: type) -> dict[str, Callable[[str], Any]]:
    """The argparse type of each numeric field of the dataclass ``cls`` (`agents.train_config` fields): a number
    (or a list of integers) in the field's range. What the flags and a sweep's ``--grid`` values are parsed with.

    Raises:
        TypeError: a numeric field without a range.
    """
    from agents.train_config import flags

    hints = typing.get_type_hints(cls)
    out: dict[str, Callable[[str], Any]] = {}
    for name, flag in flags(cls).items():
        kind = _type_of(hints[name])
        if kind not in (int, float, list):
            continue
        if flag.low is None or flag.high is None:
            raise TypeError(f"{cls.__name__}.{name}: a numeric field needs a range (low, high) in its Flag")
        if kind is int:
            out[name] = int_in(int(flag.low), int(flag.high))
        elif kind is float:
            out[name] = float_in(flag.low, flag.high, exclusive_low=flag.exclusive_low)
        else:
            if flag.max_items is None:
                raise TypeError(f"{cls.__name__}.{name}: a list field needs max_items in its Flag")
            out[name] = int_list_in(int(flag.low), int(flag.high), max_items=flag.max_items)
    return out


def add_config_flags(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """A ``--field-name`` option per field of the dataclass ``cls``: its type (numbers in their ranges,
    `value_parsers`), choices, default, metavar and help (its `agents.train_config.Flag`'s, else its docstring line,
    `field_docs`)."""
    from agents.train_config import flag_name, flags

    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    parsers = value_parsers(cls)
    defaults = cls()
    for name, flag in flags(cls).items():
        if name in skip:
            continue
        kind = _type_of(hints[name])
        default = getattr(defaults, name)
        if kind not in (int, float, list, str):
            raise TypeError(f"{cls.__name__}.{name}: no command-line form for {hints[name]}")
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        shown = f"{shown:g}" if isinstance(shown, float) else shown
        if flag.help is not None:
            text = flag.help
        else:
            if name not in docs:
                raise TypeError(f"{cls.__name__}.{name}: not described under Attributes: in the docstring")
            text = docs[name].rstrip(".") + ("" if default is None else f" (default {shown})")
        metavar = flag.metavar
        if metavar is None:
            metavar = "|".join(flag.choices) if flag.choices else {int: "N", float: "X"}.get(kind, "S")
        p.add_argument(
            flag_name(name),
            type=parsers.get(name, str),
            default=default,
            choices=flag.choices,
            metavar=metavar,
            help=text.replace("%", "%%"),
        )


def register(sub) -> None:
    from agents.train_config import TrainConfig  # neither torch nor gymnasium: those come with `train`

    p = sub.add_parser("train", help="train the PPO agent on training windows (progress bar, TensorBoard logs)")
    add_spec(p)
    add_config_flags(p, TrainConfig, skip=("pipeline",))
    p.add_argument(
        "--bundle",
        action="store_true",
        help="copy the run's actor.npz (a sweep: the selected run's) into agents/data/ as the bundled agent",
    )
    sweep = p.add_argument_group(
        "sweeps of trainings",
        "several trainings side by side (seeds x grid points), the best selected by its mean score on the validation "
        "windows (held out of training: the Twitter split's last day, the last part of each CSV trace); results in "
        "OUT/PIPELINE__sweep__TIME/",
    )
    sweep.add_argument(
        "--seeds", type=int_in(1, 1000), default=1, metavar="N", help="train seeds SEED .. SEED+N-1 (default 1)"
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="also vary a setting over these values (repeatable: the grid is their product; net_arch values are "
        "separated by ';': net_arch=64,64;128,128)",
    )
    sweep.add_argument(
        "--continue",
        dest="continue_sweep",
        metavar="SWEEP",
        help="finish an interrupted sweep (its folder): the trainings it lacks run, the finished ones are kept (a "
        "cut-short one starts over, its folder kept as NAME.interrupted[-N]); a trainings.jsonl line that is not a "
        "valid record is an error naming the line",
    )
    add_executor_flags(sweep)
    add_set(p)
    p.set_defaults(func=cmd_train)


def cmd_train_sweep(args: argparse.Namespace, cfg, spec_name: str, target: Path | None) -> int:
    """``train --seeds N`` / ``--grid`` / ``--continue``: a sweep of trainings (`rlscale.evaluate.train_sweep`)."""
    from agents.train_config import TrainConfig
    from rlscale.evaluate.train_sweep import SweepInterrupted, parse_grid, train_sweep
    from rlscale.interrupts import raise_on_signals, signal_name
    from rlscale.paths import atomic_path

    if cfg.resume:
        raise RlscaleError("--resume continues one model; a sweep starts every training fresh (or use --continue)")
    if cfg.name is not None:
        raise RlscaleError("--name names one run; a sweep names its runs g{K}-s{SEED}")
    grid = parse_grid(args.grid, value_parsers(TrainConfig))
    if args.continue_sweep is not None:
        from rlscale.evaluate.train_sweep import read_plan
        from rlscale.spec import load_spec as load_plain

        if grid or args.seeds > 1:
            raise RlscaleError("--continue finishes a sweep with its own seeds and grid: drop --seeds and --grid")
        planned = load_plain(read_plan(Path(args.continue_sweep))[0].config.pipeline).name
        if planned != spec_name:
            raise RlscaleError(f"--continue {args.continue_sweep}: a sweep of {planned}, not of {spec_name}")
    try:
        with raise_on_signals():  # SIGINT/SIGTERM: the finished trainings are recorded; summarise them and stop
            folder, records, best = train_sweep(
                None if args.continue_sweep else cfg,
                seeds=args.seeds,
                grid=grid,
                resume_from=Path(args.continue_sweep) if args.continue_sweep else None,
                executor=args.executor,
                workers=args.workers,
                ray_address=args.ray_address,
                progress=sys.stderr.isatty(),
            )
    except SweepInterrupted as exc:
        print(
            f"rlscale train: interrupted by {signal_name(exc.signum)}: {exc.finished} of {exc.total} trainings "
            f"finished (recorded in {exc.folder}); finish with: rlscale train --pipeline {args.pipeline} "
            f"--continue {exc.folder}",
            file=sys.stderr,
        )
        return exc.exit_code
    print(f"sweep folder: {folder}")
    keys = [
        k for k in (records[0] if records else {}) if k not in ("index", "run", "seed") and not k.startswith("eval_")
    ]
    for r in records:
        mark = "*" if best is not None and r["index"] == best["index"] else " "
        settings = " ".join(
            f"{k}={r[k]}" for k in keys if k not in ("validation_score", "validation_violation_rate", "train_wall_s")
        )
        print(
            f" {mark} {r['run']:12s} {settings}  validation {r['validation_score']:+8.3f} cores vs ipa  violations "
            f"{r['validation_violation_rate']:.2%}  trained in {r['train_wall_s']:.0f} s"
        )
    if best is None:
        print("  no training has validation scores (--validation-days 0, --validation-fraction 0): nothing selected")
        return 0
    actor = folder / best["run"] / "actor.npz"
    print(f"  selected (* best mean score on the validation windows): {actor}")
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(actor.read_bytes())
        print(f"bundled as {target}")
    return 0


def absolute_traces(text: str, flag: str) -> str:
    """A comma-separated trace list with its CSV files as absolute paths (names and ``none`` kept), each checked.

    Raises:
        TraceError: an unknown name, a missing or malformed CSV.
    """
    from rlscale.workload import EVAL_TRACES, TWITTER, load_trace, parse_trace_list

    if text.strip() == "none":
        return "none"
    out = []
    for name in parse_trace_list(text, flag):
        if name == TWITTER or name in EVAL_TRACES:
            out.append(name)
            continue
        load_trace(name)  # a bad file fails now, in one line, before anything runs
        out.append(str(Path(name).resolve()))
    return ",".join(out)


def cmd_train(args: argparse.Namespace) -> int:
    from agents.inference import ACTOR_FILE, TRAIN_EXTRA_HINT, bundled_agent
    from agents.train_config import TrainConfig
    from rlscale.interrupts import Interrupted, StopRequest, signal_name, stop_on_signals
    from rlscale.paths import atomic_path

    spec = load_spec(args.pipeline, args)  # fail on a bad spec before anything is created
    try:
        import stable_baselines3  # noqa: F401 - training is the one command that needs torch
    except ImportError:
        raise RlscaleError(f"training needs torch and stable-baselines3: {TRAIN_EXTRA_HINT}") from None
    from agents.training import TrainingInterrupted, train

    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    sweep = args.seeds > 1 or bool(args.grid) or args.continue_sweep is not None
    if not sweep and (args.executor != DEFAULT_EXECUTOR or args.workers is not None or args.ray_address):
        raise RlscaleError(
            "--executor, --workers and --ray-address place the trainings of a sweep: add --seeds N or --grid"
        )
    if not sweep or args.continue_sweep is None:  # the spec with --set is written beside the runs
        settings["pipeline"] = spec_file(args.pipeline, args, Path(args.out))
    # CSV traces as absolute paths: config.json (and a sweep's workers, wherever they start) find them again
    settings["traces"] = absolute_traces(args.traces, "--traces")
    settings["eval_traces"] = absolute_traces(args.eval_traces, "--eval-traces")
    cfg = TrainConfig(**settings)
    target = bundled_agent(spec.name) if args.bundle else None
    if sweep:
        return cmd_train_sweep(args, cfg, spec.name, target)
    try:
        # the first SIGINT/SIGTERM ends learning at the next step and saves the model; a second one at once
        with stop_on_signals(StopRequest()) as stop:
            run = train(cfg, progress_bar=sys.stderr.isatty(), stop=stop)
    except TrainingInterrupted as exc:
        if exc.timesteps_done >= exc.timesteps:
            print(
                f"rlscale train: interrupted by {signal_name(exc.signum)} during the final evaluation (training had "
                f"finished); model saved to {exc.model}",
                file=sys.stderr,
            )
            return exc.exit_code
        left = exc.timesteps - exc.timesteps_done
        print(
            f"rlscale train: interrupted by {signal_name(exc.signum)} after {exc.timesteps_done} of {exc.timesteps} "
            f"steps; model saved to {exc.model}; continue with: rlscale train --pipeline {args.pipeline} "
            f"--timesteps {left} --resume {exc.model}",
            file=sys.stderr,
        )
        return exc.exit_code
    except Interrupted as exc:  # before learning started (no model yet) or while saving
        print(f"rlscale train: interrupted by {signal_name(exc.signum)} before a model was saved", file=sys.stderr)
        return exc.exit_code
    report = json.loads((run / "eval.json").read_text())
    print(f"run folder: {run}")
    if report.get("validation"):  # the held-out traffic: what a sweep selects by
        print(
            f"  validation   {report['validation_score']:+8.3f} cores against ipa  (mean over "
            f"{len(report['validation'])} held-out windows x weights x load scales, never trained on)\n"
            f"  selected     {report.get('selected', '?')} ({report.get('selected_steps', '?')} steps), the best of "
            f"{len(report.get('checkpoint_gaps', {}))} checkpoints; the evaluation traces below are reported only\n",
            end="",
        )
    for trace, rec in report["eval"].items():
        print(
            f"  {trace:12s} score {rec['score']:8.3f}  violations {rec['sla_violation_rate']:.2%}  "
            f"accuracy {rec['accuracy']:.3f}  cost {rec['cost_cores']:.2f} cores"
        )
    print(f"  actor: {run / ACTOR_FILE} (pass it with --agent; model.zip is for --resume)")
    if target is not None:  # the actor file carries its codec settings: nothing else to copy
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes((run / ACTOR_FILE).read_bytes())
        print(f"bundled as {target}")
    return 0
