"""Profile a Python model factory in-process: one fresh worker process per (variant, batch, cores) point.

The factory is named ``module:function``; ``function(variant)`` returns ``(model, make_batch)``, where
``make_batch(b)`` builds one input batch of size ``b`` and ``model(batch)`` runs it. The module may name its
variants in ``VARIANTS`` (a tuple of names). What a worker does is in `rlscale.profiling.worker`; here the parent
checks the factory and the cores, starts one ``spawn`` worker per point with the thread limits in its environment,
and turns a worker's failure into one `ProfilingError` line naming the variant and batch.
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
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
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
def _child_settings(cores: int) -> Iterator[None]:
    """While a worker starts: the thread limits in the environment it inherits, and SIGINT ignored (a disposition
    the new interpreter keeps), so Ctrl-C reaches only this process, which stops the worker itself."""
    saved_env = {name: os.environ.get(name) for name in THREAD_ENV}
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


def run_point(task: PointTask) -> dict:
    """Measure one point in a fresh ``spawn`` worker; its result (see `rlscale.profiling.worker.measure`).

    The worker is stopped whatever happens here: an interrupt while it runs kills it at once.

    Raises:
        ProfilingError: the worker reported a failure or died without a result.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=run, args=(task, sender), name=f"rlscale-profile-{task.variant}-b{task.batch}")
    replied = False
    try:
        with _child_settings(task.cores):
            process.start()
        sender.close()  # ours: the pipe reports EOF once the worker's end closes
        try:
            reply = receiver.recv()
        except EOFError:
            process.join(JOIN_TIMEOUT_S)
            raise ProfilingError(
                _point(task) + f"the worker died without a result ({_exit(process.exitcode)})"
            ) from None
        replied = True
        if reply[0] == "ok":
            return reply[1]
        _, step, message = reply
        if step == "factory":
            raise ProfilingError(f"--model {task.factory}: the factory failed for variant {task.variant!r}: {message}")
        if step == "batch":
            raise ProfilingError(f"variant {task.variant!r} rejects batch {task.batch}: {message}")
        raise ProfilingError(_point(task) + message)
    finally:
        receiver.close()
        if process.pid is not None:
            if replied:  # it is on its way out; an interrupted or failed wait stops it at once
                process.join(JOIN_TIMEOUT_S)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()


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

    Raises:
        ProfilingError: too many cores, or a point failed (the message names the variant and batch).
    """
    cpus = check_cores(cores)
    for variant in variants:
        for c in cores:
            for b in batches:
                task = PointTask(factory.name, variant, int(b), int(c), tuple(cpus[:c]), int(warmup), int(repeats))
                result = run_point(task)
                yield Measurement(variant, int(b), int(c), tuple(result["samples_s"]), result["worker"])
