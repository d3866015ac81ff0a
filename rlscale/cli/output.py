"""What commands print: rich tables on a terminal-wide console, and the one JSON document of ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rlscale.stdio import stdout_to_stderr

# where a --json command writes its document: the real stdout, while everything else printed goes to stderr
_json_out: TextIO | None = None


def console():
    """A rich console; when stdout is not a terminal, wide enough that tables are not truncated."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def compact(values: Sequence[int]) -> str:
    """1,2,4,8 stays a list; a contiguous run like 2..20 prints as 2-20."""
    vals = list(values)
    if len(vals) > 3 and vals == list(range(vals[0], vals[-1] + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ",".join(map(str, vals))


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_notes(record: dict) -> list[str]:
    """Lines a run's summary must say out loud: a violation rate over `rlscale.evaluate.compare.SLA_THRESHOLD`, requests
    still in the pipeline when the run ended, and budget breaches (``budget_breaches``, where the record has it).
    Empty when there is nothing to say."""
    from rlscale.evaluate.compare import SLA_THRESHOLD

    notes = []
    rate = record.get("sla_violation_rate")
    if isinstance(rate, int | float) and rate > SLA_THRESHOLD:
        notes.append(
            f"{rate:.2%} of requests late or dropped: the run does not meet the SLA (over {SLA_THRESHOLD:.0%})"
        )
    in_flight = record.get("in_flight") or 0
    if isinstance(in_flight, int | float) and in_flight > 0:
        share = record.get("in_flight_share")
        if not isinstance(share, int | float):
            requests = record.get("requests") or 0
            share = in_flight / requests if requests else float("nan")
        notes.append(
            f"{in_flight:.0f} requests ({share:.1%} of arrivals) still queued at the end: the pipeline could not keep "
            "up (they are neither completed nor dropped, so the violation rate does not count them)"
        )
    breaches = record.get("budget_breaches")
    if isinstance(breaches, int | float) and not isinstance(breaches, bool) and breaches > 0:
        notes.append(f"{breaches:.0f} budget breach(es) (budget_breaches): the run went over a budget the spec sets")
    return notes


def emit_json(document: object) -> None:
    """Write the command's one JSON document to the real stdout (see `json_guard`)."""
    out = _json_out if _json_out is not None else sys.stdout
    out.write(json.dumps(document, indent=2) + "\n")
    out.flush()


@contextmanager
def json_guard() -> Iterator[None]:
    """While a ``--json`` command runs, whatever a library prints (C code included) goes to stderr; only
    `emit_json` writes to the real stdout."""
    global _json_out
    with stdout_to_stderr() as _json_out:
        try:
            yield
        finally:
            _json_out = None
