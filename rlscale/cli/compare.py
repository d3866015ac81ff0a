"""``rlscale compare``: policies x traces x seeds on the simulator (`rlscale.evaluate.compare`), with this CLI's
policy registry handed in."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlscale.cli.args import add_load_scale, add_planner_flags, add_set, add_spec, csv_list, policy_options, spec_file
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import add_executor_flags

POLICY_FACTORY = "rlscale.policies.registry:make_policy"
"""The policy registry, by name: every run (in this process or a worker process) imports it itself."""


def register(sub) -> None:
    p = sub.add_parser("compare", help="run policies x traces x seeds; write results.csv/.md and plots")
    add_spec(p)
    p.add_argument(
        "--traces", required=True, type=csv_list, metavar="T1,T2", help="comma-separated trace names or CSV paths"
    )
    p.add_argument("--policies", required=True, type=csv_list, metavar="A,B", help="comma-separated policy names")
    p.add_argument("--seeds", type=int, default=1, help="seeds per combination (default 1; >1 uses Poisson arrivals)")
    p.add_argument("--arrivals", choices=("even", "poisson"), help="override the arrival process")
    add_load_scale(p)
    p.add_argument("--out", default="out/compare", help="output folder (default out/compare)")
    p.add_argument(
        "--no-timelines",
        action="store_true",
        help="skip the per-run timelines: the plots (timeline-TRACE-POLICY.png, first seed) and the rows "
        "(timeline-TRACE-POLICY-seedN.csv, every run)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="--out holds an unfinished comparison: run only the (trace, policy, seed) runs it has not recorded "
        "(same flags required); lines of records.jsonl for runs outside the comparison are kept as they are",
    )
    again.add_argument(
        "--overwrite", action="store_true", help="remove the results already in --out (timelines included) first"
    )
    add_executor_flags(p)  # --executor, --workers, --ray-address (shared with demo, tune and the scripts)
    add_set(p)
    add_planner_flags(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from rlscale.evaluate.compare import ComparisonInterrupted, markdown_table, run_comparison
    from rlscale.interrupts import Interrupted, raise_on_signals, signal_name

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RlscaleError(f"--out {out}: exists and is not a folder")
    options = policy_options(args, args.policies)
    try:
        with raise_on_signals():  # SIGINT/SIGTERM: the finished runs are on disk; summarise them and stop
            comp = run_comparison(
                spec_file(args.pipeline, args, out),  # the spec with --set is written into --out
                args.traces,
                args.policies,
                make_policy=POLICY_FACTORY,
                seeds=args.seeds,
                options=options,
                arrivals=args.arrivals,
                out=out,
                timelines=not args.no_timelines,
                progress=sys.stderr.isatty(),
                resume=args.resume,
                overwrite=args.overwrite,
                executor=args.executor,
                workers=args.workers,
                ray_address=args.ray_address,
                load_scale=args.load_scale,
            )
    except ComparisonInterrupted as exc:
        left = exc.total - exc.finished
        print(
            f"rlscale compare: interrupted by {signal_name(exc.signum)}: {exc.finished} of {exc.total} runs finished, "
            f"saved in {out}/ (records.jsonl, results.csv, results.md); run the same command with --resume to "
            f"finish the other {left}",
            file=sys.stderr,
        )
        return exc.exit_code
    except Interrupted as exc:  # before the first run, or a second signal while the summary was written
        print(
            f"rlscale compare: interrupted by {signal_name(exc.signum)}; finished runs, if any, are in "
            f"{out}/records.jsonl: run the same command with --resume to go on",
            file=sys.stderr,
        )
        return exc.exit_code
    print(markdown_table(comp, comp.traces, args.policies))
    timelines = "" if args.no_timelines else ", timeline-*.png, timeline-*.csv"
    print(
        f"wrote {len(comp.files)} files to {out}/ (results.csv, results.md, accuracy_vs_cost.png, violations.png"
        f"{timelines})"
    )
    return 0
