"""Sweeps: a set of independent runs, each a picklable spec handed to one module-level function.

Everything that takes long in rlscale is such a set (``compare``: traces x policies x seeds). An executor runs
``fn(item)`` for every item and yields ``(index, result)`` pairs **as the runs finish** (any order); the caller
keys the results by index, so what it writes in the sweep's order is the same whatever the executor.

- ``serial``: one after another in this process (what ``compare`` always did);
- ``process``: a `concurrent.futures.ProcessPoolExecutor` over the "spawn" context (a fresh interpreter per
  worker: no state forked from the caller, the same on Linux and macOS), ``workers`` processes (default: every
  core). ``fn`` and the items must be picklable: a module-level function and frozen dataclasses of plain values;
- ``ray``: one Ray task per item (``ray.remote`` around the same ``fn``), on a local Ray started for the sweep
  (``num_cpus`` = ``workers``, default every core; shut down at the end) or on an existing cluster reached with
  ``address`` (``"auto"``, ``HOST:PORT`` or ``ray://HOST:PORT``; left running). ``ray`` is an optional extra
  (``pip install 'rlscale[ray]'``), imported only here, when a Ray sweep starts. On a cluster, every node needs
  rlscale installed, and files a run writes itself (``compare``'s timelines) land on the node that ran it.

Interrupts: when the caller stops consuming (a `KeyboardInterrupt` from SIGINT, `rlscale.interrupts.Interrupted`
from SIGTERM, or any error), closing the iterator cancels the runs not started and ends the workers; the runs
already yielded are the caller's to keep. The workers ignore SIGINT (a Ctrl-C reaches the whole process group):
the caller alone decides, and ends them.

Extension point: a new executor is a class with the `Executor` interface registered in `EXECUTORS`; the CLI offers
exactly the names registered there.

Commands that run a sweep take the same three flags (`add_executor_flags`: ``--executor``, ``--workers``,
``--ray-address``): ``rlscale compare``, ``demo``, ``tune`` and ``train --seeds``, and the scripts
(``python -m rlscale.evaluate.tune_headroom``, those under ``experiments/``), which parse with `OneLineParser` (a
usage error is one line). `run_sweep` runs a whole sweep and returns the results in the items' order, with a
progress bar on stderr (`progress_bar`) counting the runs as they finish, on whichever worker.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import NoReturn, Protocol, TypeVar

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

    def prepare(self) -> None:
        """Reach whatever the sweep runs on (a Ray cluster) before the caller touches its output, so a bad address
        fails before anything on disk changes."""
        ...

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

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers = 1

    def prepare(self) -> None:
        """Nothing to reach: the runs happen on this machine."""

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

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers = check_workers(workers)

    def prepare(self) -> None:
        """Nothing to reach: the runs happen on this machine."""

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


RAY_MISSING = "--executor ray needs the ray extra: pip install 'rlscale[ray]'"
RAY_CONNECT_ENV = {
    "RAY_gcs_server_port_wait_time_s": "1",  # tries (Ray: 20)
    "RAY_gcs_rpc_server_connect_timeout_s": "2",  # each try's connect (Ray: 5 s)
    "RAY_py_gcs_connect_timeout_s": "3",  # and its wait for the cluster id (Ray: 30 s)
}
"""Ray's settings that bound connecting to ``--ray-address``: an address where no Ray answers fails in about 8 s
instead of about 12 minutes. A value already in the environment is kept."""
RAY_POLL_S = 0.5
"""The longest a Ray sweep waits for a result without looking at signals (an interrupt lands within it)."""


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at 2 meanwhile: Ray's messages, and the processes it starts, stay off stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _output_held() -> Iterator[None]:
    """File descriptors 1 and 2 go to a file meanwhile; copied to stderr after, unless the block raised: connecting
    to a Ray that is not there is one line of ours (an `RlscaleError`), not Ray's retries (nothing is started)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    ok = False
    with tempfile.TemporaryFile() as held:
        try:
            os.dup2(held.fileno(), 1)
            os.dup2(held.fileno(), 2)
            yield
            ok = True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if ok:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                sys.stderr.flush()


class RayExecutor:
    """One Ray task per item, on a local Ray started for the sweep (``workers`` CPUs) or the cluster at ``address``."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise RlscaleError(RAY_MISSING)
        self.workers = check_workers(workers)
        self.address = address or None

    def _connect(self, ray) -> bool:
        """Start or join Ray; True when this sweep started it (and ends it)."""
        if ray.is_initialized():  # a caller's own Ray session (tests, notebooks): use it, leave it running
            return False
        if self.address is None:
            with _stdout_to_stderr():  # the processes started here keep stderr, never stdout
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            return True
        try:
            with _output_held():
                ray.init(address=self.address, log_to_driver=False)
        except Exception as exc:  # ConnectionError, or Ray's own errors for an address it cannot use
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RlscaleError(f"--ray-address {self.address}: cannot connect to Ray: {first}") from None
        return False

    def _ray(self):
        if self.address is not None:  # before ray is imported: it may read its settings then
            for key, value in RAY_CONNECT_ENV.items():
                os.environ.setdefault(key, value)
        try:
            import ray
        except ImportError:
            raise RlscaleError(RAY_MISSING) from None
        return ray

    def prepare(self) -> None:
        """Join the cluster at ``address`` now (a local Ray starts with the first runs instead)."""
        if self.address is not None:
            self._connect(self._ray())

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        ray = self._ray()
        started = self._connect(ray)
        refs: dict = {}
        try:
            task = ray.remote(num_cpus=1, max_retries=0)(fn)
            refs = {task.remote(item): i for i, item in enumerate(items)}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=RAY_POLL_S, fetch_local=True)
                for ref in sorted(done, key=refs.__getitem__):
                    yield refs.pop(ref), ray.get(ref)
        finally:
            for ref in refs:  # left on an early close: not started, or in flight
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if started:
                with _stdout_to_stderr():
                    ray.shutdown()


EXECUTORS: dict[str, type[SerialExecutor] | type[ProcessExecutor] | type[RayExecutor]] = {
    "serial": SerialExecutor,
    "process": ProcessExecutor,
    "ray": RayExecutor,
}
DEFAULT_EXECUTOR = "process"


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor called ``name`` (`EXECUTORS`) with ``workers`` (None: every core; ignored by ``serial``).

    ``address``: the Ray cluster to join (``ray`` only; None: a local Ray started for the sweep).

    Raises:
        RlscaleError: an unknown name, ``workers`` outside 1..`MAX_WORKERS`, an address for another executor than
            ``ray``, or ``ray`` without the ray extra installed.
    """
    if name not in EXECUTORS:
        raise RlscaleError(f"unknown executor {name!r}; one of {', '.join(EXECUTORS)}")
    if address and name != "ray":
        raise RlscaleError(f"--ray-address needs --executor ray, not {name}")
    check_workers(workers)
    return EXECUTORS[name](workers, address)


def run_sweep(
    executor: Executor,
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    progress: bool = False,
    what: str = "runs",
    describe: Callable[[T], str] | None = None,
) -> list[R]:
    """``[fn(item) for item in items]`` on ``executor``: the results in the items' order, whatever order the runs
    finish in. With ``progress``, a bar on stderr (`progress_bar`) counts the finished runs, ``describe(item)``
    naming the one that just finished.

    An error in a run, or an interrupt, stops the sweep (the runs not started are cancelled, the workers ended) and
    propagates; nothing is returned then.
    """
    results: dict[int, R] = {}
    with progress_bar(what, len(items), executor, enabled=progress) as advance:
        with contextlib.closing(executor.imap_unordered(fn, items)) as runs:
            for i, result in runs:
                results[i] = result
                advance(describe(items[i]) if describe is not None else "")
    return [results[i] for i in range(len(items))]


@contextlib.contextmanager
def progress_bar(
    what: str, total: int, executor: Executor, *, enabled: bool = True, completed: int = 0
) -> Iterator[Callable[[str], None]]:
    """A transient bar on stderr over ``total`` runs (``completed`` of them finished before: a resumed sweep); yields
    ``advance(detail)``, called once per finished run, in this process (so the count covers every worker).
    Disabled: ``advance`` does nothing and nothing is drawn."""
    label = f"{what}: {executor.name}" + (f", {executor.workers} workers" if executor.workers > 1 else "")
    with counting_bar(label, total, enabled=enabled, completed=completed) as advance:
        yield advance


@contextlib.contextmanager
def counting_bar(
    label: str, total: int, *, enabled: bool = True, completed: int = 0
) -> Iterator[Callable[[str], None]]:
    """A transient bar on stderr, ``label`` and a count over ``total`` items (``completed`` done before); yields
    ``advance(detail)``, called once per finished item (the detail follows the label). Disabled: ``advance`` does
    nothing and nothing is drawn."""
    if not enabled:
        yield lambda detail="": None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total, completed=completed)

        def advance(detail: str = "") -> None:
            bar.update(task, advance=1, description=f"{label}: {detail}" if detail else label)

        yield advance


def workers_arg(text: str) -> int:
    """argparse type of ``--workers``: a whole number within 1..`MAX_WORKERS`."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be within 1..{MAX_WORKERS}, got {n}")
    return n


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """``--executor`` (`EXECUTORS`, default `DEFAULT_EXECUTOR`), ``--workers`` and ``--ray-address``: where a
    sweep's runs go (``rlscale compare`` and ``demo``, and the sweeps of the scripts under ``experiments/``)."""
    parser.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        default=DEFAULT_EXECUTOR,
        help=f"where the runs go: serial (one after another here), process (a pool of worker processes) or ray "
        f"(Ray tasks: needs the ray extra); the results are the same (default {DEFAULT_EXECUTOR})",
    )
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default=None,
        metavar="N",
        help=f"worker processes for --executor process, CPUs of the local Ray for --executor ray, 1..{MAX_WORKERS} "
        f"(default: all cores, {default_workers()} here)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="auto|ADDRESS",
        help="--executor ray: run on this Ray cluster (auto: the one this machine belongs to; HOST:6379; "
        "ray://HOST:10001) and leave it running (default: start a local Ray for the sweep, stop it at the end)",
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse for the scripts (``python -m rlscale.evaluate.tune_headroom``, those under ``experiments/``): a usage
    error is one line on stderr, ``error: ...`` (no usage block), and exit status 2, like the scripts' other errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
