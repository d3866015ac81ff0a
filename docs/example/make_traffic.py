"""Write ``traffic.csv``: two hours of a team's own traffic for the worked example (docs/walkthrough.md).

Synthetic, seeded, so the file is reproducible: a slow daytime rise from 8 to 18 requests per second, a
ten-minute burst to about 28 rps an hour in, and Poisson noise on every second.

    python docs/example/make_traffic.py            # rewrites docs/example/traffic.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def traffic(seconds: int = 7200, seed: int = 0) -> np.ndarray:
    """Requests arriving in each second."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds)
    mean = 8.0 + 10.0 * t / seconds + 2.0 * np.sin(2 * np.pi * t / 1800.0)
    mean[3600:4200] += 10.0  # the burst
    return rng.poisson(mean).astype(int)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "traffic.csv"
    out.write_text("rps\n" + "\n".join(str(v) for v in traffic()) + "\n")
    print(f"{out}: {len(traffic())} seconds")
