"""Tune IPA's headroom on training windows only; the result defines the ``ipa-tuned`` policy.

For each candidate headroom H, IPA (LSTM predictor, exact solver) runs on the same random windows of the
training split (Twitter days 0-13, damped like the evaluation windows); the H with the best mean score wins.
The evaluation windows (``bursty``, ``steady_low``, ``steady_high``, ``fluctuating``, ``infadapter``) are never
read. Writes ``experiments/data/ipa_tuned.json`` (one entry per pipeline, merged with what is there).

    python -m experiments.tune_headroom --pipeline video [--windows 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ilp_baseline.policy import ILPPolicy
from rlscale.errors import RlscaleError
from rlscale.lstm import LSTMPredictor
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.workload import TrainingSampler

log = logging.getLogger(__name__)

CANDIDATES = (1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0)
TUNED_PATH = Path(__file__).resolve().parent / "data" / "ipa_tuned.json"
"""Where the tuned headroom of every pipeline is kept (read by the ``ipa-tuned`` policy, `rlscale.cli.registry`)."""


def tune(
    pipeline: str,
    *,
    windows: int = 8,
    window_s: int = 1200,
    damping: int = 8,
    seed: int = 0,
    candidates: Sequence[float] = CANDIDATES,
) -> dict:
    """Score every candidate headroom on the same training windows; return the report (best first)."""
    spec = load_spec(pipeline)
    sampler = TrainingSampler(np.random.default_rng(seed), window_s=window_s, damping=damping)
    traces = [sampler.sample() for _ in range(windows)]
    rows = []
    for h in candidates:
        scores, violations = [], []
        for trace in traces:
            policy = ILPPolicy(spec, LSTMPredictor(), mode="ipa", solver="dp", headroom=h, name="ipa")
            record = run_episode(spec, trace, policy, seed=seed).record
            scores.append(record["score"])
            violations.append(record["sla_violation_rate"])
        rows.append(
            {
                "headroom": h,
                "mean_score": float(np.mean(scores)),
                "mean_violation_rate": float(np.mean(violations)),
            }
        )
        log.info(
            "H=%.2f: score %.3f, violations %.3f%%", h, rows[-1]["mean_score"], 100 * rows[-1]["mean_violation_rate"]
        )
    best = max(rows, key=lambda r: r["mean_score"])
    return {
        "headroom": best["headroom"],
        "windows": [t.name for t in traces],
        "window_s": window_s,
        "damping": damping,
        "seed": seed,
        "sweep": rows,
        "command": f"python -m experiments.tune_headroom --pipeline {pipeline} --windows {windows} --seed {seed}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tune_headroom", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video", help="bundled pipeline name or spec path (default video)")
    parser.add_argument("--windows", type=int, default=8, help="training windows per candidate (default 8)")
    parser.add_argument("--damping", type=int, default=8, help="divide training counts by this (IPA: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the window sampler (default 0)")
    parser.add_argument("--out", type=Path, default=TUNED_PATH, help="JSON file to merge the result into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = tune(args.pipeline, windows=args.windows, damping=args.damping, seed=args.seed)
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = json.loads(args.out.read_text()) if args.out.exists() else {}
    table[load_spec(args.pipeline).name] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
