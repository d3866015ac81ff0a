"""The request table: arrivals built from a trace with the generator handed in (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.sim.arrivals import arrival_times_s, request_table
from rlscale.spec import load_spec
from rlscale.workload import Trace


def test_even_spreading_is_ipas_load_generator():
    times, counts = arrival_times_s(np.array([2.0, 0.0, 4.0]), "even", np.random.default_rng(0))
    np.testing.assert_array_equal(counts, [2, 0, 4])
    np.testing.assert_allclose(times, [0.0, 0.5, 2.0, 2.25, 2.5, 2.75])


def test_even_draws_nothing_from_the_generator():
    rng = np.random.default_rng(7)
    arrival_times_s(np.full(10, 3.0), "even", rng)
    assert rng.random() == np.random.default_rng(7).random()


def test_poisson_is_deterministic_for_the_generator_and_sorted_per_second():
    rps = np.full(200, 5.0)
    a, ca = arrival_times_s(rps, "poisson", np.random.default_rng(3))
    b, cb = arrival_times_s(rps, "poisson", np.random.default_rng(3))
    c, _ = arrival_times_s(rps, "poisson", np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert a.size != c.size or not np.array_equal(a, c)
    assert np.all(np.diff(a) >= 0)
    np.testing.assert_array_equal(np.bincount(a.astype(int), minlength=200), ca)  # each in its own second
    assert ca.mean() == pytest.approx(5.0, rel=0.1)


def test_request_table_carries_the_drop_deadline():
    spec = load_spec("video")
    table = request_table(spec, Trace("t", np.full(5, 2.0)), np.random.default_rng(0))
    assert table.n_requests == 10
    np.testing.assert_allclose(table.drop_deadline_s - table.entry_s, spec.drop_limit_s)


def test_unknown_mode_is_refused():
    with pytest.raises(RlscaleError, match="arrivals"):
        arrival_times_s(np.ones(3), "bursty", np.random.default_rng(0))
