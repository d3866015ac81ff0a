"""``rlscale bench``: simulator speed against a naive reference and decision latency by stages (`experiments.bench`)."""

from __future__ import annotations

import argparse
import sys

from rlscale.cli.args import add_json, int_in
from rlscale.cli.output import console, emit_json


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="simulator speed against a naive reference; decision latency of cbc, highs and dp by stages"
    )
    p.add_argument(
        "--repeats", type=int_in(1, 1000), default=5, help="runs per figure; the median is reported (default 5)"
    )
    p.add_argument("--quick", action="store_true", help="decision latency for 2 and 5 stages only (a smoke test)")
    add_json(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from experiments.bench import run_bench

    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status("benchmarking")
        status.start()
        report = run_bench(repeats=args.repeats, quick=args.quick, progress=lambda line: status.update(line))
        status.stop()
    else:
        report = run_bench(repeats=args.repeats, quick=args.quick)
    if args.json:
        emit_json(report)
        return 0
    sim = report["sim"]
    print(
        f"simulator ({sim['workload']}, {sim['events']} request-stage events, median of {sim['repeats']}): "
        f"{sim['events_per_s']:,} events/s; naive reference {sim['naive_events_per_s']:,} events/s; "
        f"ratio {sim['ratio']:.2f}x"
    )
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
    return 0
