"""Reading user files with limits: a spec, a trace or a token can be any path, /dev/zero included.

Every limit on what a user may hand rlscale lives here, so the README's table and the checks cannot drift apart.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from rlscale.errors import RlscaleError, TraceError

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: the bundled specs are ~2 KB
MAX_PROFILE_BYTES = 16 << 20  # 16 MiB: a profile grid of every batch x cores point is a few KB
MAX_TRACE_BYTES = 64 << 20  # 64 MiB: 31 days of per-second rows with a few columns
MAX_TRACE_SECONDS = 31 * 86_400  # one row per second: a month
MAX_TRACE_RPS = 100_000.0  # per second; the Twitter trace peaks near 6,000 undamped
MAX_TRACE_REQUESTS = 20_000_000  # the simulator holds every request of a trace (~150 bytes each): ~3 GB
MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes any non-negative int; SB3 and torch take 32 bits
MAX_YAML_DEPTH = 50  # a spec nests 4 levels; a deeper document is not a spec (and could exhaust the stack)


def read_text_limited(path: str | Path, max_bytes: int, error: type[RlscaleError], what: str) -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped), refusing more than ``max_bytes``.

    Raises:
        error: not found, not readable, not UTF-8, or larger than ``max_bytes`` (one line naming the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: {what} file is larger than {max_bytes // 1024} KiB; is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


def per_second_column(path: Path, text: str, column: str, missing: str, blank: str) -> Iterator[tuple[int, str]]:
    """``(line, raw value)`` of ``column`` in each row of a one-row-per-second CSV ``text`` (the traces' and the
    bandwidth traces' format), for the caller to parse and check.

    Trailing blank lines end the file; a blank row inside it is an error (it would shift every later second).

    Raises:
        TraceError: no ``column`` in the header (``missing`` says what the column holds), a blank row (``blank``
            says why that is wrong), or more than `MAX_TRACE_SECONDS` rows (raised once the caller has taken the
            row past the limit).
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = csv.reader(lines)
    header = [h.strip() for h in next(rows, [])]
    if column not in header:
        raise TraceError(f"{path}: line 1: no {column!r} column in header {header!r} ({missing})")
    col = header.index(column)
    for count, (line, row) in enumerate(enumerate(rows, start=2), start=1):
        if not any(cell.strip() for cell in row):
            raise TraceError(f"{path}: line {line}: blank row; {blank}")
        yield line, row[col].strip() if col < len(row) else ""
        if count > MAX_TRACE_SECONDS:
            raise TraceError(f"{path}: more than {MAX_TRACE_SECONDS} rows ({MAX_TRACE_SECONDS // 86_400} days)")


def nesting_depth(value: object, limit: int) -> int:
    """Depth of nested lists/dicts, counting no further than ``limit + 1`` (iterative: no recursion limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
