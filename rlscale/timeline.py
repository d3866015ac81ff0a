"""Per-interval timeline rows, as CSV: what the pipeline saw and ran, and what the control step did, each interval.

One row describes one adaptation interval and the decision taken at its end. ``rlscale simulate --timeline``,
``rlscale compare`` (beside each run's timeline plot) and ``rlscale sidecar --timeline`` write the same columns
(`columns`), so a simulated run and a live one can be read, diffed and plotted alike.

| column | meaning |
|---|---|
| ``time_s`` | end of the interval: the time of the decision taken on it (pipeline seconds) |
| ``phase`` | ``trace`` (the policy decides) or ``drain`` (after the trace: the last configuration held) |
| ``arrival_rps_peak`` / ``arrival_rps_mean`` | the interval's peak per-second load and its mean (arrivals / length) |
| ``predicted_rps`` | the load the policy planned for (ILP policies: prediction x headroom); empty when it has none |
| ``arrivals`` / ``completed`` / ``dropped`` | requests that entered, left the last stage, were dropped |
| ``<stage>.variant`` / ``.batch`` / ``.cores`` | the configuration in force (pools: the pool serving most requests) |
| ``<stage>.replicas`` | the replicas in force, over every pool |
| ``<stage>.pools`` | stages with ``max_pools > 1``: the pools in force when two or more (``a b1 x1 c8 70% + …``) |
| ``<stage>.p99_s`` | the stage's p99 latency (queue + service) of the requests it served; empty if none |
| ``<stage>.utilisation`` | busy replica-seconds / serving replica-seconds (0 to 1) |
| ``<stage>.queue_len`` | requests waiting at the stage at the end of the interval |
| ``e2e_p99_s`` | end-to-end p99 of the completed requests; empty when none completed |
| ``violation_rate`` | (late + dropped) / arrivals |
| ``budget_{min,p5,p50}_s`` | with ``request_slo``: arrivals' remaining budgets (min, p5, p50) |
| ``cost_cores`` | allocated cores, time-averaged over the interval (starting and draining replicas count) |
| ``in_flight`` | requests inside the pipeline at the end of the interval |
| ``guard_changed`` | ``true`` when the safety layer moved the policy's proposal (``false``; empty: no guard) |
| ``guard_change`` | what it changed, in a few words (empty when nothing) |
| ``reconfigured`` | ``true`` when the decision changed the configuration (it was applied); empty: no decision |

A missing value (no data, NaN, no decision on a drain interval) is an empty cell, never ``nan``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlscale.control import Outcome
from rlscale.errors import RlscaleError
from rlscale.paths import check_output_file
from rlscale.spec import PipelineSpec
from rlscale.types import IntervalMetrics, PipelineConfig

log = logging.getLogger(__name__)

STAGE_COLUMNS = ("variant", "batch", "cores", "replicas", "p99_s", "utilisation", "queue_len")
HEAD = ("time_s", "phase", "arrival_rps_peak", "arrival_rps_mean", "predicted_rps", "arrivals", "completed", "dropped")
TAIL = ("e2e_p99_s", "violation_rate", "cost_cores", "in_flight", "guard_changed", "guard_change", "reconfigured")
BUDGET_COLUMNS = ("budget_min_s", "budget_p5_s", "budget_p50_s")  # after violation_rate, with per-request SLOs


def columns(spec: PipelineSpec) -> list[str]:
    """The timeline's columns for ``spec``: `HEAD`, ``<stage>.<field>`` for each stage and `STAGE_COLUMNS` (and
    ``pools`` after ``replicas`` for a stage with ``max_pools > 1``), `TAIL` (with `BUDGET_COLUMNS` after
    ``violation_rate`` where the spec has per-request SLOs)."""
    tail: tuple[str, ...] = TAIL
    if spec.request_slo is not None:
        i = TAIL.index("violation_rate") + 1
        tail = (*TAIL[:i], *BUDGET_COLUMNS, *TAIL[i:])
    return [*HEAD, *(f"{st.name}.{c}" for st in spec.stages for c in _stage_columns(st.max_pools)), *tail]


def _stage_columns(max_pools: int) -> tuple[str, ...]:
    if max_pools <= 1:
        return STAGE_COLUMNS
    i = STAGE_COLUMNS.index("replicas") + 1
    return (*STAGE_COLUMNS[:i], "pools", *STAGE_COLUMNS[i:])


def cell(value: Any) -> str:
    """A value as a CSV cell: empty for None and non-finite numbers, ``true``/``false`` for booleans, floats
    rounded to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return str(value)


@dataclass(frozen=True)
class StepNote:
    """What a timeline keeps of one control step (not the state: a run keeps one per interval).

    Attributes:
        guard_changed: the guard moved the proposal (None: no guard).
        guard_change: what it changed, in a few words (`rlscale.control.Projection.explain`).
        reconfigured: the decision changed the configuration (it was applied).
        predicted_rps: the load the policy planned for (`rlscale.control.Decision.planned_rps`), or None.
    """

    guard_changed: bool | None
    guard_change: str
    reconfigured: bool
    predicted_rps: float | None = None

    @classmethod
    def of(cls, outcome: Outcome) -> StepNote:
        """The note of ``outcome`` (its decision says what load the policy planned for)."""
        projection = outcome.decision.projection
        changed = None if projection is None else not projection.feasible_input
        change = "" if projection is None else projection.explain()
        return cls(changed, change, bool(outcome.changed), outcome.decision.planned_rps)


def row(
    spec: PipelineSpec,
    metrics: IntervalMetrics | None,
    config: PipelineConfig,
    *,
    time_s: float,
    phase: str = "trace",
    in_flight: int | None = None,
    note: StepNote | None = None,
) -> dict[str, str]:
    """One timeline row, every cell a string (`cell`).

    Args:
        metrics: the interval's metrics (None: not observed, every metric cell empty).
        config: the configuration in force during the interval.
        time_s: the interval's end (the decision's time).
        phase: ``trace`` or ``drain``.
        in_flight: requests inside the pipeline at the end of the interval (None: unknown).
        note: the control step taken at the end of the interval (None: no decision).
    """
    values: dict[str, Any] = {"time_s": time_s, "phase": phase, "in_flight": in_flight}
    if metrics is not None:
        length = metrics.end_s - metrics.start_s
        values.update(
            arrival_rps_peak=metrics.arrival_rps_max,
            arrival_rps_mean=metrics.arrivals / length if length > 0 else None,
            arrivals=metrics.arrivals,
            completed=metrics.completed,
            dropped=metrics.dropped,
            e2e_p99_s=metrics.e2e_p99_s if metrics.completed else None,
            violation_rate=metrics.sla_violation_rate,
            cost_cores=metrics.cost_cores,
            budget_min_s=metrics.budget_min_s,
            budget_p5_s=metrics.budget_p5_s,
            budget_p50_s=metrics.budget_p50_s,
        )
    for s, (st, sc) in enumerate(zip(spec.stages, config.stages, strict=True)):
        main = sc.main
        values.update(
            {f"{st.name}.variant": main.variant, f"{st.name}.batch": main.batch, f"{st.name}.cores": main.cores}
        )
        values[f"{st.name}.replicas"] = sc.total_replicas
        if len(sc.pools) > 1:
            values[f"{st.name}.pools"] = str(sc)
        if metrics is not None and s < len(metrics.stages):
            m = metrics.stages[s]
            values[f"{st.name}.p99_s"] = m.latency_p99_s
            values[f"{st.name}.utilisation"] = m.utilisation
            values[f"{st.name}.queue_len"] = m.queue_len
    if note is not None:
        values.update(
            predicted_rps=note.predicted_rps,
            guard_changed=note.guard_changed,
            guard_change=note.guard_change,
            reconfigured=note.reconfigured,
        )
    return {c: cell(values.get(c)) for c in columns(spec)}


def to_csv(spec: PipelineSpec, rows: Iterable[dict[str, str]]) -> str:
    """The CSV text of ``rows`` with its header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(spec), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class TimelineWriter:
    """Appends rows to a timeline CSV as they come (the sidecar: one row per decision), each flushed to disk.

    The header is written once, when the file is new or empty; an existing file must have the same header (the same
    spec's stages), so rows of another pipeline are never mixed in. A torn last line (a process killed mid-write)
    is completed with a newline before the first append.

    Args:
        path: the CSV file (created with its folder when missing).
        spec: the pipeline (its stages name the columns).

    Raises:
        RlscaleError: the file cannot be written, or holds another header.
    """

    def __init__(self, path: Path, spec: PipelineSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self._columns = columns(spec)
        header = ",".join(self._columns)
        existing = _existing(self.path, spec)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - held for the loop
            if existing and not existing.endswith(b"\n"):
                self._file.write("\n")
            if not existing:
                self._file.write(header + "\n")
            self._flush()
        except OSError as exc:
            raise RlscaleError(f"--timeline {self.path}: cannot write: {exc.strerror or exc}") from None
        self._writer = csv.DictWriter(self._file, fieldnames=self._columns, lineterminator="\n")

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, values: dict[str, str]) -> None:
        """Append one row (from `row`) and flush it."""
        self._writer.writerow(values)
        self._flush()

    def record_step(self, outcome: Outcome) -> None:
        """Append the row of one control step (the interval ``outcome.state.last`` and the decision on it); a
        failed write is a warning, never an error: a full disk must not stop the autoscaler."""
        state = outcome.state
        values = row(
            self.spec,
            state.last,
            state.config,
            time_s=state.time_s,
            in_flight=state.in_flight,
            note=StepNote.of(outcome),
        )
        try:
            self.write(values)
        except OSError as exc:
            log.warning("--timeline %s: cannot append a row: %s", self.path, exc.strerror or exc)

    def close(self) -> None:
        self._file.close()


def _existing(path: Path, spec: PipelineSpec) -> bytes:
    """The bytes of an existing timeline file (b"" when there is none), checked to hold ``spec``'s columns."""
    if path.is_dir():
        raise RlscaleError(f"--timeline {path}: is a folder; give a CSV file path")
    try:
        existing = path.read_bytes() if path.exists() else b""
    except OSError as exc:
        raise RlscaleError(f"--timeline {path}: cannot read: {exc.strerror or exc}") from None
    first = existing.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    if existing and first != ",".join(columns(spec)):
        raise RlscaleError(
            f"--timeline {path}: holds another timeline or another file (its header is not this pipeline's "
            "columns); give a new file"
        )
    return existing


def check_appendable(path: Path, spec: PipelineSpec) -> None:
    """`check_writable`, and an existing file must be a timeline of ``spec`` (the rows are appended to it).

    Raises:
        RlscaleError: see `check_writable`; the file holds something else.
    """
    check_writable(path)
    _existing(Path(path), spec)


def check_writable(path: Path) -> None:
    """Fail before a long run, not after it, when ``path`` is not a CSV file that can be written, or is a file that
    rlscale did not write: an existing file (not empty) must start with a timeline's header (`HEAD`'s columns, of
    whichever pipeline), so a rerun replaces its own timeline and never a user's file.

    Raises:
        RlscaleError: the path does not end in ``.csv``, is a folder, or its folder cannot be created or written; it
            holds another file.
    """
    path = Path(path)
    check_output_file(
        path,
        "--timeline",
        ".csv",
        "the timeline is a CSV file",
        ours=lambda head: head.startswith((",".join(HEAD) + ",").encode()),
        foreign=f"holds another file, not a timeline rlscale wrote (its first line is not the header "
        f"{','.join(HEAD[:2])},...)",
    )


def read_rows(text: str) -> Sequence[dict[str, str]]:
    """The rows of a timeline CSV's text (for tests and tools)."""
    return list(csv.DictReader(io.StringIO(text)))
