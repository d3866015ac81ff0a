"""Tune IPA's headroom on training windows only; the result defines the ``ipa-tuned`` policy.

For each candidate headroom H, IPA (LSTM predictor, exact solver) runs on the same random windows of the
training split (Twitter days 0-13, damped like the evaluation windows); the H with the best mean score wins.
The evaluation windows (``bursty``, ``steady_low``, ``steady_high``, ``fluctuating``, ``infadapter``) are never
read. Writes ``experiments/data/ipa_tuned.json`` (one entry per pipeline, merged with what is there).

The runs (candidates x windows) are independent: each is a picklable `WindowRun` handed to the module-level
`run`, on an executor of `experiments.sweep` (``--executor serial|process|ray``, ``--workers N``); the windows are
drawn here, before any run, so the report is the same whatever the executor.

    python -m experiments.tune_headroom --pipeline video [--windows 8] [--seed 0] [--executor process]
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.sweep import OneLineParser, add_executor_flags, make_executor, run_sweep
from ilp_baseline.policy import ILPPolicy
from rlscale.errors import RlscaleError
from rlscale.lstm import LSTMPredictor
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import Trace, TrainingSampler

log = logging.getLogger(__name__)

CANDIDATES = (1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0)
TUNED_PATH = Path(__file__).resolve().parent / "data" / "ipa_tuned.json"
"""Where the tuned headroom of every pipeline is kept (read by the ``ipa-tuned`` policy, `rlscale.cli.registry`)."""


@dataclass(frozen=True)
class WindowRun:
    """One run of the sweep: IPA with headroom ``headroom`` on one training window; picklable (plain values).

    Attributes:
        pipeline: bundled name or spec path, as the caller hands it.
        window: the window's name (``train@START``).
        rps: the window itself, requests per second (damped), drawn by the caller: a worker never samples.
        headroom: the candidate headroom.
        seed: the episode's seed.
    """

    pipeline: str
    window: str
    rps: tuple[float, ...]
    headroom: float
    seed: int


_specs: dict[str, PipelineSpec] = {}
"""The specs of the sweep in progress: filled by `tune` for its own process and emptied after it (a spec file may
change between two sweeps); a worker process fills it as it goes (and ends with its sweep)."""


def run(item: WindowRun) -> dict[str, float]:
    """One run: ``{"score", "sla_violation_rate"}`` of the episode. Pure; module-level, so a worker process can
    import and call it (`experiments.sweep`)."""
    if item.pipeline not in _specs:
        _specs[item.pipeline] = load_spec(item.pipeline)
    spec = _specs[item.pipeline]
    trace = Trace(name=item.window, rps=np.asarray(item.rps, dtype=float))
    policy = ILPPolicy(spec, LSTMPredictor(), mode="ipa", solver="dp", headroom=item.headroom, name="ipa")
    record = run_episode(spec, trace, policy, seed=item.seed).record
    return {"score": float(record["score"]), "sla_violation_rate": float(record["sla_violation_rate"])}


def tune(
    pipeline: str,
    *,
    windows: int = 8,
    window_s: int = 1200,
    damping: int = 8,
    seed: int = 0,
    candidates: Sequence[float] = CANDIDATES,
    executor: str = "serial",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> dict:
    """Score every candidate headroom on the same training windows; return the report (best first).

    ``executor``, ``workers``, ``ray_address``: where the candidates x windows runs go (`experiments.sweep`); the
    report is the same whichever. ``progress``: a bar on stderr.

    Raises:
        RlscaleError: a bad pipeline, window, candidate list or executor setting (before any run).
    """
    if windows < 1:
        raise RlscaleError(f"--windows must be >= 1, got {windows}")
    if not candidates:
        raise RlscaleError("need at least one candidate headroom")
    sweeper = make_executor(executor, workers, ray_address)
    spec = load_spec(pipeline)
    sampler = TrainingSampler(np.random.default_rng(seed), window_s=window_s, damping=damping)
    traces = [sampler.sample() for _ in range(windows)]
    sample = [(t.name, tuple(np.asarray(t.rps, dtype=float).tolist())) for t in traces]
    items = [WindowRun(str(pipeline), name, rps, float(h), seed) for h in candidates for name, rps in sample]
    _specs.clear()
    _specs[str(pipeline)] = spec
    try:
        records = run_sweep(
            sweeper,
            run,
            items,
            progress=progress,
            what=f"{spec.name}: headroom",
            describe=lambda item: f"H={item.headroom:g} on {item.window}",
        )
    finally:
        _specs.clear()
    rows: list[dict[str, Any]] = []
    for c, h in enumerate(candidates):
        mine = records[c * windows : (c + 1) * windows]
        rows.append(
            {
                "headroom": h,
                "mean_score": float(np.mean([r["score"] for r in mine])),
                "mean_violation_rate": float(np.mean([r["sla_violation_rate"] for r in mine])),
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


def _read_table(path: Path) -> dict:
    """The tuned headrooms already in ``path`` (none when it does not exist).

    Raises:
        RlscaleError: ``path`` cannot be read or is not a JSON object.
    """
    if not path.exists():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RlscaleError(f"--out {path}: cannot read it to merge into: {exc}") from None
    if not isinstance(table, dict):
        raise RlscaleError(f"--out {path}: not a JSON object (one entry per pipeline)")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.tune_headroom", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video", help="bundled pipeline name or spec path (default video)")
    parser.add_argument("--windows", type=int, default=8, help="training windows per candidate (default 8)")
    parser.add_argument("--damping", type=int, default=8, help="divide training counts by this (IPA: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the window sampler (default 0)")
    parser.add_argument("--out", type=Path, default=TUNED_PATH, help="JSON file to merge the result into")
    add_executor_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        table = _read_table(args.out)  # before the runs: a file that cannot be merged into fails now
        report = tune(
            args.pipeline,
            windows=args.windows,
            damping=args.damping,
            seed=args.seed,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            progress=sys.stderr.isatty(),
        )
        table[load_spec(args.pipeline).name] = report
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(table, indent=2) + "\n")
        except OSError as exc:
            raise RlscaleError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
