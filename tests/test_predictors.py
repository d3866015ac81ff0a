"""Load predictors: reactive (max of the last 10 s), EWMA of interval maxima, the oracle, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.predictors import (
    EWMAPredictor,
    MinutePeakPredictor,
    OraclePredictor,
    ReactivePredictor,
    last_interval_mean_rps,
)
from rlscale.types import PipelineConfig, PipelineState
from rlscale.workload import Trace


def _state(rps, time_s: float | None = None, interval_s: float = 10.0) -> PipelineState:
    history = np.asarray(rps, dtype=float)
    return PipelineState(
        time_s=float(history.size) if time_s is None else time_s,
        interval_s=interval_s,
        arrival_rps=history,
        config=PipelineConfig(()),
        last=None,
    )


def test_reactive_is_the_max_of_the_last_10_s():
    history = np.concatenate([[500.0, 400.0], np.arange(1.0, 11.0)])  # the spikes are 11 and 12 s old
    assert ReactivePredictor().predict(_state(history)) == 10.0
    history[-7] = 42.0  # a peak inside the window wins wherever it is
    assert ReactivePredictor().predict(_state(history)) == 42.0
    assert ReactivePredictor(window_s=12).predict(_state(history)) == 500.0


def test_reactive_with_less_history_than_its_window_uses_all_of_it():
    assert ReactivePredictor().predict(_state([3.0, 7.0, 5.0])) == 7.0


def test_ewma_follows_a_step_up_and_a_step_down():
    ewma = EWMAPredictor(alpha=0.5, step_s=10)
    low, high = np.full(60, 5.0), np.full(60, 20.0)
    # right after the step it overshoots (trend term), never undershoots the new level
    assert ewma.predict(_state(np.concatenate([low, high[:10]]))) >= 20.0
    settled_up = ewma.predict(_state(np.concatenate([low, high])))
    assert settled_up == pytest.approx(20.0, abs=0.5)
    settled_down = ewma.predict(_state(np.concatenate([high, low])))
    assert settled_down == pytest.approx(5.0, abs=0.5)
    assert ewma.predict(_state(np.concatenate([high, low[:10]]))) < 20.0


def test_ewma_weights_the_newest_interval_by_alpha():
    history = np.concatenate([np.full(10, 10.0), np.full(10, 4.0)])  # maxima [10, 4]: a fall, no trend term
    assert EWMAPredictor(alpha=0.25).predict(_state(history)) == pytest.approx(0.25 * 4 + 0.75 * 10)
    assert EWMAPredictor(alpha=1.0).predict(_state(history)) == pytest.approx(4.0)


def test_ewma_is_never_negative_on_random_histories():
    rng = np.random.default_rng(3)
    ewma = EWMAPredictor(alpha=0.7)
    for _ in range(200):
        history = rng.choice([0.0, 1.0, 50.0, 300.0], size=int(rng.integers(1, 200)))
        value = ewma.predict(_state(history))
        assert value >= 0.0
        assert value <= 2 * history.max() + 1e-9  # level <= max, trend <= max


def test_ewma_with_less_than_one_step_of_history_is_its_max():
    assert EWMAPredictor(step_s=10).predict(_state([1.0, 9.0, 2.0])) == 9.0


def test_oracle_returns_the_true_max_of_the_coming_interval():
    rps = np.arange(100, dtype=float) % 17  # 0..16, repeating
    oracle = OraclePredictor(Trace("t", rps))
    for t in (0.0, 10.0, 20.0, 30.0, 85.0):
        expected = rps[int(t) : int(t) + 10].max()
        assert oracle.predict(_state(rps[: int(t)], time_s=t)) == expected
    # seconds before the decision are history, not the future
    spike = rps.copy()
    spike[19] = 1000.0
    assert OraclePredictor(Trace("t", spike)).predict(_state(spike[:20], time_s=20.0)) == rps[20:30].max()
    assert OraclePredictor(Trace("t", spike)).predict(_state(spike[:10], time_s=10.0)) == 1000.0


def test_oracle_past_the_end_of_the_trace_repeats_the_last_observation():
    oracle = OraclePredictor(Trace("t", np.full(20, 3.0)))
    assert oracle.predict(_state([1.0, 6.0], time_s=40.0)) == 6.0


@pytest.mark.parametrize(
    "predictor",
    [ReactivePredictor(), EWMAPredictor(), OraclePredictor(Trace("t", np.zeros(0)))],
    ids=["reactive", "ewma", "oracle"],
)
def test_empty_history_predicts_zero(predictor):
    assert predictor.predict(_state([], time_s=0.0)) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReactivePredictor(window_s=0),
        lambda: ReactivePredictor(window_s=-5),
        lambda: EWMAPredictor(alpha=0.0),
        lambda: EWMAPredictor(alpha=-0.1),
        lambda: EWMAPredictor(alpha=1.5),
    ],
    ids=["reactive-window-0", "reactive-window-negative", "ewma-alpha-0", "ewma-alpha-negative", "ewma-alpha-1.5"],
)
def test_invalid_arguments_raise(make):
    with pytest.raises(RlscaleError):
        make()


@pytest.mark.parametrize("step_s", [0, -10])
def test_ewma_rejects_a_non_positive_step(step_s):
    with pytest.raises(RlscaleError):
        EWMAPredictor(step_s=step_s).predict(_state(np.ones(30)))


def test_minute_peaks_are_cut_from_the_oldest_second_of_the_last_10_minutes():
    p = MinutePeakPredictor()
    history = np.concatenate([np.full(100, 500.0), np.arange(600.0)])  # the 500s are older than 10 minutes
    assert p.minute_peaks(_state(history)).tolist() == [59.0 + 60 * k for k in range(10)]
    assert p.minute_peaks(_state(np.arange(130.0))).tolist() == [59.0, 119.0, 129.0]  # a short last chunk


def test_minute_peak_predictor_is_pandas_adjusted_ewm_until_10_minutes_then_the_long_history_predictor():
    peaks = np.array([10.0, 40.0, 20.0])
    history = np.repeat(peaks, 60)
    a = 2.0 / 11.0
    weights = (1 - a) ** np.array([2.0, 1.0, 0.0])  # oldest first; pandas' adjust=True
    assert MinutePeakPredictor().predict(_state(history)) == pytest.approx(weights @ peaks / weights.sum())

    class Fixed:
        name = "fixed"

        def predict(self, state):
            return 123.0

    p = MinutePeakPredictor(long_history=Fixed())
    assert p.predict(_state(history)) != 123.0  # 3 minutes: still the weighted mean
    assert p.predict(_state(np.ones(600))) == 123.0  # 10 minute peaks: the long-history predictor
    assert MinutePeakPredictor().predict(_state(np.ones(600))) == pytest.approx(1.0)  # none: the mean goes on
    assert MinutePeakPredictor().predict(_state([], time_s=0.0)) == 0.0
    with pytest.raises(RlscaleError):
        MinutePeakPredictor(minutes=0)


def test_last_interval_mean_reads_only_the_last_interval():
    assert last_interval_mean_rps(_state([100.0] * 5 + [2.0, 4.0], interval_s=2.0)) == 3.0
    assert last_interval_mean_rps(_state([], time_s=0.0)) == 0.0
