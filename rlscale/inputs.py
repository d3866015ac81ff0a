"""Reading user files with limits: a spec, a trace or a token can be any path, /dev/zero or a FIFO included.

Every limit on what a user may hand rlscale lives here, so the README's table and the checks cannot drift apart.
Every user file goes through `read_bytes_limited` (only regular files, opened without blocking, at most a given
size); YAML through `load_yaml` (aliases measured as expanded before anything is built from them) and JSON through
`loads_json` (bounded depth).
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from rlscale.errors import RlscaleError, TraceError

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: the bundled specs are ~2 KB
MAX_PROFILE_BYTES = 16 << 20  # 16 MiB: a profile grid of every batch x cores point is a few KB
MAX_TRACE_BYTES = 64 << 20  # 64 MiB: 31 days of per-second rows with a few columns
MAX_TRACE_SECONDS = 31 * 86_400  # one row per second: a month
MAX_TRACE_RPS = 100_000.0  # per second; the Twitter trace peaks near 6,000 undamped
MAX_TRACE_REQUESTS = 20_000_000  # the simulator holds every request of a trace (~150 bytes each): ~3 GB
MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes any non-negative int; SB3 and torch take 32 bits
MAX_YAML_DEPTH = 50  # a spec nests 4 levels; a deeper document is not a spec (and could exhaust the stack)
MAX_YAML_NODES = 200_000  # values of a YAML document with its aliases expanded: a spec has a few hundred
MAX_KUBECONFIG_BYTES = 16 << 20  # 16 MiB: a kubeconfig with embedded certificates of many clusters is ~100 KB
MAX_SETTINGS_BYTES = 16 << 20  # 16 MiB: settings, tunings, a sweep's plan (a few KB)
MAX_RECORDS_BYTES = 256 << 20  # 256 MiB: records.jsonl / trainings.jsonl of ~100,000 runs
MAX_JSON_DEPTH = 100  # settings, records, tunings and an agent's meta record nest a few levels


def special_file_kind(path: str | Path) -> str | None:
    """None when ``path`` is a regular file (after symlinks), else what it is in words (``a FIFO (named pipe)``),
    found without opening it.

    Raises:
        OSError: ``path`` cannot be looked at (FileNotFoundError when it does not exist).
    """
    mode = os.stat(path).st_mode
    return None if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular_file(path: str | Path, error: type[RlscaleError], what: str) -> Path:
    """``path``, checked to be a regular file (after symlinks) without opening it: opening a FIFO blocks and a
    device never ends.

    Raises:
        error: not found, or a folder, FIFO, device or socket (one line naming the file).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, not a {what} file")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {_kind(mode)}, not a regular file; pass a {what} file")
    return path


def read_bytes_limited(path: str | Path, max_bytes: int, error: type[RlscaleError], what: str) -> bytes:
    """The bytes of the regular file ``path``, refusing more than ``max_bytes``.

    The file is opened without blocking (a FIFO put in its place after the check does not hang) and checked again
    through the open descriptor, so only a regular file is ever read.

    Raises:
        error: not found, not readable, not a regular file, or larger than ``max_bytes`` (one line naming the file).
    """
    path = check_regular_file(path, error, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: is {_kind(info.st_mode)}, not a regular file; pass a {what} file")
        if info.st_size > max_bytes:
            raise error(f"{path}: {what} file is larger than {_size(max_bytes)}; is it the right file?")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{path}: {what} file is larger than {_size(max_bytes)}; is it the right file?")
    return data


def _size(n_bytes: int) -> str:
    return f"{n_bytes // 2**20} MiB" if n_bytes >= 2**20 and n_bytes % 2**20 == 0 else f"{n_bytes // 1024} KiB"


def decode_utf8(data: bytes, where: str, error: type[RlscaleError], what: str) -> str:
    """``data`` as UTF-8 text (a BOM is dropped).

    Raises:
        error: not UTF-8 (one line naming ``where`` and the first bad byte).
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {what} is not UTF-8 text (byte {exc.start})") from None


def read_text_limited(path: str | Path, max_bytes: int, error: type[RlscaleError], what: str) -> str:
    """The UTF-8 text of the regular file ``path`` (a BOM is dropped), refusing more than ``max_bytes``.

    Raises:
        error: not found, not readable, not a regular file, not UTF-8, or larger than ``max_bytes`` (one line
            naming the file).
    """
    return decode_utf8(read_bytes_limited(path, max_bytes, error, what), str(path), error, what)


def loads_json(text: str | bytes, where: str, error: type[RlscaleError], what: str, max_depth: int = MAX_JSON_DEPTH):
    """The JSON value in ``text``, nested at most ``max_depth`` levels.

    Raises:
        error: not UTF-8, not JSON, or nested deeper than ``max_depth`` (one line naming ``where``).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(f"{where}: {what} is not JSON: not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{where}: {what} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise error(f"{where}: {what} is not JSON: {' '.join(str(exc).split())[:200]}") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise error(f"{where}: {what} is nested deeper than {max_depth} levels")
    return value


def read_json_limited(
    path: str | Path, max_bytes: int, error: type[RlscaleError], what: str, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """The JSON value of the regular file ``path``: at most ``max_bytes``, UTF-8, nested at most ``max_depth``.

    Raises:
        error: as `read_bytes_limited` and `loads_json`.
    """
    return loads_json(read_bytes_limited(path, max_bytes, error, what), str(path), error, what, max_depth)


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(root: yaml.Node, max_depth: int, max_nodes: int) -> str | None:
    """What is wrong with the composed YAML graph ``root`` once its aliases are expanded (too deep, too many
    values, an alias inside its own anchor), or None; measured on the graph, each shared node once, so an alias
    bomb costs as much as its text (iterative: no recursion limit)."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (depth, values) expanded
    open_nodes: set[int] = set()  # the nodes entered and not left: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        children = _yaml_children(node)
        if leaving:
            deepest = max((measured[id(c)][0] for c in children), default=0)
            depth = deepest + 1 if isinstance(node, yaml.CollectionNode) else 0  # as `nesting_depth` counts
            size = 1 + sum(measured[id(c)][1] for c in children)
            if depth > max_depth:
                return f"nested too deeply (deeper than {max_depth} levels)"
            if size > max_nodes:
                return f"holds more than {max_nodes:,} values with its aliases expanded (an alias bomb?)"
            measured[key] = (depth, size)
            open_nodes.discard(key)
            continue
        if key in measured:
            continue
        if key in open_nodes:
            return "has an alias inside the node it names (a recursive structure)"
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in measured)
    return None


def load_yaml(
    text: str,
    where: str,
    error: type[RlscaleError],
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
    line_numbers: bool = True,
) -> Any:
    """The data of one YAML document (safe: plain types only), refused before it is built when it nests deeper than
    ``max_depth`` or holds more than ``max_nodes`` values with its aliases expanded (a "billion laughs" document of
    a few hundred bytes expands to billions; every consumer downstream would expand it). ``line_numbers``: name
    the line of a syntax error (a file; not a one-line ``--set`` value).

    Raises:
        error: not valid YAML, several documents, too deep, too many values, or a recursive alias (one line naming
            ``where``).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _expanded_size(node, max_depth, max_nodes)
        if problem is not None:
            raise error(f"{where}: YAML {problem}")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None and line_numbers else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: {at}not valid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{where}: YAML nested too deeply (deeper than {max_depth} levels)") from None
    finally:
        loader.dispose()


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
