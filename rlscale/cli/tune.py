"""``rlscale tune``: tune ``ipa-tuned``'s headroom (``hpa-tuned``'s target utilisation, ``ipa-hold``'s headroom and
δ) on training windows
(`rlscale.evaluate.tune_headroom.tune`) and merge the result into the tuning file ``--out``, which ``simulate``,
``compare`` and ``sidecar`` read with ``--tuning FILE``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from rlscale.cli.args import add_json, add_set, add_spec, float_in, int_in, load_spec, spec_file
from rlscale.cli.output import emit_json
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import add_executor_flags
from rlscale.inputs import MAX_SEED, MAX_TRACE_SECONDS
from rlscale.workload import DEFAULT_VALIDATION_FRACTION, WINDOW_S

log = logging.getLogger("rlscale")


def register(sub) -> None:
    from rlscale.policies.tunings import POLICIES

    p = sub.add_parser(
        "tune",
        help="tune ipa-tuned's headroom (hpa-tuned's target, ipa-hold's headroom and delta) on training windows; "
        "write a tuning file",
        description=(
            "Run the policy with every candidate value (ipa: headroom 1.0-2.0; hpa: target utilisation 0.5-0.9; "
            "ipa-hold: headroom 0.9-1.3 x delta 0-4 core-equivalents) on "
            "the same random training windows and keep the value with the best mean score. Training windows come "
            "from --traces as in rlscale train (the bundled Twitter training split, or your own CSV traces, their "
            "last --validation-fraction left out); evaluation windows are never read. The result is merged into "
            "--out (one entry per pipeline); pass that file with --tuning to simulate, compare and sidecar."
        ),
    )
    add_spec(p)
    p.add_argument(
        "--policy",
        choices=tuple(POLICIES),
        default="ipa",
        help="tune ipa's headroom (default), hpa's target, or ipa-hold's headroom and delta",
    )
    p.add_argument(
        "--traces",
        default="twitter",
        metavar="twitter|A.csv,...",
        help="training traffic: twitter (the bundled training split, all 14 days) and/or CSV files with an rps "
        "column, one row per second, used as given (default twitter)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float_in(0.0, 0.9),
        default=DEFAULT_VALIDATION_FRACTION,
        metavar="F",
        help="the last part of each CSV trace left out (as rlscale train holds it out for validation), at least one "
        f"window; 0: none (default {DEFAULT_VALIDATION_FRACTION:g})",
    )
    p.add_argument(
        "--windows", type=int_in(1, 1000), default=8, metavar="N", help="training windows per candidate (default 8)"
    )
    p.add_argument(
        "--window-s",
        type=int_in(10, MAX_TRACE_SECONDS),
        default=WINDOW_S,
        metavar="S",
        help=f"window length in seconds (default {WINDOW_S})",
    )
    p.add_argument(
        "--damping",
        type=int_in(1, 1000),
        default=8,
        metavar="D",
        help="divide the Twitter split's counts by D, as IPA did (CSV traces are used as given) (default 8)",
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed of the window draws (default 0)")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.json",
        help="the tuning file to merge the result into (created if missing; other entries are kept)",
    )
    add_executor_flags(p)
    add_set(p)
    add_json(p)
    p.set_defaults(func=cmd_tune)


def check_writable(path: Path) -> None:
    """Fail before the runs, not after them, when ``path`` cannot be written (its folder is created).

    Raises:
        RlscaleError: the folder cannot be created or written in.
    """
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):  # a real write: os.access says yes to root on /proc
            pass
    except OSError as exc:
        raise RlscaleError(f"--out {path}: cannot write in {parent}: {exc.strerror or exc}") from None


def cmd_tune(args: argparse.Namespace) -> int:
    from rlscale.cli.train import absolute_traces
    from rlscale.evaluate.tune_headroom import merge, read_table, tune, write_table
    from rlscale.policies.tunings import POLICIES

    spec = load_spec(args.pipeline, args)
    out = Path(args.out)
    table = read_table(out)  # before the runs: a file that cannot be merged into fails now
    traces = absolute_traces(args.traces, "--traces")
    if traces == "none":
        raise RlscaleError("--traces: tuning needs training traffic (twitter or CSV files), not none")
    check_writable(out)
    pipeline = spec_file(args.pipeline, args, out.parent if str(out.parent) else Path("."))
    words = ["rlscale", "tune", "--pipeline", args.pipeline]
    for item in args.overrides:
        words += ["--set", item]
    words += ["--policy", args.policy, "--traces", traces, "--windows", str(args.windows)]
    words += ["--window-s", str(args.window_s), "--damping", str(args.damping), "--seed", str(args.seed)]
    command = shlex.join(words)
    report = tune(
        pipeline,
        policy=args.policy,
        traces=traces,
        validation_fraction=args.validation_fraction,
        windows=args.windows,
        window_s=args.window_s,
        damping=args.damping,
        seed=args.seed,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        progress=sys.stderr.isatty(),
        command=command,
    )
    write_table(out, merge(table, spec.name, args.policy, report))
    key = POLICIES[args.policy]
    if args.json:
        emit_json({"pipeline": spec.name, "policy": args.policy, "out": str(out), **report})
        return 0
    print(f"{spec.name}: {args.policy} {key} on {len(report['windows'])} training windows")
    for row in report["sweep"]:
        mark = "*" if row[key] == report[key] and row.get("delta") == report.get("delta") else " "
        delta = f" delta {row['delta']:<5g}" if "delta" in row else ""
        print(
            f" {mark} {key} {row[key]:<5g}{delta} mean score {row['mean_score']:9.3f}  violations "
            f"{row['mean_violation_rate']:.2%}"
        )
    tuned = args.policy if args.policy == "ipa-hold" else f"{args.policy}-tuned"
    print(f"wrote {out}; use it with: rlscale simulate --pipeline {args.pipeline} --policy {tuned} --tuning {out} ...")
    return 0
