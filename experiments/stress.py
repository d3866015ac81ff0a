"""Out-of-distribution stress traces for the agent and the safety layer, and the comparison on them.

Writes ``bursty_x2.csv`` and ``fluctuating_x2.csv`` (IPA's windows with every count doubled: peaks of 68 rps,
twice what the agent trained on) and ``spikes.csv`` (steady_low with three +40 rps spikes of 60 s at 200, 500
and 900 s), then compares ``ppo``, ``ppo-raw``, ``ipa``, ``ipa-hold`` and ``oracle`` on them.

    python -m experiments.stress --out experiments/results/video-stress [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlscale.evaluate.compare import markdown_table, run_comparison
from rlscale.workload import load_trace


def write_traces(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    traces = {
        "bursty_x2": load_trace("bursty").rps * 2,
        "fluctuating_x2": load_trace("fluctuating").rps * 2,
    }
    spikes = load_trace("steady_low").rps.copy()
    for start in (200, 500, 900):
        spikes[start : start + 60] += 40
    traces["spikes"] = spikes
    paths = []
    for name, rps in traces.items():
        path = folder / f"{name}.csv"
        path.write_text("rps\n" + "\n".join(str(int(x)) for x in np.asarray(rps)) + "\n")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.stress", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/stress"))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    traces = [str(p) for p in write_traces(args.out / "traces")]
    policies = ["ppo", "ppo-raw", "ipa", "ipa-hold", "oracle"]
    comp = run_comparison(
        "video",
        traces,
        policies,
        make_policy="rlscale.policies.registry:make_policy",  # the CLI's registry, by name (imported by each run)
        seeds=args.seeds,
        out=args.out,
        timelines=False,
        overwrite=True,
    )  # a new stress run replaces the last one (its traces are rewritten above)
    print(markdown_table(comp, traces, policies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
