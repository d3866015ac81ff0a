"""Safe names and safe writes: every name that becomes part of a file path, and every output file, goes through here.

A *name* (a pipeline's, a trace's, a policy's, a run's) is joined into paths under an output folder: it must be
one plain path component, so that a spec saying ``name: ../../escaped/evil`` cannot write outside ``--out``.
`is_safe_name` is the one rule (used by the spec validation and by every command), `check_name` turns a bad
name into one line, and `inside` joins a name to a folder and proves the result stays inside it.

Output files are written atomically (`atomic_write_text`, `atomic_path`: a temporary file in the same folder,
then ``os.replace``), so an interrupted command never leaves half a file under the final name, and a write that
fails (a full disk, a folder under ``/proc``) is one `OutputError` line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rlscale.errors import RlscaleError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_MAX = 63  # a name; a file name made of several names may be longer, up to the file systems' 255


def name_rule(max_len: int = NAME_MAX) -> str:
    """The rule of `is_safe_name` in words, for messages."""
    return f"1-{max_len} letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'"


class OutputError(RlscaleError):
    """An output folder or file cannot be created or written (not a folder, no permission, disk full)."""


def is_safe_name(value: object, max_len: int = NAME_MAX) -> bool:
    """Whether ``value`` can be one component of a file name: the single rule for every name used in a path.

    Args:
        value: the name (a pipeline's, a trace's, a policy's, or a file name built from such names).
        max_len: the longest name allowed (63 for a name; 255 for a file name built from names).

    Returns:
        True for 1 to ``max_len`` letters, digits, ``.``, ``_`` or ``-`` that start with a letter or digit and
        hold no ``..``: no path separator, no parent reference, no hidden file, no empty name.
    """
    return isinstance(value, str) and 0 < len(value) <= max_len and bool(SAFE_NAME.match(value)) and ".." not in value


def check_name(value: str, what: str, max_len: int = NAME_MAX) -> str:
    """``value`` if it is a safe name (see `is_safe_name`), else `RlscaleError`.

    Args:
        value: the name.
        what: what it names, for the message (``"trace name"``, ``"pipeline name"``...).
        max_len: the longest name allowed.

    Raises:
        RlscaleError: one line saying what is wrong and what is allowed.
    """
    if not is_safe_name(value, max_len):
        raise RlscaleError(f"{what} {value!r} cannot be used in a file name ({name_rule(max_len)})")
    return value


def inside(folder: Path, name: str, what: str = "file name") -> Path:
    """``folder / name``, checked to be one safe component that stays inside ``folder`` once resolved.

    Args:
        folder: the folder the path must stay in.
        name: one file or folder name, usually built from safe names (up to 255 characters).
        what: what the name is, for the message.

    Raises:
        RlscaleError: the name is not safe or the path resolves outside ``folder`` (through a symlink, say).
    """
    check_name(name, what, max_len=255)
    path = Path(folder) / name
    base = Path(folder).resolve()
    resolved = path.resolve()
    if base not in resolved.parents:
        raise RlscaleError(f"{what} {name!r}: {path} resolves to {resolved}, outside {base}")
    return path


def output_folder(path: Path, flag: str = "--out") -> Path:
    """Create ``path`` (and its parents) as an output folder and prove it is writable.

    Args:
        path: the folder.
        flag: the option that named it, for the message.

    Raises:
        OutputError: it exists and is not a folder, cannot be created, or a file cannot be written in it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".rlscale-write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write there: {_reason(exc)}") from None
    return path


def new_folder(out: Path, name: str, what: str) -> Path:
    """Create ``out/name`` (``name-2``, ``name-3``... when one of that name exists, as for runs started in the same
    second) inside the output folder ``out``; ``what`` names it in messages (``run``, ``sweep``).

    Raises:
        OutputError: ``out`` is no writable folder, the folder cannot be created, or 99 of that name exist.
    """
    output_folder(out)
    for n in range(1, 100):
        folder = inside(out, name if n == 1 else f"{name}-{n}", f"{what} name")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"--out {out}: cannot create the {what} folder {folder.name}: {exc.strerror}") from None
    raise OutputError(f"--out {out}: too many {what}s named {name}")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _temp_name(path: Path) -> Path:
    """A temporary sibling of ``path`` with the same suffix (plotting libraries pick the format from it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` at once (``os.replace``).

    On any exception (an interrupt included) the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: the write or the rename failed with an OSError.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, ``os.replace``); returns ``path``.

    Raises:
        OutputError: the write failed (disk full, no permission...).
    """
    with atomic_path(path) as tmp:
        write_synced(tmp, text, path)
    return path


def write_synced(tmp: Path, text: str, path: Path) -> None:
    """Write ``text`` to ``tmp`` (the temporary file of an `atomic_path` for ``path``) and fsync it: the write step
    of an atomic write, for a caller that renames several files together.

    Raises:
        OutputError: the write failed, naming ``path``.
    """
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` and make it durable (write, flush, fsync) before returning.

    Raises:
        OutputError: the write failed.
    """
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None


def check_output_file(
    path: Path,
    flag: str,
    suffix: str,
    what: str,
    ours: Callable[[bytes], bool] | None = None,
    foreign: str = "",
) -> None:
    """Fail before a long run, not after it, when ``path`` is no ``suffix`` file that can be written (its folder may
    not exist yet; the nearest existing one must be a folder, and writable when it is the parent), or, with
    ``ours``, when it is an existing file rlscale did not write: a rerun replaces its own output, never a user's file.

    Args:
        path: the file to write.
        flag: the option that named it (``--plot``), for the message.
        suffix: the extension it must have (``.png``).
        what: what it is (``the plot is a PNG file``), for the message.
        ours: whether the first 4 KiB of an existing, non-empty file show that rlscale wrote it (None: any file
            may be replaced).
        foreign: what an existing file that is not ours is, for the message (``is not a plot rlscale wrote``).

    Raises:
        RlscaleError: another extension, a folder, a file in the way of its folder, a parent not writable, or an
            existing file that is not ours (or cannot be read to tell).
    """
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise RlscaleError(f"{flag} {path}: {what}; give a path ending in {suffix}")
    if path.is_dir():
        raise RlscaleError(f"{flag} {path}: is a folder; give a file path ending in {suffix}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise RlscaleError(f"{flag} {path}: {existing} is not a folder")
    if existing == parent:
        # a real write: os.access says yes to root even where nothing can be created (/proc, a read-only mount)
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise RlscaleError(f"{flag} {path}: cannot write in {parent}: {exc.strerror or exc}") from None
    if ours is None or not path.is_file():
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise RlscaleError(f"{flag} {path}: exists and cannot be read: {exc.strerror or exc}") from None
    if head and not ours(head):
        raise RlscaleError(f"{flag} {path}: {foreign}; give another file name, or move that file away")
