"""A curriculum against the IPA planner, after Genet (Xia et al., SIGCOMM'22): train more often where the agent
trails a rule-based baseline most.

The training distribution's two knobs the agent must generalise over, the weight ratio alpha/beta and the load
scale, are cut into log-spaced bins (`Curriculum.ratio_bins` x `Curriculum.scale_bins`). After every training
episode the environment runs IPA's planner (LSTM prediction, IPA's headroom) on the same window, weights, load and
arrival seed and reports the *gap*: IPA's mean interval score minus the agent's, in units of beta (cores). Each bin
keeps an exponential average of its gaps. A new episode draws its bin with probability ``uniform`` uniformly, else
in proportion to ``exp(gap / temperature)`` over the bins (bins never visited count with the largest gap seen,
at least 0, so every bin is tried), then its ratio and scale log-uniform within the bin.

The curriculum lives in the environment's process; with ``--vec-env dummy`` (the default) the training's
environments share one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Curriculum:
    """Bins of (alpha/beta, load scale) sampled by how far the agent trails IPA in each.

    Attributes:
        ratio_range: alpha/beta range.
        scale_range: load-scale range.
        ratio_bins: bins of alpha/beta (log-spaced).
        scale_bins: bins of load scale (log-spaced).
        uniform: share of episodes drawn uniformly over the bins.
        temperature: softness of the preference for large gaps (cores).
        smoothing: weight of a new gap in a bin's average.
        gaps: per bin, the averaged gap (NaN: not visited yet).
        visits: per bin, episodes reported.
    """

    ratio_range: tuple[float, float]
    scale_range: tuple[float, float]
    ratio_bins: int = 4
    scale_bins: int = 4
    uniform: float = 0.3
    temperature: float = 0.5
    smoothing: float = 0.2
    gaps: np.ndarray = field(init=False)
    visits: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.gaps = np.full((self.ratio_bins, self.scale_bins), np.nan)
        self.visits = np.zeros((self.ratio_bins, self.scale_bins), dtype=np.int64)

    def _edges(self, lo: float, hi: float, n: int) -> np.ndarray:
        return np.exp(np.linspace(math.log(lo), math.log(hi), n + 1))

    def probabilities(self) -> np.ndarray:
        """Each bin's chance of being drawn next (flattened ratio-major)."""
        gaps = self.gaps.ravel()
        seen = np.isfinite(gaps)
        top = max(float(gaps[seen].max()), 0.0) if seen.any() else 0.0
        filled = np.where(seen, gaps, top)
        weights = np.exp((filled - filled.max()) / self.temperature)
        n = gaps.size
        return self.uniform / n + (1.0 - self.uniform) * weights / weights.sum()

    def draw(self, rng: np.random.Generator) -> tuple[tuple[int, int], float, float]:
        """``((ratio bin, scale bin), alpha/beta, load scale)`` for the next episode."""
        k = int(rng.choice(self.gaps.size, p=self.probabilities()))
        i, j = divmod(k, self.scale_bins)
        r_edges = self._edges(*self.ratio_range, self.ratio_bins)
        s_edges = self._edges(*self.scale_range, self.scale_bins)
        ratio = float(np.exp(rng.uniform(math.log(r_edges[i]), math.log(r_edges[i + 1]))))
        scale = float(np.exp(rng.uniform(math.log(s_edges[j]), math.log(s_edges[j + 1]))))
        return (i, j), ratio, scale

    def report(self, bin_: tuple[int, int], gap: float) -> None:
        """One episode's gap (IPA's mean score minus the agent's, in cores) in its bin; a non-finite gap is no data."""
        if not math.isfinite(gap):
            return
        old = self.gaps[bin_]
        self.gaps[bin_] = gap if not math.isfinite(old) else (1 - self.smoothing) * old + self.smoothing * gap
        self.visits[bin_] += 1

    def summary(self) -> dict:
        """The bins' averaged gaps and visits, for the run's record."""
        return {
            "ratio_edges": [round(float(x), 3) for x in self._edges(*self.ratio_range, self.ratio_bins)],
            "scale_edges": [round(float(x), 3) for x in self._edges(*self.scale_range, self.scale_bins)],
            "gaps": [[None if not math.isfinite(g) else round(float(g), 3) for g in row] for row in self.gaps],
            "visits": self.visits.tolist(),
        }
