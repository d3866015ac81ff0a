"""``rlscale bench``: simulator speed against a naive reference, decision latency by stages and PPO training
throughput against CartPole (`rlscale.evaluate.bench`)."""

from __future__ import annotations

import argparse
import sys

from rlscale.cli.args import add_json, csv_list, int_in
from rlscale.cli.output import console, emit_json
from rlscale.errors import RlscaleError

SECTIONS = ("sim", "decisions", "train")  # rlscale.evaluate.bench.SECTIONS (not imported here: the parser stays light)
TRAIN_STEPS = 4096  # rlscale.evaluate.bench.TRAIN_STEPS


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="simulator speed against a naive reference; decision latency of cbc, highs and dp by stages; PPO "
        "training throughput against CartPole",
    )
    p.add_argument(
        "--repeats", type=int_in(1, 1000), default=5, help="runs per figure; the median is reported (default 5)"
    )
    p.add_argument("--quick", action="store_true", help="decision latency for 2 and 5 stages only (a smoke test)")
    p.add_argument(
        "--sections",
        type=csv_list,
        default=None,
        metavar="LIST",
        help="comma-separated sections to run: sim, decisions, train (default: all; train only where the train "
        "extra is installed, else it is left out with a note)",
    )
    p.add_argument(
        "--train-steps",
        type=int_in(1, 10_000_000),
        default=None,
        metavar="N",
        help=f"environment steps of each PPO training of the train section, rounded up to whole rollouts of 2048 "
        f"(default {TRAIN_STEPS})",
    )
    add_json(p)
    p.set_defaults(func=cmd_bench)


def _sections(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections to run. ``train`` without the train extra: one error line if asked for (``--sections`` naming
    it, or ``--train-steps``), else left out with a note on stderr.

    Raises:
        RlscaleError: an unknown section, or ``train`` asked for without torch.
    """
    from rlscale.evaluate.train_throughput import require_train_extra

    explicit = args.sections is not None
    names = tuple(dict.fromkeys(args.sections)) if explicit else SECTIONS
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise RlscaleError(f"--sections: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    if args.train_steps is not None and "train" not in names:
        raise RlscaleError("--train-steps sets the train section, which --sections leaves out")
    if "train" in names:
        try:
            require_train_extra()
        except ImportError as exc:
            hint = "install the train extra (pip install 'rlscale[train]')"
            if explicit or args.train_steps is not None:
                raise RlscaleError(f"bench's train section needs torch and stable-baselines3 ({exc}): {hint}") from None
            print(f"note: bench's train section skipped: {exc}; {hint}", file=sys.stderr)
            names = tuple(n for n in names if n != "train")
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from rlscale.evaluate.bench import run_bench

    sections = _sections(args)
    options = {
        "repeats": args.repeats,
        "quick": args.quick,
        "sections": sections,
        "train_steps": args.train_steps if args.train_steps is not None else TRAIN_STEPS,
    }
    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status("benchmarking")
        status.start()
        try:
            report = run_bench(**options, progress=lambda line: status.update(line))
        finally:
            status.stop()
    else:
        report = run_bench(**options)
    if args.json:
        emit_json(report)
        return 0
    if "sim" in report:
        sim = report["sim"]
        print(
            f"simulator ({sim['workload']}, {sim['events']} request-stage events, median of {sim['repeats']}): "
            f"{sim['events_per_s']:,} events/s; naive reference {sim['naive_events_per_s']:,} events/s; "
            f"ratio {sim['ratio']:.2f}x"
        )
    if "decision_ms" in report:
        _print_decisions(report)
    if "train" in report:
        tr = report["train"]
        for key in ("pipeline", "cartpole"):
            r = tr[key]
            print(
                f"PPO training on {r['env']}: {r['steps_per_s']:,} steps/s ({r['timesteps']} steps in {r['wall_s']} s: "
                f"rollouts {r['rollout_s']} s, updates {r['update_s']} s)"
            )
        print(f"training throughput ratio pipeline / CartPole: {tr['ratio']} (torch threads {tr['torch_threads']})")
    return 0


def _print_decisions(report: dict) -> None:
    from rich.table import Table

    dm = report["decision_ms"]
    table = Table(title="decision latency (ms): p50 / p99 over a low (5 rps) and a high (30 rps) load")
    table.add_column("solver")
    for n in dm["dp"]:
        table.add_column(f"{n} stages", justify="right")
    for name, per in dm.items():
        cells = []
        for n in dm["dp"]:
            c = per.get(n)
            if c is None:
                cells.append("-")
                continue
            timeouts = c.get("timeouts", 0)
            cells.append(f"{c['p50']:.2f} / {c['p99']:.2f}" + (f" ({timeouts} timeouts)" if timeouts else ""))
        table.add_row(name, *cells)
    console().print(table)
    print("ratios:", ", ".join(f"{k} {v}x" for k, v in report["ratios"].items()))
