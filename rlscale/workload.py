"""Workload traces: requests per second, one value per second.

Bundled evaluation windows (never used for training):

- ``bursty``, ``steady_low``, ``steady_high``, ``fluctuating``: IPA's four 20-minute windows of the Twitter trace,
  damped by 8 exactly as IPA's load generator does (``int(raw / 8)``).
- ``infadapter``: InfAdapter's 21-minute window (day 15, minutes 82-103), undamped.
- ``sponge``: Sponge's benchmark load, a static 10 rps for 600 s (its final run's configuration).

The training split is the Twitter trace's days 0-13 (undamped), sampled in random windows by
`TrainingSampler`. Anywhere a trace name is accepted, a CSV path with an ``rps`` column (one row per second)
is accepted too.

Training and tuning on one's own traffic: `training_sources` turns a list such as ``twitter,ours.csv`` into
`TrafficSource` objects (``twitter``: the training split, damped; a CSV: used as given), each with its training
part and its held-out validation part (the last ``validation_fraction`` of a CSV, at least one window; the last
``validation_days`` of the training split); `TrainingSampler` draws windows from the training parts and
`source_validation_windows` takes fixed windows from the validation parts.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from rlscale.errors import TraceError
from rlscale.inputs import (
    MAX_TRACE_BYTES,
    MAX_TRACE_REQUESTS,
    MAX_TRACE_RPS,
    per_second_column,
    read_text_limited,
)
from rlscale.spec import data_dir

IPA_PATTERNS = ("bursty", "steady_low", "steady_high", "fluctuating")
EVAL_TRACES = (*IPA_PATTERNS, "infadapter", "sponge")
TRAINING_DAYS = 14
SECONDS_PER_DAY = 86_400
IPA_DAMPING = 8
TWITTER = "twitter"
"""The name of the bundled training split in a list of training traces (``--traces twitter,ours.csv``)."""
DEFAULT_VALIDATION_FRACTION = 0.15
WINDOW_S = 1200
"""The length of a training or validation window, in seconds: IPA's evaluation windows are 1200 s."""

_DESCRIPTIONS = {
    "bursty": "IPA bursty window, Twitter [1301160, 1302360), damped by 8",
    "steady_low": "IPA steady-low window, Twitter [1299600, 1300800), damped by 8",
    "steady_high": "IPA steady-high window, Twitter [1768800, 1769400) twice, damped by 8",
    "fluctuating": "IPA fluctuating window, Twitter [1301400, 1302000) + [1308600, 1309200), damped by 8",
    "infadapter": "InfAdapter evaluation window, Twitter day 15 minutes 82-103, undamped",
    "sponge": "Sponge's benchmark load: static 10 rps for 600 s (configs/final/dynainf.yaml)",
}


@dataclass(frozen=True)
class Trace:
    """A workload: ``rps[t]`` requests arrive during second ``t``.

    Attributes:
        name: bundled name, CSV path, or a sampler tag such as ``train@123456``.
        rps: requests per second, float64, non-negative.
        description: where it came from.
        load_scale: the factor its counts were multiplied by (`scale_trace`; 1: as recorded).
    """

    name: str
    rps: np.ndarray = field(repr=False)
    description: str = ""
    load_scale: float = 1.0

    @property
    def duration_s(self) -> int:
        return int(self.rps.size)

    @property
    def total_requests(self) -> int:
        return int(round(float(self.rps.sum())))

    @property
    def peak_rps(self) -> float:
        return float(self.rps.max()) if self.rps.size else 0.0

    @property
    def mean_rps(self) -> float:
        return float(self.rps.mean()) if self.rps.size else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "duration_s": self.duration_s,
            "requests": self.total_requests,
            "mean_rps": round(self.mean_rps, 3),
            "peak_rps": self.peak_rps,
            "description": self.description,
        }


@cache
def _eval_windows() -> dict[str, np.ndarray]:
    path = data_dir() / "traces" / "eval_windows.csv"
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            series.setdefault(row["pattern"], []).append((int(row["t_s"]), float(row["rps"])))
    return {name: np.array([v for _t, v in sorted(pts)], dtype=float) for name, pts in series.items()}


def bundled_traces() -> list[str]:
    """Names of the bundled evaluation traces."""
    return list(EVAL_TRACES)


def load_csv_trace(path: str | Path) -> Trace:
    """Read a CSV with an ``rps`` column (one row per second; other columns ignored; a UTF-8 BOM is fine).

    Raises:
        TraceError: missing or oversized file, no ``rps`` column, a blank row inside the trace (it would shift every
            later second), a non-numeric, negative, non-finite or implausibly large value, no rows, or more rows or
            requests than `rlscale.inputs` allows.
    """
    path = Path(path)
    text = read_text_limited(path, MAX_TRACE_BYTES, TraceError, "trace")
    values: list[float] = []
    rows = per_second_column(
        path, text, "rps", "need one rps value per second", "a trace has one row per second (write 0 for none)"
    )
    for line, raw in rows:
        try:
            value = float(raw)
        except ValueError:
            raise TraceError(f"{path}: line {line}: rps is not a number: {raw!r}") from None
        if not np.isfinite(value) or value < 0:
            raise TraceError(f"{path}: line {line}: rps must be a finite number >= 0, got {raw}")
        if value > MAX_TRACE_RPS:
            raise TraceError(f"{path}: line {line}: rps {raw} is above the limit of {MAX_TRACE_RPS:g} per second")
        values.append(value)
    if not values:
        raise TraceError(f"{path}: trace has no rows")
    rps = np.asarray(values, dtype=float)
    if rps.sum() > MAX_TRACE_REQUESTS:
        raise TraceError(
            f"{path}: {rps.sum():.3g} requests in all, above the simulator's limit of {MAX_TRACE_REQUESTS:,}; "
            "simulate a shorter window"
        )
    return Trace(name=str(path), rps=rps, description=f"CSV file {path}")


def load_trace(name_or_path: str | Path) -> Trace:
    """A bundled trace by name, or a CSV trace by path."""
    key = str(name_or_path)
    if key in EVAL_TRACES:
        return Trace(name=key, rps=_eval_windows()[key].copy(), description=_DESCRIPTIONS[key])
    path = Path(key)
    if path.suffix.lower() == ".csv" or path.exists() or "/" in key:
        return load_csv_trace(path)
    raise TraceError(f"unknown trace {key!r}: not a bundled name ({', '.join(EVAL_TRACES)}) nor a CSV file")


def scaled_name(name: str, factor: float) -> str:
    """A trace's name at load scale ``factor``: ``name`` itself at 1, else ``name@x<factor>`` (``bursty@x2``)."""
    return name if factor == 1 else f"{name}@x{factor:g}"


def scale_trace(trace: Trace, factor: float) -> Trace:
    """``trace`` with every second's count multiplied by ``factor`` and rounded half up to whole requests,
    ``floor(rps x factor + 0.5)`` (so a count of 1 at factor 0.5 stays 1, and the total is kept within half a
    request per second); named `scaled_name` (``bursty@x2``). At factor 1 the trace itself, unrounded.

    Raises:
        TraceError: ``factor`` is not a finite number > 0, or the scaled trace exceeds the per-second or total limits
            of `rlscale.inputs`.
    """
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not (math.isfinite(factor) and factor > 0):
        raise TraceError(f"load scale must be a finite number > 0, got {factor!r}")
    if factor == 1:
        return trace
    rps = np.floor(np.asarray(trace.rps, dtype=float) * factor + 0.5)
    name = scaled_name(trace.name, factor)
    if rps.size and rps.max() > MAX_TRACE_RPS:
        raise TraceError(f"{name}: {rps.max():g} requests in one second, above the limit of {MAX_TRACE_RPS:g}")
    if rps.sum() > MAX_TRACE_REQUESTS:
        raise TraceError(
            f"{name}: {rps.sum():.3g} requests in all, above the simulator's limit of {MAX_TRACE_REQUESTS:,}; use a "
            "smaller load scale or a shorter trace"
        )
    described = f"{trace.description}, counts x{factor:g} rounded half up" if trace.description else f"x{factor:g}"
    return Trace(name=name, rps=rps, description=described, load_scale=trace.load_scale * factor)


@cache
def training_split() -> np.ndarray:
    """The undamped Twitter training split, days 0-13: one request count per second (read-only view)."""
    with np.load(data_dir() / "traces" / "twitter_train_days00-13.npz") as npz:
        rps = npz["rps"].astype(float)
    rps.flags.writeable = False
    return rps


def _split_window(start: int, window_s: int, damping: int, tag: str = "train") -> Trace:
    return twitter_source(1, damping).window(start, window_s, tag)


def _check_window(window_s: int, damping: int, days: tuple[int, int]) -> None:
    if window_s < 1:
        raise TraceError(f"window_s must be >= 1, got {window_s}")
    if damping < 1:
        raise TraceError(f"damping must be >= 1, got {damping}")
    first, end = days
    if not 0 <= first < end <= TRAINING_DAYS:
        raise TraceError(f"days must be a range within 0..{TRAINING_DAYS} with first < end, got {first}..{end}")
    if window_s > (end - first) * SECONDS_PER_DAY:
        raise TraceError(f"window_s {window_s} is longer than days {first}..{end - 1} of the training split")


@dataclass(frozen=True)
class TrafficSource:
    """One trace that training windows are drawn from: its training part and its held-out validation part.

    Attributes:
        name: ``twitter`` (the bundled training split) or the CSV path as given.
        label: how its windows are named (``train@START`` for ``twitter``; ``FILE@START`` for a CSV).
        rps: its per-second counts before damping (read-only).
        damping: windows are ``floor(rps / damping)``: ``--damping`` for ``twitter``, 1 for a CSV (used as given).
        train_s: ``(first, end)``: training windows lie wholly within these seconds.
        validation_s: ``(first, end)``: the held-out seconds (``first == end``: none).
        variation_scale: the size of the synthetic variations' additive shifts and steps relative to those drawn on
            the Twitter split (1 for it; a CSV: its training part's mean load over the damped split's).
    """

    name: str
    label: str
    rps: np.ndarray = field(repr=False)
    damping: int
    train_s: tuple[int, int]
    validation_s: tuple[int, int]
    variation_scale: float = 1.0

    def window(self, start: int, window_s: int, tag: str | None = None) -> Trace:
        """The window of ``window_s`` seconds starting at second ``start``, damped."""
        tag = tag or self.label
        raw = self.rps[start : start + window_s]
        what = "training split" if self.name == TWITTER else f"CSV file {self.name}"
        damped = f", damped by {self.damping}" if self.damping != 1 or self.name == TWITTER else ""
        return Trace(
            name=f"{tag}@{start}",
            rps=np.floor(raw / self.damping) if self.damping != 1 else raw.copy(),
            description=f"{what} seconds [{start}, {start + window_s}){damped}",
        )


def twitter_source(
    window_s: int = WINDOW_S, damping: int = IPA_DAMPING, days: tuple[int, int] = (0, TRAINING_DAYS)
) -> TrafficSource:
    """The Twitter training split as a source: training windows within ``days``, the days after them held out.

    Raises:
        TraceError: a bad window, damping or day range.
    """
    _check_window(window_s, damping, days)
    split = training_split()
    end = min(int(days[1]) * SECONDS_PER_DAY, split.size)
    first = int(days[0]) * SECONDS_PER_DAY
    return TrafficSource(TWITTER, "train", split, int(damping), (first, end), (end, split.size))


@cache
def _twitter_damped_mean() -> float:
    return float(np.floor(training_split() / IPA_DAMPING).mean())


def parse_trace_list(text: str, what: str = "--traces") -> list[str]:
    """The names in a comma-separated list of traces (``twitter,ours.csv``), each once.

    Raises:
        TraceError: an empty list or a name listed twice.
    """
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise TraceError(f"{what}: expected a comma-separated list of traces, got {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TraceError(f"{what}: {', '.join(twice)} listed twice")
    return names


def training_sources(
    traces: str | Sequence[str] = TWITTER,
    *,
    window_s: int = WINDOW_S,
    damping: int = IPA_DAMPING,
    validation_days: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> list[TrafficSource]:
    """The sources of training windows: ``twitter`` (the bundled split, its last ``validation_days`` held out,
    damped by ``damping``) and CSV traces (``rps`` column, one row per second; the last ``validation_fraction`` held
    out, at least one window of it when the fraction is above 0; never damped).

    Raises:
        TraceError: an unreadable CSV, a bundled evaluation window named (never trained on), a trace shorter than a
            window plus its validation part, or bad settings.
    """
    names = parse_trace_list(traces) if isinstance(traces, str) else list(traces)
    if not (math.isfinite(validation_fraction) and 0 <= validation_fraction < 1):
        raise TraceError(f"--validation-fraction must be in [0, 1), got {validation_fraction}")
    if window_s < 1:
        raise TraceError(f"window_s must be >= 1, got {window_s}")
    sources: list[TrafficSource] = []
    for name in names:
        if name == TWITTER:
            days = (0, TRAINING_DAYS - validation_days)
            sources.append(twitter_source(window_s, damping, days))
            continue
        if name in EVAL_TRACES:
            raise TraceError(
                f"--traces {name}: a bundled evaluation window is never trained or tuned on; use twitter (the "
                "training split) or a CSV of your own traffic"
            )
        trace = load_trace(name)
        n = trace.duration_s
        held = max(math.ceil(validation_fraction * n), window_s) if validation_fraction > 0 else 0
        if n < window_s + held:
            part = f" plus its validation part ({held} s: the last {validation_fraction:g} of it, at least one window)"
            raise TraceError(
                f"{name}: {n} s of traffic is shorter than one training window ({window_s} s)"
                f"{part if held else ''}; record a longer trace, or lower --window-s"
                f"{' or --validation-fraction' if held else ''}"
            )
        rps = trace.rps.copy()
        rps.flags.writeable = False
        train_end = n - held
        scale = float(rps[:train_end].mean()) / _twitter_damped_mean()
        label = Path(name).name
        if any(s.label == label for s in sources):
            label = name
        sources.append(TrafficSource(name, label, rps, 1, (0, train_end), (train_end, n), scale))
    return sources


def peak_rps(source: TrafficSource) -> float:
    """The highest per-second load any window of ``source`` can hold (damped)."""
    return float(np.floor(source.rps.max() / source.damping)) if source.rps.size else 0.0


class TrainingSampler:
    """Random windows of training traffic, for training and for tuning on training data only: by default the
    Twitter training split (days 0-13), else the training parts of ``sources`` (`training_sources`).

    A window starts at a uniformly random second among every possible start of every source (a longer training
    part gives more windows); with the split alone the draws are those of the sampler before sources existed.

    Args:
        rng: the generator every draw comes from.
        window_s: window length in seconds (`WINDOW_S`, IPA's).
        damping: divide by this and floor, as IPA does for its evaluation windows (8); 1 keeps raw counts (the
            split only; ``sources`` carry their own).
        days: ``(first, end)``: windows lie wholly within days ``first .. end - 1`` (default: all 14 days). Training
            leaves the last day(s) out when they are kept for validation (`validation_windows`).
        sources: draw from these instead of the split's ``days``.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        window_s: int = WINDOW_S,
        damping: int = IPA_DAMPING,
        days: tuple[int, int] = (0, TRAINING_DAYS),
        sources: Sequence[TrafficSource] | None = None,
    ) -> None:
        _check_window(window_s, damping, days)
        self.rng = rng
        self.window_s = int(window_s)
        self.damping = int(damping)
        self.sources = list(sources) if sources is not None else [twitter_source(window_s, damping, days)]
        self.starts = []  # how many window starts each source offers
        for src in self.sources:
            first, end = src.train_s
            if end - first < self.window_s:
                raise TraceError(f"{src.name}: its training part ({end - first} s) cannot hold a {window_s} s window")
            self.starts.append(end - first - self.window_s + 1)
        self.first_s, self.end_s = self.sources[0].train_s

    def sample(self) -> Trace:
        """One window starting at a uniformly random second of the training parts."""
        return self.draw()[1]

    def draw(self) -> tuple[TrafficSource, Trace]:
        """`sample`, with the source the window came from."""
        first = self.sources[0].train_s[0]
        k = int(self.rng.integers(first, first + sum(self.starts))) - first  # the split alone: its draw as before
        for src, count in zip(self.sources, self.starts, strict=True):
            if k < count:
                return src, src.window(src.train_s[0] + k, self.window_s)
            k -= count
        raise AssertionError("unreachable")


def validation_windows(
    count: int, validation_days: int = 1, window_s: int = WINDOW_S, damping: int = IPA_DAMPING
) -> list[Trace]:
    """``count`` windows spread evenly over the last ``validation_days`` days of the training split (fixed: no
    seed), named ``val@{start}``: what training keeps out and selects models on (never the evaluation windows).

    Raises:
        TraceError: ``count`` < 1, or the days cannot hold a window.
    """
    if count < 1:
        raise TraceError(f"validation windows: count must be >= 1, got {count}")
    first = TRAINING_DAYS - validation_days
    _check_window(window_s, damping, (first, TRAINING_DAYS))
    lo, span = first * SECONDS_PER_DAY, training_split().size - first * SECONDS_PER_DAY
    # the centre of each of `count` equal slices: the day's cycle is covered, its last seconds (no data) are not
    starts = [
        min(max(lo, round(lo + (k + 0.5) * span / count - window_s / 2)), lo + span - window_s) for k in range(count)
    ]
    return [_split_window(int(s), window_s, damping, tag="val") for s in starts]


def source_validation_windows(sources: Sequence[TrafficSource], count: int, window_s: int = WINDOW_S) -> list[Trace]:
    """Up to ``count`` fixed windows (no seed) of every source's validation part, spread evenly over it, named
    ``val@START`` (the split, as `validation_windows`) or ``val:FILE@START``; a part holding fewer distinct
    windows gives each once; sources with no validation part give none.

    Raises:
        TraceError: ``count`` < 1.
    """
    if count < 1:
        raise TraceError(f"validation windows: count must be >= 1, got {count}")
    out: list[Trace] = []
    for src in sources:
        lo, end = src.validation_s
        span = end - lo
        if span < window_s:
            continue
        starts = [
            min(max(lo, round(lo + (k + 0.5) * span / count - window_s / 2)), end - window_s) for k in range(count)
        ]
        tag = "val" if src.name == TWITTER else f"val:{src.label}"
        out += [src.window(int(s), window_s, tag) for s in dict.fromkeys(starts)]
    return out
