"""``rlscale profile``: measure a model's latency over batch sizes x cores into a profile CSV (DESIGN.md section 11).

Two sources: a Python factory ``--model MODULE:FUNCTION``, each point in a fresh worker process pinned to its
cores (`rlscale.profiling.inprocess`), or a served model ``--url`` over the Open Inference Protocol
(`rlscale.profiling.served`). Prints p50/p99 per point and each variant's fit with its error, and writes the CSV
(p50, mean, p90, p99 per point) and the run times beside it (``NAME.runs.csv``) atomically; a served model's
serving overhead is measured from its metrics (`rlscale.profiling.overhead`). SIGINT/SIGTERM write the finished
points and exit 130/143.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from rlscale.cli.args import add_json, csv_list, float_in, int_in, int_list_in
from rlscale.cli.output import console, emit_json
from rlscale.errors import RlscaleError

MAX_BATCH = 100_000
MAX_CORES = 4096
MAX_ITEMS = 64
"""At most this many batch sizes, core counts or variants in one run."""
SERVED_ONLY = (
    "model_name",
    "variant",
    "input_name",
    "input_shape",
    "datatype",
    "timeout",
    "metrics_url",
    "overhead_requests",
)
"""The flags of a served model (their ``dest``), refused with --model."""
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_OVERHEAD_REQUESTS = 200
"""``--overhead-requests``' default (`rlscale.profiling.overhead.DEFAULT_REQUESTS`, not imported here either)."""
LOAD_CONCURRENCY = 8
"""Requests in flight in the overhead's run under load (`rlscale.profiling.overhead.LOAD_CONCURRENCY`), for --help."""
DEFAULT_POINT_TIMEOUT_S = 300.0
"""``--point-timeout``'s default (`rlscale.profiling.inprocess.DEFAULT_POINT_TIMEOUT_S`, not imported here: the
parser is built without the profiler)."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Hosts whose server runs on this machine, so the source names this machine's CPU."""


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a model's latency over batch sizes x cores into a profile CSV (p50/mean/p90/p99, runs, fit)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Measure the latency per (variant, batch, cores) of a Python model factory (each point in a fresh process
pinned to its cores, thread pools capped) or of a model served over the Open Inference Protocol (KServe V2),
write the profile CSV a spec reads (latency_s = p99, then p50_s, mean_s, p90_s, overhead_s) with the timed runs
beside it in NAME.runs.csv, and fit l = gamma*b/c + delta*b + eps/c + eta per variant, with its error.

A served model's serving overhead (overhead_s: CPU seconds a request costs the server beyond its model's own)
is read from the server's Prometheus metrics (process_cpu_seconds_total less rlscale_model_cpu_seconds_total,
else rlscale_busy_seconds_total) around two runs of one-item requests: one at a time (no load) and
{LOAD_CONCURRENCY} in flight (under load); the figure under load is written. A server without those metrics
leaves overhead_s empty and says so in one line.""",
        epilog="""\
examples:
  rlscale profile --model rlscale.examples.resnet:build --batch 1,2 --cores 1 --out p.csv
  rlscale profile --model mymodels:build --variants small,large --batch 1,2,4,8 --cores 1,2 --out p.csv
  rlscale profile --url http://127.0.0.1:8080 --model-name classifier --variant mlp-256 --batch 1,2 --cores 2 \\
      --metrics-url http://127.0.0.1:8082/metrics --out p.csv""",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="a factory: FUNCTION(variant) returns (model, make_batch); make_batch(b) builds one batch of b and "
        "model(batch) runs it (torch, ONNX Runtime, numpy: any callable). MODULE is imported with the current "
        "folder first on the path; bundled: rlscale.examples.resnet:build (torch), rlscale.examples.mlp:build (numpy)",
    )
    source.add_argument(
        "--url",
        metavar="URL",
        help="profile a served model instead: the server's base URL (http://HOST:PORT), spoken to over the Open "
        "Inference Protocol (KServe V2 REST: MLServer, Triton, KServe); one request per run, its input tensor "
        "carrying the whole batch",
    )
    p.add_argument(
        "--variants",
        type=csv_list,
        metavar="V1,V2",
        help="--model: the variants to profile (default: the module's VARIANTS)",
    )
    p.add_argument(
        "--batch",
        required=True,
        type=int_list_in(1, MAX_BATCH, max_items=MAX_ITEMS),
        metavar="B1,B2",
        help=f"batch sizes, whole numbers 1-{MAX_BATCH}",
    )
    p.add_argument(
        "--cores",
        required=True,
        type=int_list_in(1, MAX_CORES, max_items=MAX_ITEMS),
        metavar="C1,C2",
        help="--model: core counts, each point's worker pinned to that many CPUs (at most this machine's); --url: "
        "the cores the model is deployed with, one value, which only labels the rows",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.csv",
        help="the profile CSV to write (variant,batch,cores,latency_s,source,kind,p50_s,mean_s,p90_s,overhead_s; "
        "latency_s = p99), replaced atomically if it exists; its folder must exist. The timed runs go beside it to "
        "NAME.runs.csv (variant,batch,cores,run_s, one row per run), which replaces only a run-times file",
    )
    p.add_argument(
        "--warmup", type=int_in(0, 10_000), default=3, metavar="N", help="untimed runs per point (default 3)"
    )
    p.add_argument(
        "--repeats", type=int_in(1, 100_000), default=20, metavar="N", help="timed runs per point (default 20)"
    )
    p.add_argument(
        "--point-timeout",
        type=float_in(0.0, 86_400.0, exclusive_low=True),
        metavar="S",
        help=f"--model: seconds one point's worker may take, the factory's import, make_batch, warm-up and timed runs "
        f"included (default {DEFAULT_POINT_TIMEOUT_S:g}); a worker that takes longer is killed and the run stops "
        "with the points finished before written (--url: --timeout bounds each request)",
    )
    served = p.add_argument_group("served model (--url)")
    served.add_argument("--model-name", metavar="NAME", help="the model's name on the server (required with --url)")
    served.add_argument("--variant", metavar="V", help="the variant name the rows get (default: --model-name)")
    served.add_argument(
        "--input-name", metavar="NAME", help="the input tensor's name (default: the model's metadata, else input-0)"
    )
    served.add_argument(
        "--input-shape",
        type=int_list_in(1, 1_000_000, max_items=8),
        metavar="D1,D2",
        help="one item's shape, without the batch dimension (default: the model's metadata where its first "
        "dimension is -1, else 3,32,32 as the bundled examples)",
    )
    served.add_argument(
        "--datatype",
        metavar="TYPE",
        help="the input's datatype: FP32, FP16, FP64, INT8..INT64, UINT8..UINT64, BOOL (default: the metadata's, "
        "else FP32)",
    )
    served.add_argument(
        "--timeout",
        type=float_in(0.0, 3600.0, exclusive_low=True),
        metavar="S",
        help=f"seconds one HTTP call may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    served.add_argument(
        "--metrics-url",
        metavar="URL",
        help="the server's Prometheus metrics, read for the serving overhead (default: URL/metrics; rlscale serve "
        "exports them on its --metrics-port: http://HOST:8082/metrics)",
    )
    served.add_argument(
        "--overhead-requests",
        type=int_in(0, 100_000),
        metavar="N",
        help=f"requests of one item in each of the overhead's two runs (default {DEFAULT_OVERHEAD_REQUESTS}; more "
        "is more precise: the process CPU counts in 10 ms ticks); 0 measures no overhead",
    )
    add_json(p)
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rlscale.evaluate.sweep import counting_bar
    from rlscale.interrupts import Interrupted, raise_on_signals, signal_name
    from rlscale.profiling.results import fit_variants, source_text, write_profile

    out = check_out(Path(args.out))
    batches = sorted(set(args.batch))
    cores = sorted(set(args.cores))
    # what is measured (a generator of points, run by the loop below), how many points, where, and for a served
    # model the serving overhead's measurement (run after the points; None: not measured)
    label, points, total, how, where, overhead_run = (_in_process if args.model is not None else _served)(
        args, batches, cores
    )
    source = source_text(how, args.warmup, args.repeats, where)

    finished = []
    overhead = None
    try:
        steps = total + (2 if overhead_run is not None else 0)
        with raise_on_signals(), counting_bar("profile", steps, enabled=sys.stderr.isatty()) as advance:
            for m in points:
                finished.append(m)
                advance(f"{m.variant} batch {m.batch} cores {m.cores}: p99 {m.p99_s * 1000:.3g} ms")
            if overhead_run is not None:
                overhead = overhead_run(advance)
    except Interrupted as exc:
        saved = f"written to {write_profile(out, finished, source)}" if finished else "nothing written"
        print(
            f"rlscale profile: interrupted by {signal_name(exc.signum)}: {len(finished)} of {_points(total)} "
            f"finished, {saved}",
            file=sys.stderr,
        )
        return exc.exit_code
    except RlscaleError as exc:
        if not finished:
            raise
        write_profile(out, finished, source)
        raise RlscaleError(f"{exc} ({_points(len(finished))} finished before, written to {out})") from None
    if overhead is not None:
        if overhead.overhead_s is None:
            hint = "" if args.metrics_url else " (where the server exports its metrics elsewhere: --metrics-url)"
            print(f"rlscale profile: {overhead.summary()}{hint}", file=sys.stderr)
        else:
            finished = [replace(m, overhead_s=overhead.overhead_s) for m in finished]
            source += f"; overhead_s {overhead.kept.replace('_', ' ')} from {overhead.model_metric}"
    write_profile(out, finished, source)
    runs = runs_written(out)

    fits = fit_variants(finished)
    if args.json:
        emit_json(
            {
                "mode": how,
                "model": label,
                "out": str(out),
                "runs": str(runs) if runs else None,
                "source": source,
                "points": [m.to_dict() for m in finished],
                "fits": [f.to_dict() for f in fits],
                "overhead": overhead.to_dict() if overhead is not None else None,
            }
        )
        return 0
    _print_tables(label, finished, fits)
    if any(f.points <= 4 for f in fits):
        print(
            "note: a variant with 4 points or fewer is fitted exactly (the form has 4 coefficients), so its error "
            "says nothing; more batch sizes or cores give a leave-one-out error"
        )
    if overhead is not None and overhead.overhead_s is not None:
        print(overhead.summary())
    kept = f" and their {sum(len(m.samples_s) for m in finished)} runs to {runs}" if runs else ""
    print(f"wrote {_points(len(finished))} to {out}{kept} (source: {source})")
    return 0


def runs_written(out: Path) -> Path | None:
    """The run-times file written beside ``out``, None when the runs were too many to keep (said on stderr)."""
    from rlscale.inputs import MAX_PROFILE_BYTES
    from rlscale.profiles import runs_path

    runs = runs_path(out)
    if runs.exists():
        return runs
    print(
        f"rlscale profile: the run times are not kept: {runs} would exceed the {MAX_PROFILE_BYTES >> 20} MiB a "
        "profile may read (fewer --repeats or points keep them); the CSV has their statistics",
        file=sys.stderr,
    )
    return None


def _points(n: int) -> str:
    return f"{n} point" if n == 1 else f"{n} points"


def check_out(out: Path) -> Path:
    """``--out`` is a ``.csv`` file path in an existing, writable folder, and its run-times file
    (`rlscale.profiles.runs_path`) is none, or one rlscale wrote (checked before anything is measured)."""
    from rlscale.paths import check_output_file

    if out.suffix.lower() != ".csv":
        raise RlscaleError(f"--out {out}: the profile is a CSV file; give a path ending in .csv")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise RlscaleError(f"--out {out}: folder {folder} does not exist (create it first)")
    check_output_file(out, "--out", ".csv", "the profile is a CSV file")
    from rlscale.profiles import RUNS_COLUMNS, runs_path
    from rlscale.profiling.results import is_runs_file

    check_output_file(
        runs_path(out),
        "--out's run times",
        ".csv",
        "the run times are a CSV file",
        ours=is_runs_file,
        foreign=f"is not a run-times file ({','.join(RUNS_COLUMNS)}) and would be replaced; give another --out",
    )
    return out


def _refuse(args: argparse.Namespace, flags: Sequence[str], mode: str) -> None:
    for dest in flags:
        if getattr(args, dest) is not None:
            raise RlscaleError(f"--{dest.replace('_', '-')} is for {mode}")


def _in_process(args: argparse.Namespace, batches: list[int], cores: list[int]):
    from rlscale.profiling.inprocess import check_cores, choose_variants, probe_factory, profile_in_process
    from rlscale.profiling.results import cpu_model

    _refuse(args, SERVED_ONLY, "a served model (--url)")
    check_cores(cores)  # before the factory is imported: a quick answer
    point_timeout_s = args.point_timeout or DEFAULT_POINT_TIMEOUT_S
    factory = probe_factory(args.model, point_timeout_s)  # imported in a worker: never this process's end
    variants = choose_variants(factory, args.variants)
    if len(variants) > MAX_ITEMS:
        raise RlscaleError(f"{len(variants)} variants: profile at most {MAX_ITEMS} in one run")
    points = profile_in_process(
        factory, variants, batches, cores, warmup=args.warmup, repeats=args.repeats, point_timeout_s=point_timeout_s
    )
    total = len(variants) * len(batches) * len(cores)
    return args.model, points, total, "in-process", f"CPU {cpu_model()}", None


def _served(args: argparse.Namespace, batches: list[int], cores: list[int]):
    from rlscale.profiling.overhead import MetricsReader, measure_overhead
    from rlscale.profiling.results import cpu_model
    from rlscale.profiling.served import V2Client, base_url, input_tensor, profile_served

    _refuse(args, ["variants"], "--model (a served model is one variant: --variant)")
    _refuse(args, ["point_timeout"], "--model (with --url, --timeout bounds each request)")
    if not args.model_name:
        raise RlscaleError("--url needs --model-name: the model's name on the server")
    if len(cores) != 1:
        raise RlscaleError(
            f"--cores {','.join(map(str, cores))}: a served model runs with the cores it is deployed with; give that "
            "one number (it labels the rows)"
        )
    timeout_s = args.timeout or DEFAULT_TIMEOUT_S
    client = V2Client(args.url, args.model_name, timeout_s=timeout_s)
    metrics_url = base_url(args.metrics_url, "--metrics-url") if args.metrics_url else f"{client.url}/metrics"
    client.check_ready()
    flags_given = args.input_name and args.input_shape and args.datatype
    tensor = input_tensor(None if flags_given else client.metadata(), args.input_name, args.datatype, args.input_shape)
    variant = args.variant or args.model_name
    points = profile_served(client, tensor, variant, batches, cores[0], warmup=args.warmup, repeats=args.repeats)
    item = "x".join(map(str, tensor.item_shape))
    where = f"server {client.url} model {args.model_name} input {tensor.name} {tensor.datatype} b x {item}"
    if urllib.parse.urlsplit(client.url).hostname in LOCAL_HOSTS:  # the server runs here: name the hardware
        where += f" on this machine's CPU {cpu_model()}"
    requests = DEFAULT_OVERHEAD_REQUESTS if args.overhead_requests is None else args.overhead_requests

    def overhead(advance):
        metrics = MetricsReader(metrics_url, timeout_s=timeout_s)
        return measure_overhead(
            client, tensor, variant, metrics, requests=requests, warmup=args.warmup, advance=advance
        )

    label = f"{client.url} {args.model_name}"
    return label, points, len(batches), "served", where, overhead if requests else None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _signed_pct(value: float) -> str:
    """``+1.2%``; a residue that rounds to zero is ``+0.0%``, never ``-0.0%``."""
    return f"{value if abs(value) >= 5e-4 else 0.0:+.1%}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_tables(label: str, points, fits) -> None:
    from rich.table import Table

    by_variant = {f.variant: f for f in fits}
    table = Table(title=f"rlscale profile: {label}")
    for col in ("variant", "batch", "cores", "p50 (ms)", "mean (ms)", "p90 (ms)", "p99 (ms)", "fit (ms)", "fit error"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for m in points:
        fitted = by_variant[m.variant].predict_s(m.batch, m.cores)
        table.add_row(
            m.variant,
            str(m.batch),
            str(m.cores),
            _ms(m.p50_s),
            _ms(m.mean_s),
            _ms(m.p90_s),
            _ms(m.p99_s),
            _ms(fitted),
            _signed_pct((fitted - m.p99_s) / m.p99_s),
        )
    fit_table = Table(title="fit of p99: l = gamma*b/c + delta*b + eps/c + eta (seconds)")
    for col in ("variant", "points", "gamma", "delta", "eps", "eta", "max error", "mean error", "leave-one-out max"):
        fit_table.add_column(col, justify="left" if col == "variant" else "right")
    for f in fits:
        fit_table.add_row(
            f.variant,
            str(f.points),
            *(f"{x:.4g}" for x in f.coef),
            _pct(f.max_rel_error),
            _pct(f.mean_rel_error),
            _pct(f.loo_max_rel_error) if f.loo_max_rel_error is not None else "- (< 5 points)",
        )
    out = console()
    out.print(table)
    out.print(fit_table)
