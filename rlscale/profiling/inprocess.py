"""Profile a Python model factory in-process: one fresh worker process per (variant, batch, cores) point.

The factory is named ``module:function``; ``function(variant)`` returns ``(model, make_batch)``, where
``make_batch(b)`` builds one input batch of size ``b`` and ``model(batch)`` runs it. The module may name its
variants in ``VARIANTS`` (a tuple of names). What a worker does is in `rlscale.profiling.worker`; here the parent
checks the factory (in a worker of its own, `probe_factory`: the parent never imports the user's module, so one
that exits or kills its process on import is one line, not the end of the profiler) and the cores, starts one
``spawn`` worker per point with the thread limits in its environment, and turns a worker's failure into one
`ProfilingError` line naming the variant and batch. A worker that does not answer within its timeout (a factory,
``make_batch`` or model that hangs) is killed, and one that exits without sending its result is an error, never a
point with nothing in it.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rlscale.errors import ProfilingError
from rlscale.profiling.results import Measurement
from rlscale.profiling.worker import THREAD_ENV, PointTask, describe, run

JOIN_TIMEOUT_S = 10.0
"""How long a worker that has sent its result may take to exit before it is terminated."""
DEFAULT_POINT_TIMEOUT_S = 300.0
"""How long one point's worker may take (import, factory, ``make_batch``, warm-up and timed runs) by default."""


@dataclass(frozen=True)
class Factory:
    """A checked ``module:function`` factory.

    Attributes:
        name: ``module:function`` as given.
        variants: the module's ``VARIANTS`` (None when it has none).
    """

    name: str
    variants: tuple[str, ...] | None


def load_factory(name: str) -> Factory:
    """Import the factory's module here (the current folder first on the path, as ``python -m`` has it) and check
    that it names a callable; the workers import it again themselves.

    Raises:
        ProfilingError: not ``module:function``, the module cannot be imported (or fails on import), it has no
            such function, or its ``VARIANTS`` is not a sequence of names.
    """
    module_name, sep, function_name = name.partition(":")
    if not sep or not module_name or not function_name.isidentifier():
        raise ProfilingError(f"--model {name!r}: expected MODULE:FUNCTION, such as rlscale.examples.resnet:build")
    cwd = _current_folder_on_path()
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:  # a script's sys.exit() or argparse on import: not the end of the caller
        raise ProfilingError(
            f"--model {name}: importing {module_name} exited (SystemExit: {exc.code!r}); a factory's module must not "
            "exit on import (put script code under if __name__ == '__main__')"
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ProfilingError(f"--model {name}: no module named {exc.name!r} (in {cwd} or installed)") from None
        raise ProfilingError(f"--model {name}: importing {module_name} failed: {describe(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - user code: any error on import is the user's to read
        raise ProfilingError(f"--model {name}: importing {module_name} failed: {describe(exc)}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ProfilingError(f"--model {name}: module {module_name} has no function {function_name!r}")
    if not callable(function):
        raise ProfilingError(f"--model {name}: {function_name} is a {type(function).__name__}, not a function")
    variants = getattr(module, "VARIANTS", None)
    if variants is not None:
        if isinstance(variants, str) or not all(isinstance(v, str) and v for v in variants):
            raise ProfilingError(f"--model {name}: {module_name}.VARIANTS must be a tuple of names, got {variants!r}")
        variants = tuple(variants)
    return Factory(name, variants)


def _current_folder_on_path() -> str:
    """Put the current folder first on this process's path (as ``python -m`` has it) unless it is there, and return it.

    The ``spawn`` workers start with this process's path, so they import the factory's module from there too.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    return cwd


def choose_variants(factory: Factory, given: Sequence[str] | None) -> list[str]:
    """``--variants`` if given (each one of the module's ``VARIANTS`` where it has them), else ``VARIANTS``.

    Raises:
        ProfilingError: neither is there, or a given name is not in ``VARIANTS``.
    """
    if given:
        if factory.variants is not None:
            unknown = [v for v in given if v not in factory.variants]
            if unknown:
                raise ProfilingError(
                    f"--variants: {', '.join(unknown)} not in {factory.name.partition(':')[0]}.VARIANTS "
                    f"({', '.join(factory.variants)})"
                )
        return list(dict.fromkeys(given))
    if not factory.variants:
        raise ProfilingError(
            f"--model {factory.name}: its module has no VARIANTS; name the variants with --variants V1,V2"
        )
    return list(factory.variants)


def usable_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity), sorted."""
    return sorted(os.sched_getaffinity(0))


def check_cores(cores: Sequence[int]) -> list[int]:
    """The usable CPUs, after checking that the largest ``cores`` fits in them.

    Raises:
        ProfilingError: more cores asked than this process may use.
    """
    cpus = usable_cpus()
    if max(cores) > len(cpus):
        raise ProfilingError(
            f"--cores {max(cores)}: this machine lets rlscale use {len(cpus)} CPU(s) ({_ranges(cpus)}); profile "
            f"with at most {len(cpus)} cores here, or on a larger machine"
        )
    return cpus


def _ranges(cpus: Sequence[int]) -> str:
    """0,1,2,5 -> '0-2,5'."""
    runs = [[cpu for _, cpu in run] for _, run in itertools.groupby(enumerate(cpus), key=lambda ic: ic[1] - ic[0])]
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


@contextlib.contextmanager
def _child_settings(cores: int | None) -> Iterator[None]:
    """While a worker starts: the thread limits in the environment it inherits (none for None), and SIGINT ignored
    (a disposition the new interpreter keeps), so Ctrl-C reaches only this process, which stops the worker itself."""
    saved_env = {name: os.environ.get(name) for name in THREAD_ENV}
    if cores is not None:
        os.environ.update({name: str(cores) for name in THREAD_ENV})
    in_main = _in_main_thread()
    saved_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGINT, saved_sigint)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class WorkerTimeout(Exception):
    """The worker sent nothing within its timeout (it was killed)."""


class WorkerLost(Exception):
    """The worker ended without sending its result; ``exit`` says how (``exit code 0``, ``killed by SIGKILL``)."""

    def __init__(self, exit: str) -> None:
        super().__init__(exit)
        self.exit = exit


def _in_worker(target, args: tuple, *, name: str, cores: int | None, timeout_s: float):
    """Run ``target(*args, conn)`` in a fresh ``spawn`` worker and return the one reply it sends through ``conn``.

    The worker is stopped whatever happens here: an interrupt while it runs kills it at once, as does the timeout.

    Raises:
        WorkerTimeout: no reply within ``timeout_s``.
        WorkerLost: the worker ended without a reply.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(*args, sender), name=name)
    replied = False
    try:
        with _child_settings(cores):
            process.start()
        sender.close()  # ours: the pipe reports EOF once the worker's end closes
        if not receiver.poll(timeout_s):  # readable at a reply or at EOF
            raise WorkerTimeout
        try:
            reply = receiver.recv()
        except EOFError:
            process.join(JOIN_TIMEOUT_S)
            raise WorkerLost(_exit(process.exitcode)) from None
        replied = True
        return reply
    finally:
        receiver.close()
        if process.pid is not None:
            if replied:  # it is on its way out; an interrupted or failed wait stops it at once
                process.join(JOIN_TIMEOUT_S)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()


def probe_factory(name: str, timeout_s: float = DEFAULT_POINT_TIMEOUT_S) -> Factory:
    """`load_factory` in a worker process of its own: the same checks, while the user's module never runs here.

    Raises:
        ProfilingError: what `load_factory` raises, or the module's import ended its process, or did not finish
            within ``timeout_s`` (the worker is killed).
    """
    module_name, sep, function_name = name.partition(":")
    if not sep or not module_name or not function_name.isidentifier():
        load_factory(name)  # the syntax error, without a worker
    _current_folder_on_path()  # for the probe and every point's worker
    try:
        reply = _in_worker(_probe, (name,), name="rlscale-profile-probe", cores=None, timeout_s=timeout_s)
    except WorkerTimeout:
        raise ProfilingError(
            f"--model {name}: importing {module_name} did not finish within --point-timeout {timeout_s:g} s; the "
            "worker was stopped"
        ) from None
    except WorkerLost as exc:
        raise ProfilingError(
            f"--model {name}: importing {module_name} ended its process ({exc.exit}) before the factory could be "
            "checked; a factory's module must not exit on import"
        ) from None
    if reply[0] == "ok":
        return Factory(name, reply[1])
    raise ProfilingError(reply[1])


def _probe(name: str, conn) -> None:
    """The probe worker's entry: `load_factory` and send ``("ok", variants)`` or ``("error", message)``."""
    try:
        conn.send(("ok", load_factory(name).variants))
    except ProfilingError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - the user's module on import: report, do not hang
        conn.send(("error", f"--model {name}: importing {name.partition(':')[0]} failed: {describe(exc)}"))
    finally:
        conn.close()


def run_point(task: PointTask, timeout_s: float = DEFAULT_POINT_TIMEOUT_S) -> dict:
    """Measure one point in a fresh ``spawn`` worker; its result (see `rlscale.profiling.worker.measure`).

    Raises:
        ProfilingError: the worker reported a failure, died without a result, or sent nothing within
            ``timeout_s`` (it is killed).
    """
    try:
        reply = _in_worker(
            run,
            (task,),
            name=f"rlscale-profile-{task.variant}-b{task.batch}",
            cores=task.cores,
            timeout_s=timeout_s,
        )
    except WorkerTimeout:
        raise ProfilingError(
            _point(task) + f"no result within --point-timeout {timeout_s:g} s (the factory, make_batch, "
            f"{task.warmup} warm-up and {task.repeats} timed runs); the worker was stopped"
        ) from None
    except WorkerLost as exc:
        raise ProfilingError(_point(task) + f"the worker died without a result ({exc.exit})") from None
    if reply[0] == "ok":
        return reply[1]
    _, step, message = reply
    if step == "factory":
        raise ProfilingError(f"--model {task.factory}: the factory failed for variant {task.variant!r}: {message}")
    if step == "batch":
        raise ProfilingError(f"variant {task.variant!r} rejects batch {task.batch}: {message}")
    if step == "make_batch":
        raise ProfilingError(f"--model {task.factory}: variant {task.variant!r}: {message}")
    raise ProfilingError(_point(task) + message)


def _point(task: PointTask) -> str:
    return f"variant {task.variant!r}, batch {task.batch}, {task.cores} core(s): "


def _exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def profile_in_process(
    factory: Factory,
    variants: Sequence[str],
    batches: Sequence[int],
    cores: Sequence[int],
    *,
    warmup: int = 3,
    repeats: int = 20,
    point_timeout_s: float = DEFAULT_POINT_TIMEOUT_S,
) -> Iterator[Measurement]:
    """Measure every (variant, cores, batch) point, in that order, each in its own worker; yields as they finish.

    Each worker is pinned to the first ``cores`` of this process's CPUs.

    Args:
        factory: from `load_factory`.
        variants: the variant names.
        batches: batch sizes (>= 1).
        cores: core counts (>= 1, at most the CPUs this process may use).
        warmup: untimed runs per point.
        repeats: timed runs per point.
        point_timeout_s: how long one point's worker may take; one that takes longer is killed.

    Raises:
        ProfilingError: too many cores, or a point failed or timed out (the message names the variant and batch).
    """
    cpus = check_cores(cores)
    for variant in variants:
        for c in cores:
            for b in batches:
                task = PointTask(factory.name, variant, int(b), int(c), tuple(cpus[:c]), int(warmup), int(repeats))
                result = run_point(task, point_timeout_s)
                yield Measurement(variant, int(b), int(c), tuple(result["samples_s"]), result["worker"])
