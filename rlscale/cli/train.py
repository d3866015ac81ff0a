"""``rlscale train``: PPO training (`agents.ppo.train`), its flags generated from `agents.ppo.TrainConfig`.

Every field of the config is a ``--field-name`` option with the field's default and its docstring line as help,
so whatever a run depends on can be set from the command line (``--learning-rate 1e-4 --gamma 0.99
--net-arch 256,256``); numeric fields take only values in the ranges of `RANGES` (else one usage line, exit 2).
Besides them: ``--set`` (spec overrides) and ``--bundle``.
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
from rlscale.inputs import MAX_SEED

MAX_STEPS = 10**10

RANGES: dict[str, Callable[[str], Any]] = {
    "timesteps": int_in(1, MAX_STEPS),
    "seed": int_in(0, MAX_SEED),
    "n_envs": int_in(1, 256),
    "learning_rate": float_in(0.0, 1.0, exclusive_low=True),
    "n_steps": int_in(1, 1_000_000),
    "batch_size": int_in(2, 1_000_000),  # SB3 normalises advantages per minibatch: one sample is refused
    "n_epochs": int_in(1, 1000),
    "gamma": float_in(0.0, 1.0),
    "gae_lambda": float_in(0.0, 1.0),
    "ent_coef": float_in(0.0, 1.0),
    "net_arch": int_list_in(1, 4096, max_items=8),
    "checkpoint_every": int_in(1, MAX_STEPS),
    "checkpoint_minutes": float_in(0.0, 7 * 24 * 60.0),
    "eval_every": int_in(1, MAX_STEPS),
    "load_scale_rps": float_in(0.0, 1e6, exclusive_low=True),
    "projection_penalty": float_in(0.0, 100.0),
    "reconfig_penalty": float_in(0.0, 100.0),
}
"""The argparse type of each numeric `TrainConfig` field: its range (every numeric field must have one)."""

# the flags that existed before they were generated keep their words
HELP = {
    "timesteps": "adaptation intervals to train for (default 200000)",
    "seed": "seed of PPO and of the training windows (default 0)",
    "n_envs": "parallel environments (default 4)",
    "out": "parent folder of the run folder (default runs/)",
    "resume": "continue training this model (a run's model.zip or a checkpoint)",
    "checkpoint_minutes": "also save a checkpoint every M minutes, besides every --checkpoint-every steps "
    "(default 10; 0: off)",
}
METAVAR = {"resume": "MODEL.zip", "checkpoint_minutes": "M", "net_arch": "N,N,..."}


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


def add_config_flags(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """A ``--field-name`` option per field of the dataclass ``cls``: its type (numbers in `RANGES`), default and
    docstring line (`field_docs`) as help."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = _type_of(hints[f.name])
        default = getattr(defaults, f.name)
        if kind in (int, float, list):
            if f.name not in RANGES:
                raise TypeError(f"{cls.__name__}.{f.name}: a numeric field needs a range in rlscale.cli.train.RANGES")
            parse = RANGES[f.name]
        elif kind is str:
            parse = str
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for {hints[f.name]}")
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        shown = f"{shown:g}" if isinstance(shown, float) else shown
        if f.name in HELP:
            text = HELP[f.name]
        else:
            if f.name not in docs:
                raise TypeError(f"{cls.__name__}.{f.name}: not described under Attributes: in the docstring")
            text = docs[f.name].rstrip(".") + ("" if default is None else f" (default {shown})")
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=parse,
            default=default,
            metavar=METAVAR.get(f.name, f.name.upper() if f.name in HELP else {int: "N", float: "X"}.get(kind, "S")),
            help=text.replace("%", "%%"),
        )


def register(sub) -> None:
    from agents.ppo import TrainConfig  # numpy only at import: torch comes with `train`

    p = sub.add_parser("train", help="train the PPO agent on training windows (progress bar, TensorBoard logs)")
    add_spec(p)
    add_config_flags(p, TrainConfig, skip=("pipeline",))
    p.add_argument(
        "--bundle", action="store_true", help="copy the run's actor.npz into agents/data/ as the bundled agent"
    )
    add_set(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from agents.ppo import ACTOR_FILE, TRAIN_EXTRA_HINT, TrainConfig, TrainingInterrupted, bundled_agent, train
    from rlscale.interrupts import Interrupted, StopRequest, signal_name, stop_on_signals
    from rlscale.paths import atomic_path

    spec = load_spec(args.pipeline, args)  # fail on a bad spec before anything is created
    try:
        import stable_baselines3  # noqa: F401 - training is the one command that needs torch
    except ImportError:
        raise RlscaleError(f"training needs torch and stable-baselines3: {TRAIN_EXTRA_HINT}") from None
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    # the spec with --set is written beside the runs
    settings["pipeline"] = spec_file(args.pipeline, args, Path(args.out))
    cfg = TrainConfig(**settings)
    target = bundled_agent(spec.name) if args.bundle else None
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
