"""Sim-to-real, measured (issues 18 and 28): a real two-stage pipeline of the example models served by ``rlscale serve``
on this machine against the simulator, through `rlscale.calibrate` (what ``rlscale calibrate`` runs).

The pipeline (``--pair``): ``resnet-mlp`` (the pair of experiments/RESULTS.md section 14), stage ``detect`` =
``resnet-tiny-20`` (torch, `rlscale.examples.resnet`) then ``classify`` = ``mlp-512`` (numpy,
`rlscale.examples.mlp`); or ``mlp-mlp``, ``mlp-1024`` then ``mlp-256`` (numpy only). One replica a stage, one core
each, every replica one ``rlscale serve`` process on 127.0.0.1 pinned to its CPU, thread pools capped at one. Stage 2
gets a fixed input of its own shape once stage 1 has answered (the shapes do not chain, as a classifier takes a
detector's crop).

What this script adds to ``rlscale calibrate``: the spec. Its profile (the *uncalibrated* simulator's) is what
``rlscale profile`` writes in-process on this machine (``latency_s`` = p99 of the runs, six columns: a p99 used as a
fixed service time, the profile issue 28 names), measured here on each stage's CPU; SLA 1 s, nothing dropped before
30 s, batch timeout 0. Then the calibration: per configuration (``--load-fraction`` x ``--batches``), the simulator
with that profile and with the calibrated one (in-process distribution and run times, the serving overhead), and
``--repeats`` real runs on fresh servers; the table, the plot and the calibrated spec in ``--out``
(`rlscale.calibrate.run`). The markdown goes to stdout, logs to stderr.

``python -m experiments.sim_to_real --out experiments/results/sim-to-real-v3`` (6 configurations x 3 repeats of
120 s: about 45 minutes on 2 cores); ``--quick``: two configurations, 20 s windows, one repeat. Needs the serve extra
(MLServer, aiohttp), and torch for ``resnet-mlp``.

Until commit b08040d this script was the experiment itself (five fixed profiles, configurations named ``b1``,
``b4``, ``b8-t5ms``, ``b1-high``, ``b8-high``, flags ``--window-start``, ``--window-s``, ``--configs``); its
results folders (experiments/results/sim-to-real, -run1, -no-gc-freeze) are that version's output and keep its
format: ``results.md``, ``results.csv`` (one row per configuration, stage and profile), ``run.json``.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from rlscale.calibrate.calibrated import CALIBRATED_CORES
from rlscale.calibrate.measure import profile_in_process
from rlscale.calibrate.run import CalibrationInterrupted, profile_batches, run_calibration
from rlscale.calibrate.settings import build_settings
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import OneLineParser
from rlscale.interrupts import raise_on_signals, signal_name
from rlscale.paths import atomic_write_text, output_folder
from rlscale.profiles import PROFILE_COLUMNS
from rlscale.spec import load_spec
from rlscale.workload import load_trace

log = logging.getLogger("experiments.sim_to_real")

PAIRS = {
    "resnet-mlp": (
        ("detect", "rlscale.examples.resnet:build", "resnet-tiny-20"),
        ("classify", "rlscale.examples.mlp:build", "mlp-512"),
    ),
    "mlp-mlp": (
        ("first", "rlscale.examples.mlp:build", "mlp-1024"),
        ("second", "rlscale.examples.mlp:build", "mlp-256"),
    ),
}
"""The model pairs: (stage, factory, variant) per stage, in order."""
FRACTIONS = (0.6, 0.9)
FIT_FRACTIONS = (0.45, 0.75)
BATCHES = (1, 4, 8)
WINDOW = "360:480"
QUICK_WINDOW = "360:380"


def uncalibrated_spec(
    pair: str, batches: Sequence[int], out: Path, cpus: Sequence[int], repeats: int, warmup: int = 3
) -> Path:
    """``spec.yaml`` in ``out`` with each stage's in-process p99 profile (``profile-STAGE.csv``, what ``rlscale
    profile`` writes), measured on the CPU the stage's server will run on."""
    from rlscale.calibrate.settings import StageTarget

    stages = []
    for i, (name, factory, variant) in enumerate(PAIRS[pair]):
        cpu = cpus[i % len(cpus)]
        log.info("profiling %s (%s) in-process on CPU %d for the uncalibrated profile", name, variant, cpu)
        measured = profile_in_process(StageTarget(name, variant, factory, cpu=cpu), cpu, batches, warmup, repeats)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(PROFILE_COLUMNS)
        for m in measured:
            source = f"rlscale profile in-process p99 of {repeats} after {warmup} warm-up on CPU {cpu}"
            writer.writerow([variant, m.batch, CALIBRATED_CORES, f"{m.p99_s:.6g}", source, "measured"])
        atomic_write_text(out / f"profile-{name}.csv", text.getvalue())
        stages.append(
            {
                "name": name,
                "task": name,
                "profile": f"profile-{name}.csv",
                "batch_sizes": sorted(set(batches)),
                "cores": [CALIBRATED_CORES],
                "min_replicas": 1,
                "max_replicas": 1,
                "variants": [{"name": variant, "accuracy": 0.5, "startup_s": 0.0}],
            }
        )
    doc = {
        "name": f"sim-to-real-{pair}",
        "description": f"{' -> '.join(v for _, _, v in PAIRS[pair])} on this machine; in-process p99 profile",
        "sla_s": 1.0,
        "drop_limit_s": 30.0,
        "interval_s": 10.0,
        "batch_timeout_s": 0.0,
        "core_budget": len(stages),
        "objective": {"alpha": 1.0, "beta": 0.01, "gamma": 0.0, "accuracy_method": "product"},
        "stages": stages,
    }
    return atomic_write_text(out / "spec.yaml", yaml.safe_dump(doc, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.sim_to_real", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/sim-to-real", help="output folder (default out/sim-to-real)")
    parser.add_argument("--pair", choices=sorted(PAIRS), default="resnet-mlp", help="the model pair (resnet-mlp)")
    parser.add_argument("--trace", default="bursty", help="bundled trace or CSV the window is cut from (bursty)")
    parser.add_argument("--window", help=f"the trace's seconds START:END (default {WINDOW}; --quick {QUICK_WINDOW})")
    parser.add_argument("--load-fraction", default=",".join(map(str, FRACTIONS)), help="peaks as fractions (0.6,0.9)")
    parser.add_argument(
        "--fit-load-fraction", default=",".join(map(str, FIT_FRACTIONS)), help="fit runs' peaks (0.45,0.75; none)"
    )
    parser.add_argument(
        "--fit-mode",
        choices=("overhead", "off-core", "on-core"),
        default="overhead",
        help="what the fit fits besides the delay and jitter (rlscale calibrate --fit-mode; default overhead)",
    )
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (1,4,8)")
    parser.add_argument("--repeats", type=int, help="real runs per configuration (default 3; --quick 1)")
    parser.add_argument("--profile-repeats", type=int, default=100, help="timed runs per profile point (100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals and the simulator (0)")
    parser.add_argument("--capacity-rps", type=float, help="scale the loads to this capacity instead of the measured")
    parser.add_argument("--quick", action="store_true", help="two configurations, a 20 s window, one repeat")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        fractions = [float(f) for f in args.load_fraction.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
        if args.quick:
            fractions, batches = fractions[:1], sorted({batches[0], batches[-1]})
        repeats = args.repeats or (1 if args.quick else 3)
        out = output_folder(Path(args.out))
        from rlscale.calibrate.settings import usable_cpus

        cpus = usable_cpus()
        spec_path = uncalibrated_spec(args.pair, profile_batches(max(batches), ()), out, cpus, args.profile_repeats)
        settings = build_settings(
            spec=load_spec(spec_path),
            models=[f"{name}={factory}" for name, factory, _ in PAIRS[args.pair]],
            urls=[],
            trace=load_trace(args.trace),
            window=args.window or (QUICK_WINDOW if args.quick else WINDOW),
            fractions=fractions,
            batches=batches,
            fit_fractions=()
            if args.fit_load_fraction == "none"
            else tuple(float(f) for f in args.fit_load_fraction.split(",")),
            fit_mode=args.fit_mode,
            out=out,
            cpus=cpus,
            repeats=repeats,
            seed=args.seed,
            profile_repeats=args.profile_repeats,
            capacity_rps=args.capacity_rps,
            spec_arg=str(spec_path),
        )
        with raise_on_signals():
            run_calibration(settings)
        print((out / "results.md").read_text())
    except CalibrationInterrupted as exc:
        print(
            f"interrupted by {signal_name(exc.signum)}: {exc.finished} of {exc.total} configurations", file=sys.stderr
        )
        return exc.exit_code
    except (RlscaleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
