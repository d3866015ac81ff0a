"""SIGINT and SIGTERM for the long commands (``compare``, ``train``): stop, keep what finished, say how to go on.

Two ways to react, each a context manager that installs handlers for both signals in the main thread and puts the
previous ones back on exit:

- `raise_on_signals`: a signal raises `Interrupted` (a `KeyboardInterrupt`) at once; for work whose finished
  parts are already on disk, where abandoning the part in flight loses nothing that was finished (``compare``).
- `stop_on_signals`: the first signal sets a `StopRequest` that the work polls at its next safe point (``train``:
  the next environment step, so the model is saved whole); a second signal raises `Interrupted` at once.

The exit status of an interrupted command is ``128 + signal``: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The shell's exit status for a command ended by ``signum`` (128 + the number)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def signum_of(exc: BaseException) -> int:
    """The signal behind an interrupt: `Interrupted`'s own, SIGINT for a plain `KeyboardInterrupt`."""
    return getattr(exc, "signum", signal.SIGINT)


class StopRequest:
    """A request to stop at the next safe point, and the signal that asked (None until set)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def set(self, signum: int = signal.SIGINT) -> None:
        if self.signum is None:
            self.signum = int(signum)
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` (outside the main thread nothing is installed)."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest, signals: tuple[int, ...] = SIGNALS) -> Iterator[StopRequest]:
    """Within: the first of ``signals`` sets ``stop``; a second one raises `Interrupted`.

    Args:
        stop: the request the work polls.
        signals: the signals handled (default SIGINT and SIGTERM; a sweep's worker, which leaves SIGINT to the
            sweep, takes SIGTERM only).
    """
    if not _in_main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise Interrupted(signum)
        stop.set(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
