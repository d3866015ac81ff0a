"""A stage's dispatcher: which pool each arriving request goes to (DESIGN.md section 4).

Smooth weighted round-robin, nginx's algorithm (InfAdapter's dispatcher): per pick, every pool's current weight
grows by its weight, the pool with the largest current weight is picked (ties: the first in order) and the total
weight is subtracted from it. Deterministic, and smooth: after any n picks, every pool has been picked within one
request of ``n * weight / total`` times (for two pools; within a few for more), so each interval's split follows
the shares as closely as whole requests allow.

Weights are integers (a share times `WEIGHT_SCALE`, rounded), so the sequence is exact: floating-point shares
would drift and break ties differently from one share to the next.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlscale.errors import RlscaleError

WEIGHT_SCALE = 1_000_000


def share_weight(share: float) -> int:
    """A share as an integer weight, at least 1 (a pool with a share > 0 gets requests)."""
    return max(1, round(share * WEIGHT_SCALE))


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over ``keys`` with integer ``weights`` (> 0).

    Args:
        keys: the pools, in tie-break order.
        weights: one positive integer weight per key.
    """

    def __init__(self, keys: Sequence[str], weights: Sequence[int]) -> None:
        if len(keys) != len(weights) or not keys:
            raise RlscaleError(f"dispatcher needs one weight per pool, got {list(keys)} and {list(weights)}")
        if any(w <= 0 for w in weights):
            raise RlscaleError(f"dispatcher weights must be > 0, got {list(weights)}")
        self.keys = tuple(keys)
        self.weights = tuple(int(w) for w in weights)
        self.total = sum(self.weights)
        self.current = [0] * len(self.keys)

    @classmethod
    def of_shares(cls, keys: Sequence[str], shares: Sequence[float]) -> SmoothWeightedRoundRobin:
        """A dispatcher whose weights are ``shares`` (`share_weight`)."""
        return cls(keys, [share_weight(s) for s in shares])

    def share(self, key: str) -> float:
        """The fraction of requests ``key`` receives (0 if it is not one of the pools)."""
        return self.weights[self.keys.index(key)] / self.total if key in self.keys else 0.0

    def pick_index(self) -> int:
        """The index of the next request's pool."""
        current, best = self.current, 0
        for i, w in enumerate(self.weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return best

    def pick(self) -> str:
        """The next request's pool."""
        return self.keys[self.pick_index()]
