"""The stage dispatcher: nginx's smooth weighted round-robin (rlscale.sim.dispatch)."""

from __future__ import annotations

import pytest

from rlscale.errors import RlscaleError
from rlscale.sim.dispatch import SmoothWeightedRoundRobin


def test_the_sequence_for_shares_70_30_over_ten_requests():
    rr = SmoothWeightedRoundRobin.of_shares(["r152", "r50"], [0.7, 0.3])
    picks = [rr.pick() for _ in range(10)]
    # current weights (x0.1): 7,3 -> A; 4,6 -> B; 11,-1 -> A; 8,2 -> A; 5,5 -> A (tie: the first); 2,8 -> B; ...
    assert picks == ["r152", "r50", "r152", "r152", "r152", "r50", "r152", "r152", "r50", "r152"]
    assert rr.current == [0, 0]  # a full period leaves it where it started


@pytest.mark.parametrize("shares", [(0.7, 0.3), (1 / 3, 2 / 3), (0.05, 0.95), (0.2, 0.3, 0.5)])
def test_every_prefix_follows_the_shares_within_a_request_or_two(shares):
    keys = [f"p{i}" for i in range(len(shares))]
    rr = SmoothWeightedRoundRobin.of_shares(keys, shares)
    counts = dict.fromkeys(keys, 0)
    bound = 1.0 if len(shares) == 2 else 2.0
    for n in range(1, 2001):
        counts[rr.pick()] += 1
        for k, s in zip(keys, shares, strict=True):
            assert abs(counts[k] - n * s) < bound, (n, counts)


def test_one_pool_takes_everything_and_bad_weights_are_refused():
    rr = SmoothWeightedRoundRobin.of_shares(["only"], [1.0])
    assert {rr.pick() for _ in range(5)} == {"only"}
    assert rr.share("only") == 1.0 and rr.share("other") == 0.0
    with pytest.raises(RlscaleError):
        SmoothWeightedRoundRobin(["a", "b"], [1, 0])
    with pytest.raises(RlscaleError):
        SmoothWeightedRoundRobin(["a", "b"], [1])
