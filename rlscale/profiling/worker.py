"""One in-process profile point, in the worker process `rlscale.profiling.inprocess` starts for it.

The worker is a fresh interpreter (multiprocessing's ``spawn``), so no setting leaks from one point to the next.
Its environment already holds the thread limits (`THREAD_ENV`, set by the parent for the child before it
starts, so every framework reads them on import); the worker then

1. pins every thread it has to the point's CPUs (`pin`), so the model runs on ``cores`` CPUs,
2. imports the factory's module; if torch is imported by now, sets its intra-op and inter-op threads to ``cores``,
3. calls the factory with the variant (and sets torch's threads again if the factory imported it),
4. builds one batch with ``make_batch(b)`` (outside the timing: a server times a deserialised batch too) and checks
   it is what a server hands the model (`check_batch`): an array or tensor (or a list) of ``b`` items, so a wrong
   batch is refused before anything is measured,
5. runs ``model(batch)`` ``warmup`` times, then times ``repeats`` runs (`rlscale.profiling.timing.time_calls`).

When torch is imported in the worker the runs are inside ``torch.inference_mode()``, as a server runs them; the
profiler itself never imports a framework, so a numpy model, an ONNX Runtime session or a torch module are all
just callables. This module imports only the standard library.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass

from rlscale.profiling.timing import time_calls

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""The environment variables that cap the thread pools of OpenMP, MKL, OpenBLAS, Accelerate and numexpr."""


@dataclass(frozen=True)
class PointTask:
    """What one worker measures (plain values: it is pickled into the worker).

    Attributes:
        factory: ``module:function``.
        variant: the variant name handed to the factory.
        batch: the batch size.
        cores: the cores the point is measured with.
        cpus: the CPU ids the worker is pinned to (``cores`` of them).
        warmup: untimed runs first.
        repeats: timed runs.
    """

    factory: str
    variant: str
    batch: int
    cores: int
    cpus: tuple[int, ...]
    warmup: int
    repeats: int


class PointFailure(Exception):
    """A step of the point failed; ``step`` says which (``factory``, ``make_batch``, ``batch``, ``pin``)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def describe(exc: BaseException) -> str:
    """``TypeName: message`` of an exception, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def pin(cpus: tuple[int, ...]) -> None:
    """Pin every thread of this process to ``cpus`` (threads started later inherit it).

    ``os.sched_setaffinity(0, ...)`` moves the calling thread only; a library imported while the interpreter
    started may already run a thread pool, so each thread in ``/proc/self/task`` is moved.
    """
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)
    os.sched_setaffinity(0, cpus)


def limit_torch(cores: int) -> int | None:
    """Set torch's threads to ``cores`` if torch is imported here; its intra-op threads then (None: no torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return None
    torch.set_num_threads(cores)
    # allowed once, before any inter-op work; a factory that already ran some keeps torch's default
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(cores)
    return int(torch.get_num_threads())


def check_batch(batch: object, size: int) -> str | None:
    """Why ``batch`` (``make_batch(size)``'s) is not a batch of ``size`` items; None when it is.

    A batch is what a stage server hands the model (`rlscale.serve.model`): an array or tensor whose first dimension
    is the batch (anything with a ``shape``: numpy, torch...), or a list or tuple of ``size`` items.
    """
    what = type(batch).__name__
    shape = getattr(batch, "shape", None)
    if shape is not None:
        try:
            dims = [int(d) for d in shape]
        except (TypeError, ValueError):
            dims = None
        if dims is not None and dims and dims[0] == size:
            return None
        shown = dims if dims is not None else shape
        return (
            f"make_batch({size}) built {what} of shape {shown}; expected {size} item(s) along the first dimension "
            f"(shape [{size}, ...])"
        )
    if isinstance(batch, list | tuple):
        if len(batch) == size:
            return None
        return f"make_batch({size}) built a {what} of {len(batch)} item(s); expected {size}"
    return (
        f"make_batch({size}) built {what}; expected an array or tensor of {size} item(s) (shape [{size}, ...]), as "
        "a server hands the model"
    )


def measure(task: PointTask) -> dict:
    """Steps 1-5 of the module docstring, in this process.

    Returns:
        ``samples_s`` (the timed runs) and ``worker``: the CPUs the worker ran on, its thread environment and
        torch's thread count (None without torch).

    Raises:
        PointFailure: the pinning, the factory, the batch or the model failed (the message says how).
    """
    try:
        pin(task.cpus)
    except OSError as exc:
        raise PointFailure("pin", f"cannot pin the worker to CPUs {list(task.cpus)}: {describe(exc)}") from None
    module_name, _, function_name = task.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # noqa: BLE001 - user code: any error is the user's to read
        raise PointFailure("factory", f"importing {task.factory} failed in the worker: {describe(exc)}") from None
    limit_torch(task.cores)
    try:
        built = factory(task.variant)
    except Exception as exc:  # noqa: BLE001
        raise PointFailure("factory", describe(exc)) from None
    if not (isinstance(built, tuple) and len(built) == 2 and all(callable(x) for x in built)):
        raise PointFailure(
            "factory", f"returned {type(built).__name__}, expected a tuple (model, make_batch) of two callables"
        )
    model, make_batch = built
    torch_threads = limit_torch(task.cores)
    try:
        batch = make_batch(task.batch)
    except Exception as exc:  # noqa: BLE001
        raise PointFailure("batch", f"make_batch({task.batch}) failed: {describe(exc)}") from None
    problem = check_batch(batch, task.batch)
    if problem is not None:
        raise PointFailure("make_batch", problem)
    torch = sys.modules.get("torch")
    mode = (
        torch.inference_mode() if torch is not None and hasattr(torch, "inference_mode") else contextlib.nullcontext()
    )
    try:
        with mode:
            samples = time_calls(lambda: model(batch), task.warmup, task.repeats)
    except Exception as exc:  # noqa: BLE001
        raise PointFailure("batch", describe(exc)) from None
    return {
        "samples_s": samples,
        "worker": {
            "cpus": sorted(os.sched_getaffinity(0)),
            "env": {name: os.environ.get(name) for name in THREAD_ENV},
            "torch_threads": torch_threads,
        },
    }


def run(task: PointTask, conn) -> None:
    """The worker's entry: measure and send ``("ok", result)`` or ``("error", step, message)`` through ``conn``."""
    try:
        conn.send(("ok", measure(task)))
    except PointFailure as exc:
        conn.send(("error", exc.step, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - a SystemExit or worse from user code: report, do not hang
        conn.send(("error", "worker", describe(exc)))
    finally:
        conn.close()
