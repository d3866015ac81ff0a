"""Per-request SLO sources (DESIGN.md section 4): a client's network eats part of each request's latency budget.

With a spec's ``request_slo: {payload_kb: P, bandwidth: B}`` every request carries its own deadline:

    remaining budget = sla_s - P * 1024 / bandwidth(arrival)        deadline = arrival + remaining budget

(Sponge's model: the payload's upload time at the client's bandwidth when the request arrives.) ``payload_kb`` is
in kilobytes of 1024 bytes, as Sponge computes it (``size_kb * 1024 / bytes_per_ms``).

A bandwidth trace is a CSV with a ``bandwidth_bytes_per_s`` column, one row per second (other columns, such as
``t_s``, are ignored); second ``t`` of a run reads row ``t mod rows``, so a trace shorter than the run repeats
cyclically. Bundled traces live in ``rlscale/data/bandwidth/`` (`bundled_bandwidths`; ``lte-bus`` is Sponge's
4G/LTE trace, see PROVENANCE.md); anywhere a bundled name is accepted a CSV path is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from rlscale.errors import TraceError
from rlscale.inputs import MAX_TRACE_BYTES, per_second_column, read_text_limited
from rlscale.paths import is_safe_name

BANDWIDTH_COLUMN = "bandwidth_bytes_per_s"
BYTES_PER_KB = 1024  # Sponge's arithmetic: size_kb * 1024 bytes
MAX_BANDWIDTH_BYTES_PER_S = 1e12  # 1 TB/s: anything above is a unit mistake


def bandwidth_dir() -> Path:
    """The bundled bandwidth traces' folder (``rlscale/data/bandwidth``)."""
    return Path(str(resources.files("rlscale") / "data" / "bandwidth"))


def bundled_bandwidths() -> list[str]:
    """Names of the bundled bandwidth traces, sorted."""
    return sorted(p.stem for p in bandwidth_dir().glob("*.csv"))


@dataclass(frozen=True)
class BandwidthTrace:
    """A client's bandwidth, one value per second, repeated cyclically.

    Attributes:
        name: the bundled name or the CSV path as given.
        bytes_per_s: bandwidth in bytes per second, one value per second (> 0).
    """

    name: str
    bytes_per_s: np.ndarray = field(repr=False)

    def at(self, t_s: np.ndarray) -> np.ndarray:
        """The bandwidth (bytes/s) at times ``t_s``: row ``floor(t) mod rows``."""
        idx = np.floor(np.asarray(t_s, dtype=float)).astype(np.int64) % self.bytes_per_s.size
        return self.bytes_per_s[idx]


def resolve_bandwidth(name_or_path: str, base: Path | None = None) -> Path:
    """The CSV file a bundled name or a path means; a relative path is taken from ``base`` (a spec's folder).

    Raises:
        TraceError: neither a bundled name nor a CSV path.
    """
    key = str(name_or_path).strip()
    if is_safe_name(key) and (bandwidth_dir() / f"{key}.csv").exists():
        return bandwidth_dir() / f"{key}.csv"
    path = Path(key)
    if path.suffix.lower() == ".csv" or "/" in key or path.exists():
        return path if path.is_absolute() or base is None else base / path
    raise TraceError(
        f"unknown bandwidth trace {key!r}: not a bundled name ({', '.join(bundled_bandwidths())}) nor a CSV file"
    )


def load_bandwidth(name_or_path: str, base: Path | None = None) -> BandwidthTrace:
    """A bundled bandwidth trace by name, or a CSV by path (relative to ``base`` when given).

    Raises:
        TraceError: one line naming the file (and line): unknown name, unreadable or oversized file, no
            ``bandwidth_bytes_per_s`` column, a blank row, a value that is not a number > 0, no rows, too many rows.
    """
    path = resolve_bandwidth(name_or_path, base)
    text = read_text_limited(path, MAX_TRACE_BYTES, TraceError, "bandwidth trace")
    values: list[float] = []
    rows = per_second_column(
        path,
        text,
        BANDWIDTH_COLUMN,
        "one bandwidth value per second, in bytes per second",
        "a bandwidth trace has one row per second",
    )
    for line, raw in rows:
        try:
            value = float(raw)
        except ValueError:
            raise TraceError(f"{path}: line {line}: {BANDWIDTH_COLUMN} is not a number: {raw!r}") from None
        if not np.isfinite(value) or value <= 0:
            raise TraceError(f"{path}: line {line}: {BANDWIDTH_COLUMN} must be a finite number > 0, got {raw}")
        if value > MAX_BANDWIDTH_BYTES_PER_S:
            raise TraceError(
                f"{path}: line {line}: {BANDWIDTH_COLUMN} {raw} is above {MAX_BANDWIDTH_BYTES_PER_S:g} bytes/s; "
                "the column is in bytes per second"
            )
        values.append(value)
    if not values:
        raise TraceError(f"{path}: bandwidth trace has no rows")
    bundled = path.parent == bandwidth_dir() and path.stem == str(name_or_path).strip()
    return BandwidthTrace(name=path.stem if bundled else str(name_or_path), bytes_per_s=np.asarray(values, float))


def remaining_budget_s(sla_s: float, payload_kb: float, trace: BandwidthTrace, arrival_s: np.ndarray) -> np.ndarray:
    """Each request's remaining latency budget: ``sla_s - payload_kb * 1024 / bandwidth(arrival)`` (may be <= 0)."""
    return sla_s - payload_kb * BYTES_PER_KB / trace.at(arrival_s)
