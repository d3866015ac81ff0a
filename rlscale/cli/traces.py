"""``rlscale traces``: the bundled workload patterns (or given trace files) with length and total requests."""

from __future__ import annotations

import argparse

from rlscale.cli.args import add_json
from rlscale.cli.output import console, emit_json


def register(sub) -> None:
    p = sub.add_parser("traces", help="list bundled workload traces with length and total requests")
    p.add_argument("--trace", action="append", metavar="NAME|CSV", help="show only this trace (repeatable)")
    add_json(p)
    p.set_defaults(func=cmd_traces)


def cmd_traces(args: argparse.Namespace) -> int:
    from rlscale.workload import bundled_traces, load_trace

    traces = [load_trace(n) for n in (args.trace or bundled_traces())]
    if args.json:
        emit_json([t.summary() for t in traces])
        return 0
    from rich.table import Table

    table = Table(title="rlscale traces")
    for col in ("trace", "length (s)", "requests", "mean rps", "peak rps", "source"):
        table.add_column(col)
    for t in traces:
        table.add_row(
            t.name,
            str(t.duration_s),
            str(t.total_requests),
            f"{t.mean_rps:.1f}",
            f"{t.peak_rps:g}",
            t.description,
        )
    console().print(table)
    return 0
