"""The ``rlscale`` command: the composition root.

Every sub-command has ``--help``. Errors caused by input (a bad spec, trace or flag) are printed as one line on
stderr with exit code 2; nothing prints a traceback unless ``RLSCALE_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rlscale.errors import RlscaleError

log = logging.getLogger("rlscale")

EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------- pipelines


def cmd_pipelines(args: argparse.Namespace) -> int:
    from rlscale.spec import bundled_pipelines, load_spec

    specs = [load_spec(n) for n in (args.spec or bundled_pipelines())]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rlscale pipelines", show_lines=True)
    for col in ("pipeline", "SLA (s)", "stage", "variants (accuracy)", "batch", "cores", "replicas"):
        table.add_column(col)
    for s in specs:
        for i, st in enumerate(s.stages):
            table.add_row(
                s.name if i == 0 else "",
                f"{s.sla_s:g}" if i == 0 else "",
                st.name,
                ", ".join(f"{v.name} ({v.accuracy:.3f})" for v in st.variants),
                ",".join(map(str, st.batch_sizes)),
                ",".join(map(str, st.cores)),
                f"{st.min_replicas}-{st.max_replicas}",
            )
    Console().print(table)
    return 0


# ------------------------------------------------------------------------------------------------ traces


def cmd_traces(args: argparse.Namespace) -> int:
    from rlscale.workload import bundled_traces, load_trace

    traces = [load_trace(n) for n in (args.trace or bundled_traces())]
    if args.json:
        print(json.dumps([t.summary() for t in traces], indent=2))
        return 0
    from rich.console import Console
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
    Console().print(table)
    return 0


# -------------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo

    return run_demo(out_dir=Path(args.out))


# ------------------------------------------------------------------------------------------------ parser


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlscale",
        description="RL autoscaler for multi-stage ML inference pipelines (simulator, ILP baseline, PPO agent).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("pipelines", help="list bundled pipelines: stages, variants, SLA")
    p.add_argument(
        "--spec",
        action="append",
        metavar="NAME|FILE",
        help="show only this pipeline or spec file (repeatable)",
    )
    _add_json(p)
    p.set_defaults(func=cmd_pipelines)

    p = sub.add_parser("traces", help="list bundled workload traces with length and total requests")
    p.add_argument("--trace", action="append", metavar="NAME|CSV", help="show only this trace (repeatable)")
    _add_json(p)
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("demo", help="the main job on the bundled default (what `make demo` runs)")
    p.add_argument("--out", default="out/demo", help="folder for the plots (default: out/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    debug = os.environ.get("RLSCALE_DEBUG") == "1"
    try:
        return func(args)
    except RlscaleError as exc:
        if debug:
            raise
        print(f"rlscale {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rlscale {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        print(
            f"rlscale {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set RLSCALE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
