"""``rlscale simulate``: one episode of a policy on the simulator, summarised (a table, or the record as JSON)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from rlscale.cli.args import (
    add_json,
    add_load_scale,
    add_planner_flags,
    add_set,
    add_spec,
    int_in,
    load_spec,
    policy_options,
)
from rlscale.cli.output import console, emit_json, fmt, run_notes
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED
from rlscale.paths import check_output_file

log = logging.getLogger("rlscale")


def register(sub) -> None:
    from rlscale.policies.registry import POLICIES

    p = sub.add_parser("simulate", help="run one episode of a policy on the simulator and summarise it")
    add_spec(p)
    p.add_argument("--trace", required=True, metavar="NAME|CSV", help="bundled trace name or CSV with an rps column")
    p.add_argument(
        "--policy",
        required=True,
        choices=list(POLICIES),
        metavar="POLICY",
        help="; ".join(f"{k}: {v[1]}" for k, v in POLICIES.items()).replace("%", "%%"),
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--arrivals",
        choices=("even", "poisson"),
        default="even",
        help="spread each second's requests evenly (IPA's generator, default) or as a Poisson process",
    )
    add_load_scale(p)
    add_set(p)
    add_planner_flags(p)
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw load, each stage's variant/replicas/batch/cores, p99 vs SLA and violations over time; an existing "
        "FILE.png is replaced only when it is a plot rlscale drew (any other file is refused before the run)",
    )
    p.add_argument(
        "--timeline",
        metavar="FILE.csv",
        help="write one CSV row per interval: load, each stage's variant/batch/cores/replicas/p99/utilisation, "
        "e2e p99, violations, cost, in-flight requests, what the guard changed (columns: rlscale.timeline); an "
        "existing FILE.csv is replaced only when it is a timeline rlscale wrote (any other file is refused before "
        "the run)",
    )
    add_json(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from rlscale.policies.registry import make_policy
    from rlscale.sim.runner import run_episode
    from rlscale.workload import load_trace, scale_trace

    spec = load_spec(args.pipeline, args)
    trace = scale_trace(load_trace(args.trace), args.load_scale)
    policy = make_policy(args.policy, spec, trace, policy_options(args, [args.policy]))
    if args.plot:
        check_writable(Path(args.plot))
    if args.timeline:
        from rlscale.timeline import check_writable as check_csv

        check_csv(Path(args.timeline))
    with collapsed_warnings():
        result = run_episode(spec, trace, policy, seed=args.seed, arrivals=args.arrivals)
    if args.timeline:
        from rlscale.paths import atomic_write_text
        from rlscale.timeline import to_csv

        Path(args.timeline).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.timeline), to_csv(spec, result.timeline_rows(spec)))
        log.info("wrote %s", args.timeline)
    if args.plot:
        from rlscale.evaluate.plots import plot_timeline

        save_plot(lambda: plot_timeline(spec, result, Path(args.plot)), Path(args.plot))
        log.info("wrote %s", args.plot)
    notes = run_notes(result.record)
    if args.json:
        for note in notes:  # stderr: stdout holds only the JSON document
            log.warning("%s", note)
        emit_json(result.record)
        return 0
    from rich.table import Table

    table = Table(title=f"rlscale simulate: {spec.name} / {trace.name} / {policy.name} (seed {args.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.record.items():
        if key in ("pipeline", "trace", "policy", "seed", "stages"):
            continue
        shown = f"{value:.2%}" if key in ("sla_violation_rate", "in_flight_share") else fmt(value)
        table.add_row(key, shown)
    per_stage = Table(title="per stage")
    columns = [k for k in result.record["stages"][0] if k != "stage"]
    per_stage.add_column("stage")
    for k in columns:
        per_stage.add_column(k, justify="right")
    for row in result.record["stages"]:
        per_stage.add_row(row["stage"], *[fmt(row[k]) for k in columns])
    out = console()
    out.print(table)
    out.print(per_stage)
    for note in notes:
        out.print(f"[bold yellow]note:[/] {note}", highlight=False)
    return 0


class _Once(logging.Filter):
    """Lets the first record of each (logger, message template) through and counts the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[tuple[str, int, str]] = Counter()
        self.first: dict[tuple[str, int, str], str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        decided = getattr(record, "_rlscale_once", None)  # the same record reaches every handler: count it once
        if decided is not None:
            return decided
        key = (record.name, record.levelno, str(record.msg))
        self.seen[key] += 1
        if self.seen[key] == 1:
            self.first[key] = record.getMessage()
        record._rlscale_once = self.seen[key] == 1
        return record._rlscale_once


@contextlib.contextmanager
def collapsed_warnings() -> Iterator[None]:
    """Within the block, a warning that repeats (same logger and message template, e.g. a planner's fallback at
    every interval) is printed once; after it, one line per repeated warning says how many more there were."""
    once = _Once()
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(once)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(once)
        for key, n in once.seen.items():
            if n > 1:
                first = once.first[key]
                short = first if len(first) <= 70 else first[:67] + "..."
                logging.getLogger(key[0]).log(key[1], "%d more like: %s", n - 1, short)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_MARK = b"Matplotlib"
"""What the plots rlscale draws carry in their first bytes: matplotlib's ``Software`` text chunk, written before the
image data."""


def check_writable(path: Path) -> None:
    """Fail before a long run, not after it, when the plot cannot be written, or when ``path`` is a file rlscale did
    not draw: a plot drawn earlier (a PNG with matplotlib's mark, `PLOT_MARK`) is overwritten, any other file is
    kept.

    Raises:
        RlscaleError: see `rlscale.paths.check_output_file`; ``path`` holds another file.
    """
    check_output_file(
        path,
        "--plot",
        ".png",
        "the plot is a PNG file",
        ours=lambda head: head.startswith(PNG_SIGNATURE) and PLOT_MARK in head,
        foreign="exists and is not a plot rlscale wrote (rlscale overwrites only its own plots)",
    )


def save_plot(draw: Callable[[], object], path: Path) -> None:
    """Draw a plot; a write that fails (disk full, folder removed) is one clear line, not an internal error."""
    try:
        draw()
    except OSError as exc:
        raise RlscaleError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
