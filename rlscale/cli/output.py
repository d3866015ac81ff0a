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
