"""Load predictors: the load (rps) a planner should provision for in the coming interval.

Every predictor reads only ``state.arrival_rps`` (per-second arrivals observed so far), except ``oracle``, which
is handed the trace and reads the future: it is the upper bound, not a policy one could deploy. IPA's LSTM
predictor lives in ``agents/lstm.py`` (it has trained weights).
"""

from __future__ import annotations

import math

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.types import PipelineState
from rlscale.workload import Trace


def last_interval_peak_rps(state: PipelineState) -> float:
    """The highest per-second arrival count of the last interval (0 with no history): the safety layer's load
    floor and the reference of the agent's replica levels."""
    hist = state.arrival_rps
    n = max(1, int(math.ceil(state.interval_s)))
    return float(hist[-n:].max()) if hist.size else 0.0


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
