"""Load predictors: the load (rps) a planner should provision for in the coming interval.

Every predictor reads only ``state.arrival_rps`` (per-second arrivals observed so far), except ``oracle``, which
is handed the trace and reads the future: it is the upper bound, not a policy one could deploy. IPA's LSTM
predictor lives in ``agents/lstm.py`` (it has trained weights).
"""

from __future__ import annotations

import math

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.interfaces import Predictor
from rlscale.types import PipelineState
from rlscale.workload import Trace


def last_interval_rps(state: PipelineState) -> np.ndarray:
    """The per-second arrival counts of the last interval (the history's last ``ceil(interval_s)`` seconds)."""
    return state.arrival_rps[-max(1, int(math.ceil(state.interval_s))) :]


def last_interval_peak_rps(state: PipelineState) -> float:
    """The highest per-second arrival count of the last interval (0 with no history): the safety layer's load
    floor and the reference of the agent's replica levels."""
    hist = last_interval_rps(state)
    return float(hist.max()) if hist.size else 0.0


def last_interval_mean_rps(state: PipelineState) -> float:
    """The mean per-second arrival count of the last interval (0 with no history): the safety layer's ``drain``
    floor."""
    hist = last_interval_rps(state)
    return float(hist.mean()) if hist.size else 0.0


class ReactivePredictor:
    """The maximum per-second load of the last ``window_s`` seconds (IPA's reactive baseline)."""

    name = "reactive"

    def __init__(self, window_s: int = 10) -> None:
        if window_s < 1:
            raise RlscaleError(f"window_s must be >= 1, got {window_s}")
        self.window_s = int(window_s)

    def predict(self, state: PipelineState) -> float:
        hist = state.arrival_rps
        return float(hist[-self.window_s :].max()) if hist.size else 0.0


class EWMAPredictor:
    """Exponentially weighted moving average of per-interval maxima, plus the latest rise (a trend term).

    Args:
        alpha: weight of the newest interval's maximum.
        step_s: aggregation step (the adaptation interval).
    """

    name = "ewma"

    def __init__(self, alpha: float = 0.5, step_s: int = 10) -> None:
        if not 0 < alpha <= 1:
            raise RlscaleError(f"alpha must be in (0, 1], got {alpha}")
        if int(step_s) < 1:
            raise RlscaleError(f"step_s must be >= 1, got {step_s}")
        self.alpha = alpha
        self.step_s = int(step_s)

    def predict(self, state: PipelineState) -> float:
        hist = state.arrival_rps
        if hist.size == 0:
            return 0.0
        n = hist.size // self.step_s
        if n == 0:
            return float(hist.max())
        maxima = hist[hist.size - n * self.step_s :].reshape(n, self.step_s).max(axis=1)
        level = float(maxima[0])
        for m in maxima[1:]:
            level = self.alpha * float(m) + (1 - self.alpha) * level
        rise = float(maxima[-1] - maxima[-2]) if maxima.size > 1 else 0.0
        return max(0.0, level + max(0.0, rise))


class MinutePeakPredictor:
    """InfAdapter's load estimate: the peaks of the last 10 minutes, one per minute, read forward.

    With fewer than ``minutes`` minute peaks (the first 10 minutes of history) InfAdapter predicts their
    exponentially weighted mean (pandas ``ewm(span=10).mean()``, its last value); after that, its LSTM's next-minute
    peak. InfAdapter's trained LSTM is not public (``lstm_saved_model`` is not in its repository), so the long-history
    branch asks ``long_history`` instead (the registry passes IPA's LSTM, `rlscale.lstm.LSTMPredictor`, trained on
    the same Twitter trace), or keeps the weighted mean when it is None. InfAdapter's +10% margin is the policy's
    (``headroom``), not the predictor's.

    Minute peaks are cut as InfAdapter cuts its 600 s Prometheus range: 60 s chunks from the oldest second kept,
    the last one possibly shorter.
    """

    name = "minute-peak"

    def __init__(self, long_history: Predictor | None = None, minutes: int = 10, span: int = 10) -> None:
        if int(minutes) < 1 or int(span) < 1:
            raise RlscaleError(f"minutes and span must be >= 1, got {minutes}, {span}")
        self.long_history = long_history
        self.minutes = int(minutes)
        self.span = int(span)

    def minute_peaks(self, state: PipelineState) -> np.ndarray:
        hist = np.asarray(state.arrival_rps, dtype=float)[-60 * self.minutes :]
        return np.array([hist[i : i + 60].max() for i in range(0, hist.size, 60)])

    def predict(self, state: PipelineState) -> float:
        peaks = self.minute_peaks(state)
        if peaks.size == 0:
            return 0.0
        if peaks.size >= self.minutes and self.long_history is not None:
            return float(self.long_history.predict(state))
        # pandas' adjusted EWM: weights (1 - a)^k, newest k = 0, normalised; a = 2 / (span + 1)
        decay = 1.0 - 2.0 / (self.span + 1.0)
        weights = decay ** np.arange(peaks.size)[::-1]
        return float(np.dot(weights, peaks) / weights.sum())


class OraclePredictor:
    """The true maximum per-second load of the coming interval (reads the trace: an upper bound only)."""

    name = "oracle"

    def __init__(self, trace: Trace) -> None:
        self.rps = trace.rps

    def predict(self, state: PipelineState) -> float:
        start = int(math.floor(state.time_s + 1e-9))
        window = self.rps[start : start + int(math.ceil(state.interval_s))]
        if window.size == 0:
            return float(state.arrival_rps[-1]) if state.arrival_rps.size else 0.0
        return float(np.max(window))
