"""``rlscale compare``: every pipeline x trace x policy x seed on the simulator, one table and the plots.

Each run goes through the same code path as ``rlscale simulate``: the policy factory the caller names (the
CLI's registry, ``rlscale.policies.registry:make_policy``) and `rlscale.sim.runner.run_episode`. A run is a picklable
`RunSpec` handed to the module-level `run`, on an executor of `rlscale.evaluate.sweep` (``serial`` in this process,
``process`` on a pool of worker processes that each import the factory by name); the files are the same
whichever (but the wall-clock ``decision_ms_*``). Writes to ``--out``:

- ``records.jsonl``: one line per finished run, appended (written, flushed, fsynced) the moment it finishes, so
  an interrupt or a crash loses only the run in flight; ``settings.json``: what the runs depend on (pipeline and
  spec digest, traces and their digests, policies, seeds, arrivals, planner flags), to resume only like with like;
- ``results.csv``: one row per run (every field of the summary record but the per-stage list, which is flattened
  into ``<stage>.variant_mode``, ``<stage>.batch_mode``, ``<stage>.cores_mean`` and ``<stage>.replicas_mean``);
- ``results.md``: one row per pipeline x trace x policy, means over seeds (with the spread of the score), then each
  stage's configuration (most-used variant and batch, mean cores per replica and replicas) and notes on the runs
  that violated the SLA (over `SLA_THRESHOLD`) or ended with requests still queued;
- ``accuracy_vs_cost.png`` (one panel per trace, one point per policy; runs over `SLA_THRESHOLD` hollow and red),
  ``violations.png`` (violation rate per policy and trace), ``timeline-{trace}-{policy}.png`` for the first seed
  and ``timeline-{trace}-{policy}-seed{seed}.csv`` for every run (the rows of `rlscale.timeline`), ``{trace}`` being
  the trace's name (a CSV's file name without ``.csv``; ``-2``, ``-3``... added when two traces share one; at a
  ``load_scale`` other than 1, ``-x<scale>`` added, as the records name the trace ``<trace>@x<scale>``).

Every file but the records is written whole or not at all (a temporary file, then ``os.replace``). A folder that
already holds a comparison's results is never mixed with a new one: ``resume`` continues it (skipping the
(trace, policy, seed) runs it recorded; refused when the settings differ), ``overwrite`` removes its results
(timelines included) and starts over, and with neither the comparison is refused. On an interrupt
(`KeyboardInterrupt`, or `rlscale.interrupts.Interrupted` for SIGTERM) the summary files are written from the
runs that finished and `ComparisonInterrupted` says how many.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib
import io
import json
import logging
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.control import Controller
from rlscale.errors import RlscaleError
from rlscale.evaluate.plots import plot_timeline
from rlscale.evaluate.sweep import make_executor, progress_bar
from rlscale.inputs import (
    MAX_JSON_DEPTH,
    MAX_RECORDS_BYTES,
    MAX_SETTINGS_BYTES,
    nesting_depth,
    read_json_limited,
    read_text_limited,
    special_file_kind,
)
from rlscale.interrupts import Interrupted, signum_of
from rlscale.paths import (
    OutputError,
    append_line,
    atomic_path,
    atomic_write_text,
    check_name,
    inside,
    is_safe_name,
    name_rule,
    output_folder,
)
from rlscale.sim.runner import RunResult, run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.timeline import to_csv as timeline_csv
from rlscale.workload import EVAL_TRACES, Trace, load_trace, scale_trace, scaled_name

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
SETTINGS = "settings.json"
SUMMARY = ("results.csv", "results.md", "accuracy_vs_cost.png", "violations.png")
TIMELINES = ("timeline-*.png", "timeline-*.csv")
SLA_THRESHOLD = 0.01
"""A run whose violation rate (late + dropped) exceeds this does not meet the SLA: marked in the plots and notes."""
STAGE_FIELDS = ("variant_mode", "batch_mode", "cores_mean", "replicas_mean")
"""The per-stage record fields flattened into a compare record as ``<stage>.<field>``."""
TEMPORARY = ".*.tmp-*"  # what `rlscale.paths.atomic_path` leaves when a process is killed mid-write

RunKey = tuple[str, str, int]

PolicyFactory = Callable[[str, PipelineSpec, Trace | None, Any], Controller]
"""``make_policy(name, spec, trace, options)``: the policy called ``name`` behind its guard (the CLI's registry,
`rlscale.policies.registry.make_policy`); ``options`` is the caller's, handed on unchanged."""


def factory_name(factory: PolicyFactory | str) -> str:
    """``module:function`` of a module-level policy factory (what a worker process imports); a string is checked.

    Raises:
        RlscaleError: ``factory`` is not a module-level function (a closure or a lambda cannot reach a worker).
    """
    if isinstance(factory, str):
        resolve_factory(factory)
        return factory
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    name = f"{module}:{qualname}"
    if not module or "<" in qualname or "." in qualname:
        raise RlscaleError(f"the policy factory {factory!r} is not a module-level function; a worker cannot import it")
    if resolve_factory(name) is not factory:
        raise RlscaleError(f"the policy factory {factory!r} is not what {name} imports")
    return name


def resolve_factory(name: str) -> PolicyFactory:
    """The function ``module:function`` names (imported here: in a worker process, the worker imports it).

    Raises:
        RlscaleError: the name does not lead to a callable.
    """
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        factory = None
    if not callable(factory):
        raise RlscaleError(f"policy factory {name!r}: not a 'module:function' that can be imported")
    return factory


@dataclass(frozen=True)
class RunSpec:
    """One run of a comparison, everything `run` needs, picklable (plain values; ``options`` a dataclass).

    Attributes:
        pipeline: bundled name or spec path, as the caller hands it (with ``--set``, the CLI hands the path of the
            overridden spec it wrote into ``--out``, `rlscale.cli.args.spec_file`).
        trace: bundled trace name or CSV path.
        policy: policy name.
        seed: the run's seed.
        arrivals: ``even`` or ``poisson``.
        options: what the factory takes besides the name (the CLI's `PolicyOptions`), or None.
        factory: ``module:function`` of the policy factory (`PolicyFactory`), imported by whoever runs the spec.
        timeline: where to draw the run's timeline (a PNG path), or None for none.
        timeline_csv: where to write the run's timeline rows (a CSV path, `rlscale.timeline`), or None for none.
        load_scale: every per-second count of the trace multiplied by this (`rlscale.workload.scale_trace`).
    """

    pipeline: str
    trace: str
    policy: str
    seed: int
    arrivals: str
    options: Any = None
    factory: str = "rlscale.policies.registry:make_policy"
    timeline: str | None = None
    timeline_csv: str | None = None
    load_scale: float = 1.0

    @property
    def key(self) -> RunKey:
        """(trace name at its load scale, ``bursty@x2``; policy; seed): the run's identity in records and resumes."""
        return (scaled_name(self.trace, self.load_scale), self.policy, self.seed)


_loaded: dict[tuple[str, str], Any] = {}
"""Specs and traces loaded for the sweep in progress: filled by `run_comparison` for its own runs and emptied
after it (a spec file may change between two comparisons); a worker process fills it as it goes (it ends with
its sweep). Loading once per sweep, not per run, also keeps the garbage per run low."""


def _load(kind: str, name: str) -> Any:
    if (kind, name) not in _loaded:
        _loaded[kind, name] = load_spec(name) if kind == "spec" else load_trace(name)
    return _loaded[kind, name]


def _execute(run_spec: RunSpec) -> tuple[dict[str, Any], RunResult]:
    spec = _load("spec", run_spec.pipeline)
    trace = scale_trace(_load("trace", run_spec.trace), run_spec.load_scale)
    policy = resolve_factory(run_spec.factory)(run_spec.policy, spec, trace, run_spec.options)
    result = run_episode(spec, trace, policy, seed=run_spec.seed, arrivals=run_spec.arrivals)
    record = {k: v for k, v in result.record.items() if k != "stages"}
    for stage in result.record.get("stages", []):
        record.update({f"{stage['stage']}.{k}": stage[k] for k in STAGE_FIELDS if k in stage})
    record["trace"] = run_spec.key[0]
    record["policy"] = run_spec.policy
    record["arrivals"] = run_spec.arrivals
    record = json.loads(json.dumps(record, default=_plain))  # plain values: a resumed record and a fresh one are alike
    if run_spec.timeline is not None:
        with atomic_path(Path(run_spec.timeline)) as tmp:
            plot_timeline(spec, result, tmp)
    if run_spec.timeline_csv is not None:
        atomic_write_text(Path(run_spec.timeline_csv), timeline_csv(spec, result.timeline_rows(spec)))
    return record, result


def run(run_spec: RunSpec) -> dict[str, Any]:
    """One run: its summary record (JSON values; the per-stage list left out), its timeline drawn if asked.

    Pure but for the timeline file: the same spec gives the same record but the wall-clock fields
    (``decision_ms_*``). Module-level, so a worker process can import and call it (`rlscale.evaluate.sweep`).
    """
    return _execute(run_spec)[0]


def _run_keeping_result(run_spec: RunSpec) -> tuple[dict[str, Any], RunResult]:
    return _execute(run_spec)


class ComparisonInterrupted(Interrupted):
    """A comparison stopped by SIGINT/SIGTERM after its finished runs were saved and summarised.

    Attributes:
        comparison: the runs that finished (``records``) and the files written.
        finished: runs finished (this time and recorded before, when resuming).
        total: runs the comparison has.
        out: the output folder (None when nothing is written).
    """

    def __init__(self, signum: int, comparison: Comparison, total: int, out: Path | None) -> None:
        super().__init__(signum)
        self.comparison = comparison
        self.finished = len(comparison.records)
        self.total = total
        self.out = out


@dataclass
class Comparison:
    """All runs of one comparison and where its files went.

    Attributes:
        spec: the pipeline.
        records: one summary record per finished run, in the comparison's order (trace, policy, seed).
        results: every RunResult of this process's runs, with ``keep_results``.
        files: the files written.
        labels: each trace's name in file names and plots (unique within the comparison).
        traces: the comparison's traces as its records name them: as given, or at a load scale other than 1
            ``NAME@xSCALE`` (`rlscale.workload.scaled_name`); the trace argument of `markdown_table` and the plots.
    """

    spec: PipelineSpec
    records: list[dict[str, Any]] = field(default_factory=list)
    results: dict[tuple[str, str, int], RunResult] = field(default_factory=dict, repr=False)
    files: list[Path] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    traces: list[str] = field(default_factory=list)

    def mean(self, trace: str, policy: str, key: str) -> float:
        vals = [r[key] for r in self.records if r["trace"] == trace and r["policy"] == policy]
        return float(np.mean(vals)) if vals else math.nan

    def std(self, trace: str, policy: str, key: str) -> float:
        vals = [r[key] for r in self.records if r["trace"] == trace and r["policy"] == policy]
        return float(np.std(vals)) if len(vals) > 1 else 0.0

    def has(self, trace: str, policy: str) -> bool:
        """Whether any run of ``trace`` x ``policy`` finished."""
        return any(r["trace"] == trace and r["policy"] == policy for r in self.records)

    def label(self, trace: str) -> str:
        return self.labels.get(trace) or (Path(trace).stem if trace.endswith(".csv") else trace)


def trace_labels(traces: Sequence[str]) -> dict[str, str]:
    """Each trace's name for file names and plots: a bundled name, or a CSV's file name without the extension.

    Two traces with one file name (``a/x.csv``, ``b/x.csv``) get ``x`` and ``x-2`` (compared without case, for
    case-insensitive file systems).

    Raises:
        RlscaleError: a name is not a safe file name (`rlscale.paths.is_safe_name`).
    """
    labels: dict[str, str] = {}
    taken: set[str] = set()
    for t in traces:
        base = t if t in EVAL_TRACES else Path(t).stem
        if base != t and not is_safe_name(base):
            raise RlscaleError(
                f"trace name {base!r} (of {t}) cannot be used in a file name ({name_rule()}); rename the file"
            )
        check_name(base, "trace name")
        label, n = base, 1
        while label.lower() in taken:
            n += 1
            label = f"{base}-{n}"
        taken.add(label.lower())
        labels[t] = label
    return labels


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def _file_bytes(path: Path) -> bytes:
    try:
        if special_file_kind(path) is not None:  # a FIFO would block, a device never end (loading refused them)
            return b""
        return Path(path).read_bytes()
    except OSError:
        return b""


def _settings(
    spec: PipelineSpec,
    traces: Sequence[str],
    loaded: dict[str, Trace],
    policies: Sequence[str],
    seeds: int,
    mode: str,
    options: Any,
    timelines: bool,
    load_scale: float = 1.0,
) -> dict[str, Any]:
    """What the records depend on; a resumed comparison must have the same (`settings.json`)."""
    profiles = sorted({s.profile_path for s in spec.stages})
    settings: dict[str, Any] = {
        "pipeline": spec.name,
        "spec_sha256": _digest(_file_bytes(spec.source), *(_file_bytes(p) for p in profiles)),
        "traces": list(traces),
        # only at a scale other than 1: a comparison started before load scales existed still resumes
        **({"load_scale": load_scale} if load_scale != 1 else {}),
        "traces_sha256": [_digest(np.ascontiguousarray(loaded[t].rps, dtype=float).tobytes()) for t in traces],
        "policies": list(policies),
        "seeds": seeds,
        "arrivals": mode,
        "options": asdict(options) if options is not None else {},
        "timelines": timelines,
    }
    if any(p.startswith("ppo") for p in policies):
        from agents.inference import bundled_agent

        agent = Path(getattr(options, "agent", None) or bundled_agent(spec.name))
        settings["agent_sha256"] = _digest(_file_bytes(agent))
    return settings


def previous_results(out: Path) -> list[Path]:
    """The files of an earlier comparison in ``out`` (records, settings, summary files, timelines)."""
    if not out.is_dir():
        return []
    names = [out / n for n in (RECORDS, SETTINGS, *SUMMARY)]
    return [p for p in names if p.exists()] + sorted(p for pattern in TIMELINES for p in out.glob(pattern))


def _shorten(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


NUMBERS = (
    "requests",
    "late",
    "dropped",
    "sla_violation_rate",
    "accuracy",
    "cost_cores",
    "objective",
    "score",
    "p99_latency_s",
    "decision_ms_p99",
)
"""The numbers of a run record that the summary averages: a resumed record must have each as a number."""
OPTIONAL_NUMBERS = ("completed", "in_flight", "in_flight_share", "rollouts", "scalings", "reconfigurations")
"""Numbers the summary uses where a record has them (records of older versions may lack them)."""


def _record_problem(record: Any) -> str | None:
    """What makes a parsed line of ``records.jsonl`` unusable by the summary (a field of the wrong type), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if nesting_depth(record, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    for key in ("trace", "policy"):
        if not isinstance(record.get(key), str):
            return f"{key} is missing or not text"
    if isinstance(record.get("seed"), bool) or not isinstance(record.get("seed"), int):
        return "seed is missing or not an integer"
    for key in (*NUMBERS, *OPTIONAL_NUMBERS):
        if key not in record and key in OPTIONAL_NUMBERS:
            continue
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key} is {'missing' if key not in record else f'not a number ({_shorten(value, 40)})'}"
    return None


def _read_records(path: Path, runs: Sequence[RunKey]) -> dict[RunKey, dict[str, Any]]:
    """The finished runs of ``records.jsonl`` that ``runs`` holds; a torn last line (killed mid-write) is dropped
    from the file. A valid line of another run is the user's data: it is not used, and kept in the file verbatim.

    Raises:
        RlscaleError: the file is not a regular file, too large, not UTF-8, or a line (but the last) is not a run
            record with the numbers the summary needs.
    """
    if not path.exists():
        return {}
    try:
        text = read_text_limited(path, MAX_RECORDS_BYTES, RlscaleError, "records")
    except RlscaleError as exc:
        raise RlscaleError(f"--resume: {exc}; pass --overwrite to start over") from None
    lines = text.splitlines()
    wanted = set(runs)
    done: dict[RunKey, dict[str, Any]] = {}
    kept: list[str] = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except RecursionError:
            problem: str | None = f"nested deeper than {MAX_JSON_DEPTH} levels"
        except ValueError:
            problem = "not JSON"
        else:
            problem = _record_problem(record)
        if problem is None:
            key = (record["trace"], record["policy"], record["seed"])
        else:
            if i == len(lines) - 1 and problem == "not JSON":  # the write in flight when the process died
                log.warning("%s: dropping an incomplete last line", path)
                break
            raise RlscaleError(
                f"--resume: {path} line {i + 1} is not a run record ({problem}); pass --overwrite to start over"
            )
        if key in wanted:
            done[key] = record
        kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return done


def _prepare_out(
    out: Path, settings: dict[str, Any], runs: Sequence[RunKey], *, resume: bool, overwrite: bool
) -> dict[RunKey, dict[str, Any]]:
    """Make ``out`` ready by the overwrite rule; returns the runs already recorded there (when resuming)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    previous = previous_results(out)
    done: dict[RunKey, dict[str, Any]] = {}
    if previous and overwrite:
        for path in [*previous, *out.glob(TEMPORARY)]:
            try:
                path.unlink()
            except OSError as exc:
                raise OutputError(f"--overwrite: cannot remove {path}: {exc.strerror}") from None
        log.info("removed %d files of the previous comparison in %s", len(previous), out)
    elif previous and resume:
        try:
            saved = read_json_limited(out / SETTINGS, MAX_SETTINGS_BYTES, RlscaleError, "settings")
        except RlscaleError as exc:
            raise RlscaleError(
                f"--resume: {out} holds results without a readable {SETTINGS} ({exc}; another rlscale version or an "
                "edited folder): they cannot be continued; pass --overwrite to start over"
            ) from None
        if saved != settings:
            key = next((k for k in {**saved, **settings} if saved.get(k) != settings.get(k)), "settings")
            raise RlscaleError(
                f"--resume: {out} holds a comparison with other settings ({key}: {_shorten(saved.get(key))} there, "
                f"{_shorten(settings.get(key))} now); give the flags it was started with, or --overwrite to start over"
            )
        done = _read_records(out / RECORDS, runs)
        log.info("resuming: %d of %d runs already recorded in %s", len(done), len(runs), out / RECORDS)
    elif previous:
        raise RlscaleError(
            f"{out} already holds a comparison's results ({', '.join(p.name for p in previous[:3])}"
            f"{', ...' if len(previous) > 3 else ''}); pass --resume to finish it with the same settings, "
            "or --overwrite to start over"
        )
    output_folder(out)
    atomic_write_text(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    return done


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Within: SIGINT and SIGTERM wait (blocked for this thread) and arrive on leaving; where signals cannot be
    blocked (no ``pthread_sigmask``), nothing changes."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    previous = block(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars (the records hold a few)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_comparison(
    pipeline: str,
    traces: Sequence[str],
    policies: Sequence[str],
    *,
    make_policy: PolicyFactory | str,
    seeds: int = 1,
    options: Any = None,
    arrivals: str | None = None,
    out: Path | None = None,
    timelines: bool = True,
    progress: bool = True,
    keep_results: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    executor: str = "serial",
    workers: int | None = None,
    ray_address: str | None = None,
    load_scale: float = 1.0,
) -> Comparison:
    """Run every combination and write the outputs, each run's record the moment it finishes.

    Args:
        pipeline: bundled name or spec path.
        traces: bundled trace names or CSV paths.
        policies: policy names (see ``rlscale simulate --help``).
        make_policy: builds each run's policy by name (`PolicyFactory`): a module-level function or its
            ``module:function`` name (each run imports it, `RunSpec.factory`: a worker process builds its own).
        seeds: seeds 0..seeds-1. With one seed arrivals are spread evenly (IPA's generator, deterministic);
            with more, Poisson arrivals make the seeds differ (unless ``arrivals`` says otherwise).
        options: what ``make_policy`` takes besides the name (solver / predictor / headroom flags: the CLI's
            `PolicyOptions`, a dataclass, recorded in ``settings.json``); None: the policies' defaults.
        arrivals: ``even`` or ``poisson``; None picks as described under ``seeds``.
        out: output folder (None writes nothing).
        timelines: draw a timeline per trace x policy (first seed) and write each run's timeline rows (CSV).
        progress: show a progress bar.
        keep_results: keep every RunResult of this process's runs in memory (for analysis; costs memory).
        resume: ``out`` holds an unfinished comparison with the same settings: run only what it lacks.
        overwrite: remove the results of an earlier comparison in ``out`` first.
        executor: ``serial`` (this process), ``process`` (a pool of worker processes) or ``ray`` (Ray tasks, on a
            local Ray or the cluster at ``ray_address``), `rlscale.evaluate.sweep`; the
            records and files are the same whichever (but the wall-clock ``decision_ms_*``), results in the
            comparison's order, ``records.jsonl`` in the order the runs finish.
        workers: worker processes for ``process``, CPUs of the local Ray for ``ray`` (None: every core).
        ray_address: ``ray`` only: the cluster to run on (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``; left
            running); None starts a local Ray for the comparison and shuts it down at the end.
        load_scale: multiply every trace's per-second counts by this, rounded half up to whole requests
            (`rlscale.workload.scale_trace`); at a scale other than 1 the records name each trace ``NAME@xSCALE``
            (``bursty@x2``, `Comparison.traces`), its files ``NAME-xSCALE``, every record carries ``load_scale``,
            and ``settings.json`` holds it (a resume at another scale is refused).

    Raises:
        RlscaleError: a bad name, seed count or flag; ``out`` holds results and neither ``resume`` nor
            ``overwrite`` is given, or ``resume`` meets other settings.
        OutputError: ``out`` cannot be created or written.
        ComparisonInterrupted: SIGINT/SIGTERM (or a `KeyboardInterrupt`); the finished runs are saved and
            summarised first.
    """
    if seeds < 1:
        raise RlscaleError(f"--seeds must be >= 1, got {seeds}")
    if not traces or not policies:
        raise RlscaleError("need at least one trace and one policy")
    if resume and overwrite:
        raise RlscaleError("--resume and --overwrite exclude each other: continue the comparison, or start over")
    for flag, names in (("--traces", traces), ("--policies", policies)):
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise RlscaleError(f"{flag} lists {twice!r} twice")
    if keep_results and executor != "serial":
        raise RlscaleError("keep_results needs the serial executor (a worker's RunResult stays in the worker)")
    sweeper = make_executor(executor, workers, ray_address)
    factory = factory_name(make_policy)
    make = resolve_factory(factory)
    spec = load_spec(pipeline)
    loaded = {t: load_trace(t) for t in traces}  # fail on a bad trace before any run
    scaled = {t: scale_trace(loaded[t], load_scale) for t in traces}  # and on one the load scale makes too large
    for p in policies:  # and on a bad policy name
        make(p, spec, next(iter(scaled.values())), options)
        check_name(p, "policy name")
    names = {t: scaled_name(t, load_scale) for t in traces}
    suffix = "" if load_scale == 1 else f"-x{load_scale:g}"
    labels = {names[t]: label + suffix for t, label in trace_labels(traces).items()}
    for label in labels.values():
        check_name(label, "trace name")
    mode = arrivals or ("even" if seeds == 1 else "poisson")
    runs: list[RunKey] = [(names[t], p, s) for t in traces for p in policies for s in range(seeds)]
    comp = Comparison(spec=spec, labels=labels, traces=[names[t] for t in traces])
    timeline_paths, csv_paths = {}, {}
    if out is not None:
        timeline_paths = {
            (n, p): inside(out, f"timeline-{labels[n]}-{p}.png", "timeline") for n in comp.traces for p in policies
        }
        csv_paths = {
            key: inside(out, f"timeline-{labels[key[0]]}-{key[1]}-seed{key[2]}.csv", "timeline") for key in runs
        }
    done: dict[RunKey, dict[str, Any]] = {}
    if out is not None:
        settings = _settings(spec, traces, scaled, policies, seeds, mode, options, timelines, load_scale)
        sweeper.prepare()  # a Ray cluster that cannot be reached fails here, before --overwrite removes anything
        done = _prepare_out(out, settings, runs, resume=resume, overwrite=overwrite)
        if timelines:
            drawn = [timeline_paths[t, p] for t, p, s in runs if s == 0 and (t, p, s) in done]
            drawn += [csv_paths[key] for key in runs if key in done]
            comp.files += [path for path in drawn if path.exists()]

    def run_spec(t: str, p: str, s: int) -> RunSpec:
        draw = out is not None and timelines and s == 0
        rows = out is not None and timelines
        n = names[t]
        return RunSpec(
            pipeline=str(pipeline),
            trace=t,
            policy=p,
            seed=s,
            arrivals=mode,
            options=options,
            factory=factory,
            timeline=str(timeline_paths[n, p]) if draw else None,
            timeline_csv=str(csv_paths[n, p, s]) if rows else None,
            load_scale=load_scale,
        )

    todo = [run_spec(t, p, s) for t in traces for p in policies for s in range(seeds) if (names[t], p, s) not in done]

    def finished(item: RunSpec, outcome: Any) -> None:
        record = outcome
        if keep_results:
            record, comp.results[item.key] = outcome
        comp.files += [Path(f) for f in (item.timeline, item.timeline_csv) if f is not None]
        # counted first: an interrupt that lands once the line is on disk (or while it is written: a torn last line
        # is dropped by --resume, which runs it again) must not leave a recorded run out of the summary; and the
        # interrupt waits until both are done where this thread alone takes the signals
        with _signals_deferred():
            done[item.key] = record
            if out is not None:
                append_line(out / RECORDS, json.dumps(record))  # the run counts as finished once this line is on disk

    fn = _run_keeping_result if keep_results else run
    interrupted: int | None = None
    _loaded.clear()
    _loaded.update({("spec", str(pipeline)): spec, **{("trace", t): loaded[t] for t in traces}})
    try:
        with contextlib.ExitStack() as stack:
            advance = stack.enter_context(
                progress_bar(spec.name, len(runs), sweeper, enabled=progress, completed=len(runs) - len(todo))
            )
            results = stack.enter_context(contextlib.closing(sweeper.imap_unordered(fn, todo)))
            for i, outcome in results:
                finished(todo[i], outcome)
                item = todo[i]
                advance(f"{labels[item.key[0]]} / {item.policy} / seed {item.seed}")
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through rlscale.interrupts: keep what finished
        interrupted = signum_of(exc)
    finally:
        _loaded.clear()
    comp.records = [done[key] for key in runs if key in done]
    if out is not None and comp.records:
        comp.files += write_outputs(comp, comp.traces, list(policies), out)
    if interrupted is not None:
        raise ComparisonInterrupted(interrupted, comp, len(runs), out)
    return comp


def write_outputs(comp: Comparison, traces: list[str], policies: list[str], out: Path) -> list[Path]:
    """Write ``results.csv``, ``results.md`` and the two summary plots of the finished runs, each atomically."""
    files = [out / "results.csv", out / "results.md"]
    keys: list[str] = []
    for record in comp.records:
        keys += [k for k in record if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(comp.records)
    atomic_write_text(files[0], buffer.getvalue())
    atomic_write_text(files[1], markdown_table(comp, traces, policies))
    for name, plot in (("accuracy_vs_cost.png", plot_accuracy_vs_cost), ("violations.png", plot_violations)):
        with atomic_path(out / name) as tmp:
            plot(comp, traces, policies, tmp)
        files.append(out / name)
    return files


def markdown_table(comp: Comparison, traces: list[str], policies: list[str]) -> str:
    """``results.md``: the means per pipeline x trace x policy, each stage's configuration, and notes."""
    seeds = len({r["seed"] for r in comp.records})
    lines = [
        f"# {comp.spec.name}: {', '.join(policies)} ({seeds} seed(s), means)",
        "",
        "| pipeline | trace | policy | requests | violations (late+dropped) | violation rate | accuracy | "
        "cost (cores) | objective | score (± sd) | p99 (s) | rollouts / scalings | decision p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in traces:
        for p in policies:
            if not comp.has(t, p):  # an interrupted comparison: only what finished
                continue
            m = lambda k, t=t, p=p: comp.mean(t, p, k)  # noqa: E731
            has_split = all("rollouts" in r for r in comp.records if r["trace"] == t and r["policy"] == p)
            # records resumed from before rollouts and scalings were counted apart have their sum only
            churn = f"{m('rollouts'):.1f} / {m('scalings'):.1f}" if has_split else f"{m('reconfigurations'):.1f} (both)"
            lines.append(
                f"| {comp.spec.name} | {t} | {p} | {m('requests'):.0f} | {m('late') + m('dropped'):.1f} | "
                f"{m('sla_violation_rate'):.2%} | {m('accuracy'):.4f} | {m('cost_cores'):.2f} | "
                f"{m('objective'):.3f} | {m('score'):.3f} ± {comp.std(t, p, 'score'):.3f} | "
                f"{m('p99_latency_s'):.2f} | {churn} | {m('decision_ms_p99'):.2f} |"
            )
    lines += ["", *stage_table(comp, traces, policies)]
    notes = run_notes(comp, traces, policies)
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _most_common(values: list[Any]) -> Any:
    """The value seen most often (ties: the first seen); None for none."""
    values = [v for v in values if v is not None and v != ""]
    return max(values, key=values.count) if values else None


def stage_table(comp: Comparison, traces: list[str], policies: list[str]) -> list[str]:
    """Lines of the per-stage configuration table: for each trace x policy and stage, the variant and batch size in
    force longest (most common over seeds), and the time-weighted cores per replica and replicas (means over seeds).
    """
    names = [st.name for st in comp.spec.stages]
    lines = [
        "## Configuration per stage (variant and batch in force longest; cores per replica, replicas: time-weighted)",
        "",
        "| trace | policy | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for t in traces:
        for p in policies:
            runs = [r for r in comp.records if r["trace"] == t and r["policy"] == p]
            if not runs:
                continue
            cells = []
            for n in names:
                variant = _most_common([r.get(f"{n}.variant_mode") for r in runs])
                batch = _most_common([r.get(f"{n}.batch_mode") for r in runs])
                cores = [r[f"{n}.cores_mean"] for r in runs if isinstance(r.get(f"{n}.cores_mean"), int | float)]
                reps = [r[f"{n}.replicas_mean"] for r in runs if isinstance(r.get(f"{n}.replicas_mean"), int | float)]
                if variant is None or not cores or not reps:  # a record of an older rlscale (resumed)
                    cells.append("-")
                    continue
                cells.append(f"{variant} b{batch}, {np.mean(cores):.1f} cores x {np.mean(reps):.1f} replicas")
            lines.append(f"| {t} | {p} | " + " | ".join(cells) + " |")
    return lines


def violates_sla(comp: Comparison, trace: str, policy: str, threshold: float = SLA_THRESHOLD) -> bool:
    """Whether trace x policy's mean violation rate exceeds ``threshold`` (the SLA is not met)."""
    rate = comp.mean(trace, policy, "sla_violation_rate")
    return bool(np.isfinite(rate) and rate > threshold)


def run_notes(comp: Comparison, traces: list[str], policies: list[str]) -> list[str]:
    """What results.md says in words: the runs that violated the SLA, ended with requests still queued, or
    breached a budget (``budget_breaches``, where the records have it)."""
    notes = []
    for t in traces:
        for p in policies:
            if not comp.has(t, p):
                continue
            where = f"{comp.label(t)} / {p}"
            if violates_sla(comp, t, p):
                notes.append(
                    f"{where}: violates the SLA ({comp.mean(t, p, 'sla_violation_rate'):.2%} of requests late or "
                    f"dropped, over {SLA_THRESHOLD:.0%})"
                )
            runs = [r for r in comp.records if r["trace"] == t and r["policy"] == p]
            queued = [r.get("in_flight") or 0 for r in runs]
            if any(q > 0 for q in queued):
                requests = float(np.mean([r.get("requests") or 0 for r in runs]))
                share = f" ({np.mean(queued) / requests:.1%} of arrivals)" if requests else ""
                notes.append(
                    f"{where}: {np.mean(queued):.0f} requests{share} still queued at the end (mean over seeds): the "
                    "pipeline could not keep up; the violation rate does not count them"
                )
            breaches = [r["budget_breaches"] for r in runs if isinstance(r.get("budget_breaches"), int | float)]
            if any(b > 0 for b in breaches):
                notes.append(f"{where}: {np.mean(breaches):.1f} budget breaches (budget_breaches, mean over seeds)")
    return notes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> list[Any]:
    """Annotate ``(x, y, text)`` points so that no two labels overlap (and none covers another point), where the
    candidate offsets allow: each label takes the first of a ring of offsets (right, left, above, below, the
    diagonals, then twice as far) whose box is free; a label that finds none goes to its first offset.
    Points at one place share one label ("a, b"). Call it once the axes' limits and layout are final.

    Returns:
        the annotations, in the order placed.
    """
    renderer = ax.figure.canvas.get_renderer()
    grouped: dict[tuple[float, float], list[str]] = {}
    for x, y, text in points:
        if np.isfinite(x) and np.isfinite(y):
            grouped.setdefault((round(x, 9), round(y, 9)), []).append(text)
    taken = []
    for x, y in grouped:
        px, py = ax.transData.transform((x, y))
        taken.append((px - 4, py - 4, px + 4, py + 4))  # the marker itself
    ring = [(6, 4), (-6, 4), (0, 9), (0, -13), (6, -12), (-6, -12), (6, 12), (-6, 12)]
    offsets = ring + [(2 * dx, 2 * dy) for dx, dy in ring] + [(3 * dx, 3 * dy) for dx, dy in ring]
    axes_box = ax.get_window_extent(renderer)
    placed = []
    for (x, y), texts in grouped.items():
        label = ", ".join(texts)
        chosen = None

        def annotate(dx: float, dy: float, arrow: bool = False, label: str = label, x: float = x, y: float = y):
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            return ax.annotate(
                label,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                ha=ha,
                va="bottom",
                # a label pushed away from its point keeps a thin line to it
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if arrow else None,
            )

        chosen, box = None, None
        for dx, dy in offsets:
            ann = annotate(dx, dy)  # measured without its line: the line may cross its own point
            box = ann.get_window_extent(renderer)
            inside = box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1 and box.y0 >= axes_box.y0 and box.y1 <= axes_box.y1
            free = all(box.x1 < a or box.x0 > c or box.y1 < b or box.y0 > d for a, b, c, d in taken)
            ann.remove()
            if inside and free:
                chosen = (dx, dy)
                break
        if chosen is None:  # crowded out: the first place, overlapping
            chosen = offsets[0]
            box = None
        dx, dy = chosen
        ann = annotate(dx, dy, arrow=abs(dx) + abs(dy) > 14)
        box = box if box is not None else ann.get_window_extent(renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
        placed.append(ann)
    return placed


def draw_accuracy_vs_cost(comp: Comparison, traces: list[str], policies: list[str], threshold: float = SLA_THRESHOLD):
    """The accuracy-against-cost figure: one panel per trace, one point per policy (means over seeds). A policy whose
    violation rate exceeds ``threshold`` is drawn hollow with a red edge and listed as violating the SLA in the
    legend; "up and left is better" holds only among the filled (SLA-meeting) points. Returns the Figure."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(traces), figsize=(4.6 * len(traces), 4.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    handles = {}
    panels = []
    for ax, t in zip(axes[0], traces, strict=True):
        points = []
        for i, p in enumerate(policies):
            if not comp.has(t, p):
                continue
            x, y = comp.mean(t, p, "cost_cores"), comp.mean(t, p, "accuracy")
            colour = colours(i % 10)
            if violates_sla(comp, t, p, threshold):
                ax.scatter(x, y, s=46, facecolors="none", edgecolors="red", linewidths=1.6, zorder=3)
                ax.scatter(x, y, s=8, color=colour, zorder=4)
            else:
                ax.scatter(x, y, s=36, color=colour, edgecolors="black", linewidths=0.4, zorder=3)
            points.append((x, y, p))
            handles.setdefault(p, Line2D([], [], ls="", marker="o", color=colour, label=p))
        ax.set_title(comp.label(t), fontsize=9)
        ax.set_xlabel("cost (cores, time-averaged)")
        ax.set_ylabel(f"accuracy ({comp.spec.objective.accuracy_method})")
        ax.margins(0.25)
        ax.set_xlim(left=0)
        panels.append((ax, points))
    marker = Line2D(
        [], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="red", markeredgewidth=1.6, markersize=7
    )
    legend = [*handles.values(), marker]
    names = [*handles, f"violates the SLA\n(> {threshold:.0%} late or dropped)"]
    fig.legend(legend, names, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(
        f"{comp.spec.name}: accuracy against cost\n(among SLA-meeting runs, filled: up and left is better)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1 - min(0.3, 1.3 / fig.get_figwidth()), 1))
    for ax, points in panels:
        place_labels(ax, points)
    return fig


def plot_accuracy_vs_cost(comp: Comparison, traces: list[str], policies: list[str], path: Path) -> Path:
    """Draw `draw_accuracy_vs_cost` into ``path`` (PNG)."""
    plt = _pyplot()
    fig = draw_accuracy_vs_cost(comp, traces, policies)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_violations(comp: Comparison, traces: list[str], policies: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(policies) * len(traces) / 2), 4))
    width = 0.8 / len(traces)
    x = np.arange(len(policies))
    for j, t in enumerate(traces):
        vals = [100 * comp.mean(t, p, "sla_violation_rate") if comp.has(t, p) else 0.0 for p in policies]
        ax.bar(x + j * width, vals, width, label=comp.label(t))
    ax.axhline(100 * SLA_THRESHOLD, color="red", ls="--", lw=0.8, label=f"{SLA_THRESHOLD:.0%}: violates the SLA above")
    ax.set_xticks(x + width * (len(traces) - 1) / 2)
    ax.set_xticklabels(policies, rotation=20, fontsize=8)
    ax.set_ylabel("SLA violations (% of requests)")
    ax.set_title(f"{comp.spec.name}: late + dropped requests", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
