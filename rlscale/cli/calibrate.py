"""``rlscale calibrate``: the simulator against real serving of a spec's stages on this machine (`rlscale.calibrate`,
DESIGN.md section 11): a sim/real table in BLIS's format, a plot, and the calibrated profile and spec.

SIGINT/SIGTERM stop it with the finished configurations written (exit 130/143); bad input is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlscale.cli.args import add_json, add_set, float_in, float_list_in, int_in, int_list_in, load_spec
from rlscale.cli.output import emit_json

MAX_ITEMS = 16
"""At most this many load fractions or batch sizes."""


def register(sub) -> None:
    from rlscale.calibrate.settings import (
        DEFAULT_BATCHES,
        DEFAULT_FIT_FRACTIONS,
        DEFAULT_FRACTIONS,
        DEFAULT_PROFILE_REPEATS,
        DEFAULT_REPEATS,
        DEFAULT_WINDOW,
        FIT_MODES,
        MAX_BATCH,
        MAX_LOAD_FRACTION,
        MAX_REPEATS,
    )

    p = sub.add_parser(
        "calibrate",
        help="the simulator against real serving of a spec's stages: sim/real table, plot, calibrated profile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve each stage of a spec with rlscale serve on its own CPU (stages share CPUs, and say so, when they outnumber
them), profile each stage in-process and served (the serving overhead: the server's CPU a request beyond the
model), replay a trace window open loop with the simulator's own arrivals, run the simulator on the same arrivals
with the spec's profile and with the calibrated ones, and write to --out a table in BLIS's format (mean, p50, p90,
p99 per stage and end to end, throughput, violation rate at the spec's SLA, sim/real ratios, the band over
repeats) as results.csv and results.md, calibrate.json (the --json document), sim_vs_real.png, the calibrated
profiles and spec (spec-calibrated.yaml). Before the configurations, fit runs (--fit-load-fraction at batch 1,
the highest also at the largest batch; arrivals of another seed) fit each stage's delay and jitter off its core, so
that the configurations test the calibrated simulator on runs the fit did not see. One configuration per load fraction
x batch size: every stage one replica of one core at that batch (the spec's batch timeout), the window's peak that
fraction of the bottleneck's capacity at batch 1 (1 / the largest served p50 of one item). Real figures are the
median over --repeats runs on freshly started servers, with their [min, max] band. Needs the serve extra
(MLServer, aiohttp).""",
        epilog="""\
examples:
  rlscale calibrate --spec my-pipeline.yaml --model mymodels:build --trace bursty --window 360:420 --out out/cal
  rlscale calibrate --spec p.yaml --model detect=models.det:build --model classify=models.cls:build \\
      --trace traffic.csv --load-fraction 0.5,0.9 --batches 1,8 --repeats 5 --out out/cal --write-spec cal.yaml
  rlscale calibrate --spec p.yaml --model first=m:build --url second=http://10.0.0.5:8080 --trace bursty \\
      --out out/cal --json""",
    )
    p.add_argument("--spec", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument(
        "--model",
        action="extend",
        nargs="+",
        default=[],
        metavar="[STAGE=]MODULE:FUNCTION",
        help="a stage's model factory (FUNCTION(variant) returns (model, make_batch), as for rlscale serve and "
        "profile); calibrate serves it. Without STAGE=, factories go to the stages no flag named, in the spec's "
        "order; one serves them all",
    )
    p.add_argument(
        "--url",
        action="extend",
        nargs="+",
        default=[],
        metavar="STAGE=URL",
        help="a stage served by a server you run (http://HOST:PORT, Open Inference Protocol; the model's name is "
        "the stage's unless the URL ends in /v2/models/NAME): calibrate starts no server for it and its own batch "
        "settings apply; with --model for the same stage the model is also profiled alone",
    )
    p.add_argument(
        "--variant",
        action="extend",
        nargs="+",
        default=[],
        metavar="STAGE=VARIANT",
        help="the variant a stage is calibrated with (default: its first variant in the spec that its factory builds)",
    )
    p.add_argument("--trace", required=True, metavar="NAME|FILE", help="bundled trace or CSV the window is cut from")
    p.add_argument(
        "--window",
        default=DEFAULT_WINDOW,
        metavar="START:END",
        help=f"the trace's seconds [START, END) to replay (default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--load-fraction",
        type=float_list_in(0.0, MAX_LOAD_FRACTION, max_items=MAX_ITEMS, exclusive_low=True),
        default=list(DEFAULT_FRACTIONS),
        metavar="F1,F2",
        help=f"the window's peak as fractions of the bottleneck's capacity at batch 1, each in (0, "
        f"{MAX_LOAD_FRACTION:g}] (default {','.join(map(str, DEFAULT_FRACTIONS))})",
    )
    p.add_argument(
        "--fit-load-fraction",
        type=_fit_fractions(MAX_LOAD_FRACTION),
        default=list(DEFAULT_FIT_FRACTIONS),
        metavar="F1,F2|none",
        help="loads of the fit runs (batch 1, and the highest also at the largest batch; arrivals of seed + 1; "
        "--repeats each), to which each stage's overhead on its core and delay and jitter off it are fitted; "
        "fractions as --load-fraction's, best apart from them, or none for no fit (default "
        f"{','.join(map(str, DEFAULT_FIT_FRACTIONS))})",
    )
    p.add_argument(
        "--fit-mode",
        choices=FIT_MODES,
        default=FIT_MODES[0],
        help="what the fit fits besides the delay and jitter: overhead, the overhead on the core between the one "
        "measured with 8 in flight and the server's CPU a request in the fit runs (default); off-core, nothing "
        "(the measured overhead); on-core, the overhead and a per-batch cost on a grid from 0 (an ablation)",
    )
    p.add_argument(
        "--batches",
        type=int_list_in(1, MAX_BATCH, max_items=MAX_ITEMS),
        default=list(DEFAULT_BATCHES),
        metavar="B1,B2",
        help=f"batch sizes, every stage's in a configuration (default {','.join(map(str, DEFAULT_BATCHES))})",
    )
    p.add_argument(
        "--repeats",
        type=int_in(1, MAX_REPEATS),
        default=DEFAULT_REPEATS,
        metavar="N",
        help=f"real runs per configuration, each on freshly started servers (default {DEFAULT_REPEATS})",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files in it are replaced)")
    p.add_argument(
        "--write-spec",
        metavar="FILE.yaml",
        help="also write the spec with the calibrated profiles there (each stage's profile CSV and run times "
        "beside it, FILE-STAGE.csv)",
    )
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="seed of the arrivals and simulator (0)")
    p.add_argument(
        "--arrivals",
        choices=("poisson", "even"),
        default="poisson",
        help="the simulator's arrival process the load follows (default poisson)",
    )
    p.add_argument(
        "--profile-repeats",
        type=int_in(1, 100_000),
        default=DEFAULT_PROFILE_REPEATS,
        metavar="N",
        help=f"timed runs per profile point (default {DEFAULT_PROFILE_REPEATS})",
    )
    p.add_argument(
        "--capacity-rps",
        type=float_in(0.0, 1e6, exclusive_low=True),
        metavar="RPS",
        help="scale the loads to this bottleneck capacity (requests/s) instead of the measured one",
    )
    add_set(p)
    add_json(p)
    p.set_defaults(func=cmd_calibrate)


def _fit_fractions(high: float):
    """``--fit-load-fraction``: ``none``, or the load fractions' list."""
    fractions = float_list_in(0.0, high, max_items=MAX_ITEMS, exclusive_low=True)

    def parse(text: str) -> list[float]:
        return [] if text.strip().lower() == "none" else fractions(text)

    return parse


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rlscale.calibrate.run import CalibrationInterrupted, run_calibration, total_steps
    from rlscale.calibrate.settings import build_settings
    from rlscale.evaluate.sweep import counting_bar
    from rlscale.interrupts import raise_on_signals, signal_name
    from rlscale.workload import load_trace

    spec = load_spec(args.spec, args)
    settings = build_settings(
        spec=spec,
        models=args.model,
        urls=args.url,
        variants=args.variant,
        trace=load_trace(args.trace),
        window=args.window,
        fractions=args.load_fraction,
        batches=args.batches,
        fit_fractions=tuple(args.fit_load_fraction),
        fit_mode=args.fit_mode,
        out=Path(args.out),
        repeats=args.repeats,
        seed=args.seed,
        arrivals=args.arrivals,
        profile_repeats=args.profile_repeats,
        capacity_rps=args.capacity_rps,
        write_spec=Path(args.write_spec) if args.write_spec else None,
        spec_arg=args.spec,
        overrides=tuple(args.overrides),
    )
    try:
        with (
            raise_on_signals(),
            counting_bar("calibrate", total_steps(settings), enabled=sys.stderr.isatty()) as advance,
        ):
            calibration = run_calibration(settings, progress=advance)
    except CalibrationInterrupted as exc:
        partial = f" and {exc.partial} with fewer repeats" if exc.partial else ""
        print(
            f"rlscale calibrate: interrupted by {signal_name(exc.signum)}: {exc.finished} of {exc.total} "
            f"configurations finished{partial}, written to {exc.out}/ (results.csv, results.md, calibrate.json)",
            file=sys.stderr,
        )
        return exc.exit_code
    if args.json:
        emit_json(calibration.document())
        return 0
    print((settings.out / "results.md").read_text())
    spec_note = f"; calibrated spec {calibration.written_spec}" if calibration.written_spec else ""
    print(
        f"wrote {settings.out}/ (results.csv, results.md, calibrate.json, sim_vs_real.png, "
        f"{calibration.calibrated_spec.name if calibration.calibrated_spec else ''}){spec_note}"
    )
    return 0
