"""Keep stdout clean: point file descriptor 1 elsewhere while a block runs.

Libraries with a C core (HiGHS' banner, say) write to file descriptor 1 directly, past ``sys.stdout``. A machine-
readable command needs stdout to hold exactly its one JSON document, so `stdout_redirected` moves fd 1 (and
``sys.stdout``) to another descriptor for a block and hands back a stream on the original stdout for the document.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_LIBC = ctypes.CDLL(None)


def _flush_all() -> None:
    """Flush Python's stdout and every C stdio buffer, so nothing written so far lands after the switch."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    _LIBC.fflush(None)


@contextmanager
def stdout_redirected(target_fd: int, target: TextIO) -> Iterator[TextIO]:
    """Within the block, fd 1 writes to ``target_fd`` and ``sys.stdout`` is ``target``; yields the real stdout.

    Args:
        target_fd: the descriptor that takes what C code writes to fd 1.
        target: the Python stream ``sys.stdout`` becomes (writing to the same place as ``target_fd``).

    Nesting works (each level restores what it found). Where fd 1 cannot be duplicated (closed, or a test harness
    without descriptors), only ``sys.stdout`` is switched and the yielded stream is the old ``sys.stdout``.
    """
    _flush_all()
    old_stdout = sys.stdout
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    real = os.fdopen(os.dup(saved), "w", encoding="utf-8") if saved is not None else old_stdout
    if saved is not None:
        os.dup2(target_fd, 1)
    sys.stdout = target
    try:
        yield real
    finally:
        _flush_all()
        sys.stdout = old_stdout
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
            try:
                real.close()
            except BrokenPipeError:
                pass


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Discard everything written to stdout (fd 1 included) within the block."""
    with open(os.devnull, "w") as devnull, stdout_redirected(devnull.fileno(), devnull):
        yield


@contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything written to stdout within the block to stderr; yields a stream on the real stdout."""
    try:
        err_fd = sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):
        err_fd = 2
    with stdout_redirected(err_fd, sys.stderr) as real:
        yield real
