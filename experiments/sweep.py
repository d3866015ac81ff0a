"""Sweeps: a set of independent runs, each a picklable spec handed to one module-level function.

Everything that takes long in rlscale is such a set (``compare``: traces x policies x seeds). An executor runs
``fn(item)`` for every item and yields ``(index, result)`` pairs **as the runs finish** (any order); the caller
keys the results by index, so what it writes in the sweep's order is the same whatever the executor.

- ``serial``: one after another in this process (what ``compare`` always did);
- ``process``: a `concurrent.futures.ProcessPoolExecutor` over the "spawn" context (a fresh interpreter per
  worker: no state forked from the caller, the same on Linux and macOS), ``workers`` processes (default: every
  core). ``fn`` and the items must be picklable: a module-level function and frozen dataclasses of plain values.

Interrupts: when the caller stops consuming (a `KeyboardInterrupt` from SIGINT, `rlscale.interrupts.Interrupted`
from SIGTERM, or any error), closing the iterator cancels the runs not started and ends the workers; the runs
already yielded are the caller's to keep. The workers ignore SIGINT (a Ctrl-C reaches the whole process group):
the caller alone decides, and ends them.

Extension point: a new executor (a Ray one is planned, DESIGN.md section 9) is a class with the `Executor`
interface registered in `EXECUTORS`; the CLI offers exactly the names registered there.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol, TypeVar

from rlscale.errors import RlscaleError

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 256


class Executor(Protocol):
    """Runs ``fn`` over ``items``; yields ``(index into items, fn(item))`` as each run finishes.

    Closing the iterator early (``close()``, or leaving a ``with contextlib.closing(...)`` block on an exception)
    must stop the runs still pending and release every worker before it returns.
    """

    name: str
    workers: int

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]: ...


def default_workers() -> int:
    """Every core of this machine."""
    return os.cpu_count() or 1


def check_workers(workers: int | None) -> int:
    """``workers`` (None: `default_workers`) within 1..`MAX_WORKERS`."""
    if workers is None:
        return default_workers()
    if not 1 <= workers <= MAX_WORKERS:
        raise RlscaleError(f"--workers must be within 1..{MAX_WORKERS}, got {workers}")
    return int(workers)


class SerialExecutor:
    """One run after another, in this process, in the items' order."""

    name = "serial"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = 1

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        for i, item in enumerate(items):
            yield i, fn(item)


def _ignore_sigint() -> None:
    """Worker initializer: a terminal's Ctrl-C goes to the whole process group; the caller handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor:
    """A pool of ``workers`` spawned processes (no more than there are items)."""

    name = "process"
    context = "spawn"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers)

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=multiprocessing.get_context(self.context),
            initializer=_ignore_sigint,
        )
        index: dict[Future[R], int] = {}
        finished = False
        try:
            index = {pool.submit(fn, item): i for i, item in enumerate(items)}
            pending = set(index)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=index.__getitem__):
                    yield index[future], future.result()
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                _stop(pool, index)


def _stop(pool: ProcessPoolExecutor, futures: dict[Future, int]) -> None:
    """Cancel the runs not started, end the workers (runs in flight are lost) and wait until they are gone."""
    for future in futures:
        future.cancel()
    # ProcessPoolExecutor has no public way to stop a run in flight before Python 3.14 (terminate_workers)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)


EXECUTORS: dict[str, type[SerialExecutor] | type[ProcessExecutor]] = {
    "serial": SerialExecutor,
    "process": ProcessExecutor,
    # "ray": the next step of issue 13 registers a Ray executor here (same interface); not before it works
}
DEFAULT_EXECUTOR = "process"


def make_executor(name: str, workers: int | None = None) -> Executor:
    """The executor called ``name`` (`EXECUTORS`) with ``workers`` (None: every core; ignored by ``serial``).

    Raises:
        RlscaleError: an unknown name, or ``workers`` outside 1..`MAX_WORKERS`.
    """
    if name not in EXECUTORS:
        raise RlscaleError(f"unknown executor {name!r}; one of {', '.join(EXECUTORS)}")
    check_workers(workers)
    return EXECUTORS[name](workers)
