"""Tune IPA's headroom (or the HPA's target utilisation, or ``ipa-hold``'s headroom and δ) on training windows only;
the result defines the ``ipa-tuned`` (``hpa-tuned``, ``ipa-hold``) policy.

For each candidate headroom H, IPA (LSTM predictor, exact solver) runs on the same random windows of the
training traffic (by default the Twitter training split, days 0-13, damped like the evaluation windows; or the
user's CSV traces, ``traces``, their last ``validation_fraction`` left out as training leaves it out); the H with
the best mean score wins. With ``policy="hpa"`` the candidates are the HPA's target utilisations (`HPA_TARGETS`,
IPA's FA2-high variants as ``hpa`` runs them). With ``policy="ipa-hold"`` the candidates are (headroom, δ) pairs,
the grid `HOLD_HEADROOMS` x `HOLD_DELTAS` (δ in core-equivalents of objective, `ilp_baseline.policy.ILPPolicy`'s
``hold_delta``). The evaluation windows (``bursty``, ``steady_low``,
``steady_high``, ``fluctuating``, ``infadapter``) are never read.

The tuning file (``rlscale tune --out FILE``; this script's default: the bundled ``rlscale/data/ipa_tuned.json``,
`rlscale.policies.tunings.TUNED_PATH`, read there)
holds one entry per pipeline, merged with what is there: IPA's report at the entry's top level (``headroom``,
``windows``, ``sweep``...), the HPA's under its key ``hpa`` (``target``, ``windows``, ``sweep``...) and ``ipa-hold``'s
under its key ``ipa-hold`` (``headroom``, ``delta``, ``windows``, ``sweep``...).

The runs (candidates x windows) are independent: each is a picklable `WindowRun` handed to the module-level
`run`, on an executor of `rlscale.evaluate.sweep` (``--executor serial|process|ray``, ``--workers N``); the windows are
drawn here, before any run, so the report is the same whatever the executor.

    python -m rlscale.evaluate.tune_headroom --pipeline video [--policy hpa|ipa-hold] [--windows 8] [--seed 0]
        [--executor process]
    rlscale tune --pipeline video --out tuning.json    (the same, as a command)
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.hpa import HPAPolicy
from ilp_baseline.policy import ILPPolicy
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import OneLineParser, add_executor_flags, make_executor, run_sweep
from rlscale.inputs import MAX_SETTINGS_BYTES, read_json_limited
from rlscale.lstm import LSTMPredictor
from rlscale.model import rank_key
from rlscale.paths import atomic_write_text
from rlscale.policies.tunings import POLICIES, SUB_ENTRIES, TUNED_PATH
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import DEFAULT_VALIDATION_FRACTION, TWITTER, Trace, TrainingSampler, training_sources

log = logging.getLogger(__name__)

CANDIDATES = (1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0)
HPA_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9)
"""The HPA's candidate target utilisations (Kubernetes' default is 0.8)."""
HOLD_HEADROOMS = (0.9, 1.0, 1.1, 1.2, 1.3)
"""``ipa-hold``'s candidate headrooms."""
HOLD_DELTAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""``ipa-hold``'s candidate δ (core-equivalents of objective)."""


@dataclass(frozen=True)
class WindowRun:
    """One run of the sweep: IPA with headroom ``value`` (the HPA with target ``value``) on one training window;
    picklable (plain values).

    Attributes:
        pipeline: bundled name or spec path, as the caller hands it.
        window: the window's name (``train@START``).
        rps: the window itself, requests per second (damped), drawn by the caller: a worker never samples.
        value: the candidate headroom (``ipa``, ``ipa-hold``) or target utilisation (``hpa``).
        seed: the episode's seed.
        policy: ``ipa``, ``hpa`` or ``ipa-hold``.
        delta: ``ipa-hold``'s candidate δ (None for the others).
    """

    pipeline: str
    window: str
    rps: tuple[float, ...]
    value: float
    seed: int
    policy: str = "ipa"
    delta: float | None = None


_specs: dict[str, PipelineSpec] = {}
"""The specs of the sweep in progress: filled by `tune` for its own process and emptied after it (a spec file may
change between two sweeps); a worker process fills it as it goes (and ends with its sweep)."""


def run(item: WindowRun) -> dict[str, float]:
    """One run: ``{"score", "sla_violation_rate"}`` of the episode. Pure; module-level, so a worker process can
    import and call it (`rlscale.evaluate.sweep`)."""
    if item.pipeline not in _specs:
        _specs[item.pipeline] = load_spec(item.pipeline)
    spec = _specs[item.pipeline]
    trace = Trace(name=item.window, rps=np.asarray(item.rps, dtype=float))
    if item.policy == "hpa":
        policy = HPAPolicy(spec, target=item.value)
    else:
        policy = ILPPolicy(
            spec,
            LSTMPredictor(),
            mode="ipa",
            solver="dp",
            headroom=item.value,
            hold_delta=item.delta,
            name=item.policy,
        )
    record = run_episode(spec, trace, policy, seed=item.seed).record
    return {"score": float(record["score"]), "sla_violation_rate": float(record["sla_violation_rate"])}


def tune(
    pipeline: str,
    *,
    policy: str = "ipa",
    traces: str = TWITTER,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    windows: int = 8,
    window_s: int = 1200,
    damping: int = 8,
    seed: int = 0,
    candidates: Sequence[float] | Sequence[tuple[float, float]] | None = None,
    executor: str = "serial",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
    command: str | None = None,
) -> dict:
    """Score every candidate (IPA's headroom, the HPA's target, or ``ipa-hold``'s headroom and δ) on the same training
    windows; return the report.

    Args:
        pipeline: bundled name or spec path.
        policy: ``ipa`` (tunes ``headroom``), ``hpa`` (tunes ``target``) or ``ipa-hold`` (tunes ``headroom`` and
            ``delta``).
        traces: the training traffic, as ``rlscale train --traces``: ``twitter`` (all 14 days) and/or CSV traces
            (their last ``validation_fraction`` left out, as training leaves it out).
        validation_fraction: see ``traces``.
        windows: training windows per candidate.
        window_s: their length.
        damping: divides the Twitter split's counts (CSV traces are used as given).
        seed: seeds the window draws.
        candidates: the values tried (default `CANDIDATES` or `HPA_TARGETS`); for ``ipa-hold``, (headroom, δ) pairs
            (default every pair of `HOLD_HEADROOMS` x `HOLD_DELTAS`).
        executor: where the candidates x windows runs go (`rlscale.evaluate.sweep`, with ``workers``, ``ray_address``);
            the report is the same whichever.
        workers: see ``executor``.
        ray_address: see ``executor``.
        progress: a bar on stderr.
        command: the command line recorded in the report (default: this script's).

    Raises:
        RlscaleError: a bad pipeline, trace, window, candidate list or executor setting (before any run).
    """
    if policy not in POLICIES:
        raise RlscaleError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    key = POLICIES[policy]
    pairs = _candidates(policy, candidates)
    if windows < 1:
        raise RlscaleError(f"--windows must be >= 1, got {windows}")
    if not pairs:
        raise RlscaleError(f"need at least one candidate {key}")
    sweeper = make_executor(executor, workers, ray_address)
    spec = load_spec(pipeline)
    if traces == TWITTER:  # all 14 days, as the bundled tunings were made
        sampler = TrainingSampler(np.random.default_rng(seed), window_s=window_s, damping=damping)
    else:
        sources = training_sources(traces, window_s=window_s, damping=damping, validation_fraction=validation_fraction)
        sampler = TrainingSampler(np.random.default_rng(seed), window_s=window_s, damping=damping, sources=sources)
    drawn = [sampler.sample() for _ in range(windows)]
    sample = [(t.name, tuple(np.asarray(t.rps, dtype=float).tolist())) for t in drawn]
    items = [WindowRun(str(pipeline), name, rps, h, seed, policy, d) for h, d in pairs for name, rps in sample]
    _specs.clear()
    _specs[str(pipeline)] = spec
    try:
        records = run_sweep(
            sweeper,
            run,
            items,
            progress=progress,
            what=f"{spec.name}: {policy} {key}",
            describe=lambda item: f"{_candidate_text(key, item.value, item.delta)} on {item.window}",
        )
    finally:
        _specs.clear()
    rows: list[dict[str, Any]] = []
    for c, (h, d) in enumerate(pairs):
        mine = records[c * windows : (c + 1) * windows]
        rows.append(
            {
                key: h,
                **({"delta": d} if d is not None else {}),
                "mean_score": float(np.mean([r["score"] for r in mine])),
                "mean_violation_rate": float(np.mean([r["sla_violation_rate"] for r in mine])),
            }
        )
        log.info(
            "%s: score %.3f, violations %.3f%%",
            _candidate_text(key, h, d),
            rows[-1]["mean_score"],
            100 * rows[-1]["mean_violation_rate"],
        )
    # the spec's SLA mode ranks: priced by mean score; hard by mean violation rate first
    best = min(rows, key=lambda r: rank_key(spec.objective.sla_mode, r["mean_violation_rate"], r["mean_score"]))
    report: dict[str, Any] = {key: best[key], **({"delta": best["delta"]} if "delta" in best else {})}
    report["windows"] = [t.name for t in drawn]
    if traces != TWITTER:
        report["traces"] = traces
        report["validation_fraction"] = validation_fraction
    report.update({"window_s": window_s, "damping": damping, "seed": seed, "sweep": rows})
    flag = "" if policy == "ipa" else f" --policy {policy}"
    flag += f" --damping {damping}" if damping != 8 else ""
    report["command"] = command or (
        f"python -m rlscale.evaluate.tune_headroom --pipeline {pipeline}{flag} --windows {windows} --seed {seed}"
    )
    return report


def _candidates(policy: str, candidates: Sequence | None) -> list[tuple[float, float | None]]:
    """The (value, δ or None) pairs to try.

    Raises:
        RlscaleError: an ``ipa-hold`` candidate that is not a (headroom > 0, δ >= 0) pair of finite numbers.
    """
    if policy != "ipa-hold":
        values = candidates if candidates is not None else (HPA_TARGETS if policy == "hpa" else CANDIDATES)
        return [(float(v), None) for v in values]
    if candidates is None:
        candidates = [(h, d) for h in HOLD_HEADROOMS for d in HOLD_DELTAS]
    pairs = []
    for c in candidates:
        try:
            h, d = (float(x) for x in c)
        except (TypeError, ValueError):
            raise RlscaleError(f"an ipa-hold candidate is a (headroom, delta) pair, got {c!r}") from None
        if not (math.isfinite(h) and h > 0 and math.isfinite(d) and d >= 0):
            raise RlscaleError(f"an ipa-hold candidate needs headroom > 0 and delta >= 0, got {c!r}")
        pairs.append((h, d))
    return pairs


def _candidate_text(key: str, value: float, delta: float | None) -> str:
    return f"{key}={value:g}" + (f", delta={delta:g}" if delta is not None else "")


def merge(table: dict, name: str, policy: str, report: dict) -> dict:
    """``table`` (a tuning file's content) with ``report`` as pipeline ``name``'s tuning of ``policy``: IPA's at
    the entry's top level, the HPA's under ``hpa``, ``ipa-hold``'s under ``ipa-hold``; the other policies' tunings
    are kept."""
    entry = dict(table.get(name) or {})
    if policy in SUB_ENTRIES:
        entry[policy] = report
    else:
        entry = {**report, **{k: entry[k] for k in SUB_ENTRIES if k in entry}}
    return {**table, name: entry}


def read_table(path: Path) -> dict:
    """The tunings already in ``path``, to merge a new one into (none when it does not exist).

    Raises:
        RlscaleError: a folder, unreadable, or not a JSON object.
    """
    if path.is_dir():
        raise RlscaleError(f"--out {path}: is a folder; give a file path ending in .json")
    if not path.exists():
        return {}
    try:
        table = read_json_limited(path, MAX_SETTINGS_BYTES, RlscaleError, "tuning")
    except RlscaleError as exc:
        raise RlscaleError(f"--out {path}: cannot read it to merge into: {exc}") from None
    if not isinstance(table, dict):
        raise RlscaleError(f"--out {path}: not a JSON object (a tuning file holds one entry per pipeline)")
    return table


def write_table(path: Path, table: dict) -> None:
    """Write the tunings ``table`` to ``path`` (atomically; its folder created).

    Raises:
        RlscaleError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=2) + "\n")
    except OSError as exc:
        raise RlscaleError(f"--out {path}: cannot write: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m rlscale.evaluate.tune_headroom", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video", help="bundled pipeline name or spec path (default video)")
    parser.add_argument(
        "--policy",
        choices=tuple(POLICIES),
        default="ipa",
        help="tune ipa's headroom, hpa's target, or ipa-hold's headroom and delta",
    )
    parser.add_argument("--windows", type=int, default=8, help="training windows per candidate (default 8)")
    parser.add_argument("--damping", type=int, default=8, help="divide training counts by this (IPA: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the window sampler (default 0)")
    parser.add_argument("--out", type=Path, default=TUNED_PATH, help="JSON file to merge the result into")
    add_executor_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        table = read_table(args.out)  # before the runs: a file that cannot be merged into fails now
        report = tune(
            args.pipeline,
            policy=args.policy,
            windows=args.windows,
            damping=args.damping,
            seed=args.seed,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            progress=sys.stderr.isatty(),
        )
        write_table(args.out, merge(table, load_spec(args.pipeline).name, args.policy, report))
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
