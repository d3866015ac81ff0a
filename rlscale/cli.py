"""The ``rlscale`` command: the composition root.

Every sub-command has ``--help``. Errors caused by input (a bad spec, trace or flag) are printed as one line on
stderr with exit code 2; nothing prints a traceback unless ``RLSCALE_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED
from rlscale.stdio import stdout_to_stderr

log = logging.getLogger("rlscale")

EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high], else one clear usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def float_in(low: float, high: float, *, exclusive_low: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] (or (low, high]), else one clear usage error (exit 2)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > high or value < low or (exclusive_low and value == low):
            bound = f"> {low:g}" if exclusive_low else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} and <= {high:g}, got {text}")
        return value

    return parse


# --------------------------------------------------------------------------------------------- pipelines


def _console():
    """A rich console; when stdout is not a terminal, wide enough that tables are not truncated."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _compact(values: Sequence[int]) -> str:
    """1,2,4,8 stays a list; a contiguous run like 2..20 prints as 2-20."""
    vals = list(values)
    if len(vals) > 3 and vals == list(range(vals[0], vals[-1] + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ",".join(map(str, vals))


# where a --json command writes its document: the real stdout, while everything else printed goes to stderr
_json_out: TextIO | None = None


def _emit_json(document: object) -> None:
    """Write the command's one JSON document to the real stdout (see `main`'s guard)."""
    out = _json_out if _json_out is not None else sys.stdout
    out.write(json.dumps(document, indent=2) + "\n")
    out.flush()


def _add_set(p: argparse.ArgumentParser) -> None:
    """``--set FIELD=VALUE`` (repeatable): override a spec field by its dotted path, in every command with a spec."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="FIELD=VALUE",
        help="override a spec field by its dotted path, the value as YAML (repeatable): objective.alpha=10, "
        "stages.0.max_replicas=8, sla_s=5",
    )


def _load_spec(name: str, args: argparse.Namespace):
    """The spec ``name`` (bundled name or file) with the command's ``--set`` overrides; `SpecError` (exit 2)."""
    from rlscale.spec import load_spec

    return load_spec(name, getattr(args, "overrides", None) or ())


def _spec_file(name: str, args: argparse.Namespace, folder: Path) -> str:
    """The spec argument for code that loads the spec itself (``train``, ``compare``, the manifests' ConfigMap).

    Without ``--set`` it is ``name``. With it, the overridden spec is written to ``folder`` as
    ``spec-<pipeline>-<digest>.yaml`` (profiles as absolute paths; the same overrides give the same file, so a
    resumed run finds the same spec) and that file's path is returned.
    """
    import hashlib

    from rlscale.paths import atomic_write_text, inside
    from rlscale.spec import dump_spec

    spec = _load_spec(name, args)
    if not args.overrides:
        return name
    sets = " ".join(f"--set {item}" for item in args.overrides)
    text = dump_spec(spec, f"written by rlscale from {spec.source} {sets}")
    body = text.split("\n", 1)[1]  # the digest ignores the comment
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:12]
    path = inside(folder, f"spec-{spec.name}-{digest}.yaml", "spec file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlscaleError(f"{folder}: cannot create a folder for the spec with --set: {exc.strerror or exc}") from None
    atomic_write_text(path, text)
    log.info("spec with --set overrides written to %s", path)
    return str(path)


def cmd_pipelines(args: argparse.Namespace) -> int:
    from rlscale.spec import bundled_pipelines, spec_json_schema

    if args.schema:
        if args.spec or args.overrides:
            raise RlscaleError("--schema prints the spec format; it takes no --spec or --set")
        _emit_json(spec_json_schema())
        return 0
    specs = [_load_spec(n, args) for n in (args.spec or bundled_pipelines())]
    if args.json:
        _emit_json([s.to_dict() for s in specs])
        return 0
    from rich.table import Table

    table = Table(title="rlscale pipelines")
    for col in ("pipeline", "SLA (s)", "stage", "batch", "cores", "replicas", "variant", "accuracy", "startup (s)"):
        table.add_column(col)
    for s in specs:
        for i, st in enumerate(s.stages):
            for j, v in enumerate(st.variants):
                first = j == 0
                table.add_row(
                    s.name if i == 0 and first else "",
                    f"{s.sla_s:g}" if i == 0 and first else "",
                    st.name if first else "",
                    _compact(st.batch_sizes) if first else "",
                    _compact(st.cores) if first else "",
                    f"{st.min_replicas}-{st.max_replicas}" if first else "",
                    v.name,
                    f"{v.accuracy:.3f}",
                    f"{v.startup_s:g}",
                    end_section=j == len(st.variants) - 1,
                )
    _console().print(table)
    return 0


# ------------------------------------------------------------------------------------------------ traces


def cmd_traces(args: argparse.Namespace) -> int:
    from rlscale.workload import bundled_traces, load_trace

    traces = [load_trace(n) for n in (args.trace or bundled_traces())]
    if args.json:
        _emit_json([t.summary() for t in traces])
        return 0
    from rich.table import Table

    table = Table(title="rlscale traces")
    for col in ("trace", "length (s)", "requests", "mean rps", "peak rps", "source"):
        table.add_column(col)
    for t in traces:
        table.add_row(
            t.name,
            str(t.duration_s),
            str(t.total_requests),
            f"{t.mean_rps:.1f}",
            f"{t.peak_rps:g}",
            t.description,
        )
    _console().print(table)
    return 0


# ---------------------------------------------------------------------------------------------- simulate


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cmd_simulate(args: argparse.Namespace) -> int:
    from experiments.registry import make_policy
    from rlscale.sim.runner import run_episode
    from rlscale.workload import load_trace

    spec = _load_spec(args.pipeline, args)
    trace = load_trace(args.trace)
    options = _policy_options(args)
    policy = make_policy(args.policy, spec, trace, options)
    if args.plot:
        _check_writable(Path(args.plot))
    result = run_episode(spec, trace, policy, seed=args.seed, arrivals=args.arrivals)
    if args.plot:
        from experiments.plots import plot_timeline

        _save_plot(lambda: plot_timeline(spec, result, Path(args.plot)), Path(args.plot))
        log.info("wrote %s", args.plot)
    if args.json:
        _emit_json(result.record)
        return 0
    from rich.table import Table

    table = Table(title=f"rlscale simulate: {spec.name} / {trace.name} / {policy.name} (seed {args.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.record.items():
        if key in ("pipeline", "trace", "policy", "seed", "stages"):
            continue
        shown = f"{value:.2%}" if key == "sla_violation_rate" else _fmt(value)
        table.add_row(key, shown)
    per_stage = Table(title="per stage")
    columns = [k for k in result.record["stages"][0] if k != "stage"]
    per_stage.add_column("stage")
    for k in columns:
        per_stage.add_column(k, justify="right")
    for row in result.record["stages"]:
        per_stage.add_row(row["stage"], *[_fmt(row[k]) for k in columns])
    console = _console()
    console.print(table)
    console.print(per_stage)
    return 0


def _policy_options(args: argparse.Namespace):
    """The planner and agent flags of `_add_planner_flags` as `PolicyOptions`."""
    from experiments.registry import PolicyOptions

    return PolicyOptions(
        solver=args.solver,
        predictor=args.predictor,
        headroom=args.headroom,
        agent=args.agent,
        safety_load=args.safety_load,
        guard=None if args.guard == "default" else args.guard == "on",
    )


def _check_writable(path: Path) -> None:
    """Fail before a long run, not after it, when an output file cannot be written."""
    if path.suffix.lower() != ".png":
        raise RlscaleError(f"--plot {path}: the plot is a PNG file; give a path ending in .png")
    if path.is_dir():
        raise RlscaleError(f"--plot {path}: is a folder; give a file path ending in .png")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise RlscaleError(f"--plot {path}: {existing} is not a folder")
    if existing == parent:
        # a real write: os.access says yes to root even where nothing can be created (/proc, a read-only mount)
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise RlscaleError(f"--plot {path}: cannot write in {parent}: {exc.strerror or exc}") from None


def _save_plot(draw: Callable[[], object], path: Path) -> None:
    """Draw a plot; a write that fails (disk full, folder removed) is one clear line, not an internal error."""
    try:
        draw()
    except OSError as exc:
        raise RlscaleError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from agents.ppo import ACTOR_FILE, TRAIN_EXTRA_HINT, TrainConfig, TrainingInterrupted, bundled_agent, train
    from rlscale.interrupts import Interrupted, StopRequest, signal_name, stop_on_signals
    from rlscale.paths import atomic_path

    spec = _load_spec(args.pipeline, args)  # fail on a bad spec before anything is created
    try:
        import stable_baselines3  # noqa: F401 - training is the one command that needs torch
    except ImportError:
        raise RlscaleError(f"training needs torch and stable-baselines3: {TRAIN_EXTRA_HINT}") from None
    cfg = TrainConfig(
        pipeline=_spec_file(args.pipeline, args, Path(args.out)),  # the spec with --set, written beside the runs
        timesteps=args.timesteps,
        seed=args.seed,
        n_envs=args.n_envs,
        out=args.out,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    target = bundled_agent(spec.name) if args.bundle else None
    try:
        # the first SIGINT/SIGTERM ends learning at the next step and saves the model; a second one at once
        with stop_on_signals(StopRequest()) as stop:
            run = train(cfg, progress_bar=sys.stderr.isatty(), stop=stop)
    except TrainingInterrupted as exc:
        if exc.timesteps_done >= exc.timesteps:
            print(
                f"rlscale train: interrupted by {signal_name(exc.signum)} during the final evaluation (training had "
                f"finished); model saved to {exc.model}",
                file=sys.stderr,
            )
            return exc.exit_code
        left = exc.timesteps - exc.timesteps_done
        print(
            f"rlscale train: interrupted by {signal_name(exc.signum)} after {exc.timesteps_done} of {exc.timesteps} "
            f"steps; model saved to {exc.model}; continue with: rlscale train --pipeline {args.pipeline} "
            f"--timesteps {left} --resume {exc.model}",
            file=sys.stderr,
        )
        return exc.exit_code
    except Interrupted as exc:  # before learning started (no model yet) or while saving
        print(f"rlscale train: interrupted by {signal_name(exc.signum)} before a model was saved", file=sys.stderr)
        return exc.exit_code
    report = json.loads((run / "eval.json").read_text())
    print(f"run folder: {run}")
    for trace, rec in report["eval"].items():
        print(
            f"  {trace:12s} score {rec['score']:8.3f}  violations {rec['sla_violation_rate']:.2%}  "
            f"accuracy {rec['accuracy']:.3f}  cost {rec['cost_cores']:.2f} cores"
        )
    print(f"  actor: {run / ACTOR_FILE} (pass it with --agent; model.zip is for --resume)")
    if target is not None:  # the actor file carries its codec settings: nothing else to copy
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes((run / ACTOR_FILE).read_bytes())
        print(f"bundled as {target}")
    return 0


# ----------------------------------------------------------------------------------------------- compare


def _csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def cmd_compare(args: argparse.Namespace) -> int:
    from experiments.compare import ComparisonInterrupted, markdown_table, run_comparison
    from rlscale.interrupts import Interrupted, raise_on_signals, signal_name

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RlscaleError(f"--out {out}: exists and is not a folder")
    options = _policy_options(args)
    try:
        with raise_on_signals():  # SIGINT/SIGTERM: the finished runs are on disk; summarise them and stop
            comp = run_comparison(
                _spec_file(args.pipeline, args, out),  # the spec with --set is written into --out
                args.traces,
                args.policies,
                seeds=args.seeds,
                options=options,
                arrivals=args.arrivals,
                out=out,
                timelines=not args.no_timelines,
                progress=sys.stderr.isatty(),
                resume=args.resume,
                overwrite=args.overwrite,
            )
    except ComparisonInterrupted as exc:
        left = exc.total - exc.finished
        print(
            f"rlscale compare: interrupted by {signal_name(exc.signum)}: {exc.finished} of {exc.total} runs finished, "
            f"saved in {out}/ (records.jsonl, results.csv, results.md); run the same command with --resume to "
            f"finish the other {left}",
            file=sys.stderr,
        )
        return exc.exit_code
    except Interrupted as exc:  # before the first run, or a second signal while the summary was written
        print(
            f"rlscale compare: interrupted by {signal_name(exc.signum)}; finished runs, if any, are in "
            f"{out}/records.jsonl: run the same command with --resume to go on",
            file=sys.stderr,
        )
        return exc.exit_code
    print(markdown_table(comp, args.traces, args.policies))
    print(f"wrote {len(comp.files)} files to {out}/ (results.csv, results.md, accuracy_vs_cost.png, violations.png)")
    return 0


# ------------------------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from experiments.bench import run_bench

    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status("benchmarking")
        status.start()
        report = run_bench(repeats=args.repeats, quick=args.quick, progress=lambda line: status.update(line))
        status.stop()
    else:
        report = run_bench(repeats=args.repeats, quick=args.quick)
    if args.json:
        _emit_json(report)
        return 0
    sim = report["sim"]
    print(
        f"simulator ({sim['workload']}, {sim['events']} request-stage events, median of {sim['repeats']}): "
        f"{sim['events_per_s']:,} events/s; naive reference {sim['naive_events_per_s']:,} events/s; "
        f"ratio {sim['ratio']:.2f}x"
    )
    from rich.table import Table

    dm = report["decision_ms"]
    table = Table(title="decision latency (ms): p50 / p99 over a low (5 rps) and a high (30 rps) load")
    table.add_column("solver")
    for n in dm["dp"]:
        table.add_column(f"{n} stages", justify="right")
    for name, per in dm.items():
        cells = []
        for n in dm["dp"]:
            c = per.get(n)
            if c is None:
                cells.append("-")
                continue
            timeouts = c.get("timeouts", 0)
            cells.append(f"{c['p50']:.2f} / {c['p99']:.2f}" + (f" ({timeouts} timeouts)" if timeouts else ""))
        table.add_row(name, *cells)
    _console().print(table)
    print("ratios:", ", ".join(f"{k} {v}x" for k, v in report["ratios"].items()))
    return 0


# -------------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo
    from rlscale.paths import output_folder

    return run_demo(out_dir=output_folder(Path(args.out)))


# ------------------------------------------------------------------------------------------------ parser


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def _add_planner_flags(p: argparse.ArgumentParser) -> None:
    from experiments.registry import PREDICTORS
    from ilp_baseline.policy import ALL_SOLVERS

    p.add_argument(
        "--solver",
        choices=ALL_SOLVERS,
        help="planner's solver: cbc, highs (PuLP ILP) or dp (exact DP); same optimum (default dp, the fastest)",
    )
    p.add_argument(
        "--predictor",
        choices=PREDICTORS,
        help="load predictor of ipa/fa2/rim: reactive (max of last 10 s), ewma, lstm (IPA's, default), oracle",
    )
    p.add_argument(
        "--headroom",
        type=float_in(0.1, 10.0),
        metavar="H",
        help="plan for H x the predicted load, 0.1-10 (default: IPA's published margin for the pipeline)",
    )
    p.add_argument(
        "--agent",
        metavar="PATH",
        help="agent for ppo/ppo-raw: a run's actor.npz, or its model.zip (needs the train extra) (default: bundled)",
    )
    p.add_argument(
        "--safety-load",
        choices=("observed", "backlog", "predicted"),
        help="load the safety layer protects for: the last interval's peak (default), plus the backlog, or the LSTM's",
    )
    _add_guard(p)


def _add_guard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guard",
        choices=("default", "on", "off"),
        default="default",
        help="put the safety layer in front of the policy (on) or not (off); default: on for ppo, off for the rest "
        "(ppo-raw and the published baselines); the same in simulate, compare and the sidecar, and in every record",
    )


# ----------------------------------------------------------------------------------------------- sidecar


def _add_live_flags(p: argparse.ArgumentParser) -> None:
    """The sidecar's decision flags, shared by ``sidecar`` and ``manifests`` (which passes them on)."""
    from experiments.registry import LIVE_POLICIES
    from rlscale.kube.manifests import INTERVAL_RANGE_S

    low_s, high_s = INTERVAL_RANGE_S
    p.add_argument(
        "--policy",
        choices=list(LIVE_POLICIES),
        metavar="POLICY",
        help=f"who decides: {', '.join(LIVE_POLICIES)} (default: ppo where the pipeline has a bundled agent, else ipa)",
    )
    p.add_argument(
        "--interval",
        type=float_in(low_s, high_s),
        metavar="S",
        help=f"seconds between decisions, {low_s:g} to {high_s:g} (default: the spec's)",
    )
    p.add_argument(
        "--window",
        type=float_in(low_s, high_s),
        metavar="S",
        help="rate/quantile window of the queries; must span 2 scrapes (default: the interval, at least 30 s)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="send every change as a server-side dry run: validated, not stored"
    )
    p.add_argument(
        "--allow-system-namespace",
        action="store_true",
        help="allow kube-system, kube-public or kube-node-lease as the namespace (refused otherwise)",
    )


def _kube_api(kubeconfig: str | None):
    """An AppsV1Api from --kubeconfig, else the pod's service account, else ~/.kube/config."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig:
            if not Path(kubeconfig).is_file():
                raise RlscaleError(f"--kubeconfig {kubeconfig}: no such file")
            config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except ConfigException:
                config.load_kube_config()
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise RlscaleError(
            f"no usable Kubernetes credentials ({exc}); run in a pod with a service account or pass --kubeconfig"
        ) from None
    cfg = client.Configuration.get_default_copy()
    cfg.retries = 0  # no hidden client-side retries: the sidecar's backoff decides, and says so in its log
    return client.AppsV1Api(client.ApiClient(cfg))


def _namespace(arg: str | None, spec_ns: str | None, kubeconfig: str | None) -> str:
    """--namespace, else the spec's, else the pod's (in a cluster) or the kubeconfig context's, else default."""
    if arg:
        return arg
    if spec_ns:
        return spec_ns
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig or not Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists():
        try:
            _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if active and active.get("context", {}).get("namespace"):
                return active["context"]["namespace"]
        except (ConfigException, OSError, ValueError, TypeError):
            pass
    in_pod = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return in_pod.read_text().strip() if in_pod.exists() else "default"


def _check_url(url: str, flag: str) -> str:
    from urllib.parse import urlparse

    from rlscale.kube.prometheus import redact_url

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RlscaleError(f"{flag} {redact_url(url)!r}: need an http(s) URL such as http://prometheus:9090")
    return url.rstrip("/")


MAX_TOKEN_BYTES = 64 * 1024


def _read_token(path: str) -> str:
    """The bearer token in ``path``: one line of printable ASCII (what an HTTP header can carry), at most 64 KiB.

    Raises:
        RlscaleError: the file cannot be read, is larger, or holds anything else (the token is never shown).
    """
    flag = f"--prometheus-token-file {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise RlscaleError(f"{flag}: cannot read the token: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise RlscaleError(f"{flag}: larger than {MAX_TOKEN_BYTES // 1024} KiB; is it a token file?")
    token = data.strip()
    if not token or not all(33 <= byte <= 126 for byte in token):
        raise RlscaleError(f"{flag}: the token must be one line of printable ASCII text (no spaces)")
    return token.decode("ascii")


def _default_live_policy(spec) -> str:
    """``ppo`` where the pipeline has a bundled agent, else ``ipa``."""
    from agents.ppo import bundled_agent

    return "ppo" if bundled_agent(spec.name).exists() else "ipa"


def _live_policy(args: argparse.Namespace, spec):
    """The sidecar's (policy, safety layer). An explicit ``--agent`` must fit the spec (else one line, exit 2);
    only the bundled agent, used by default, falls back to ``ipa`` with a warning when it does not."""
    from experiments.registry import make_live_policy

    options = _policy_options(args)
    if args.policy is None and args.agent is not None:
        return make_live_policy("ppo", spec, options)
    if args.policy is None and _default_live_policy(spec) == "ppo":
        from agents.ppo import AgentMismatch

        try:
            return make_live_policy("ppo", spec, options)
        except AgentMismatch as exc:  # e.g. a spec edited from a bundled one: the bundled agent does not fit it
            log.warning("the bundled agent does not fit this spec (%s); deciding with ipa", exc)
            return make_live_policy("ipa", spec, options)
    return make_live_policy(args.policy or "ipa", spec, options)


def cmd_sidecar(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rlscale.kube.actuator import DeploymentActuator
    from rlscale.kube.cluster import KubernetesCluster
    from rlscale.kube.objects import system_namespace_problem
    from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader, duration, redact_url
    from rlscale.kube.sidecar import Sidecar, SidecarMetrics, SidecarSettings
    from rlscale.spec import is_k8s_name

    spec = _load_spec(args.spec, args)
    url = _check_url(args.prometheus, "--prometheus")
    # the flags' ranges are checked by argparse (`float_in`); the spec's interval by the spec
    interval_s = args.interval if args.interval is not None else spec.interval_s
    window_s = args.window if args.window is not None else max(interval_s, 30.0)
    if args.namespace is not None and not is_k8s_name(args.namespace):
        raise RlscaleError(f"--namespace {args.namespace!r}: not a Kubernetes namespace name (lowercase, digits, '-')")
    namespace = _namespace(args.namespace, spec.kubernetes.namespace, args.kubeconfig)
    if not args.allow_system_namespace:
        where = (
            "--namespace"
            if args.namespace
            else "the spec's kubernetes.namespace"
            if spec.kubernetes.namespace
            else "the namespace (of the pod or the kubeconfig context)"
        )
        problem = system_namespace_problem(namespace, where)
        if problem:
            raise RlscaleError(problem)
    token = _read_token(args.prometheus_token_file) if args.prometheus_token_file else None
    reader = PrometheusReader(
        url,
        spec.name,
        templates=dict(spec.kubernetes.promql),
        timeout_s=args.timeout,
        bearer_token=token,
        verify_tls=not args.prometheus_insecure,
    )
    if args.once:  # a one-shot run prints its outcome; the log says only what went wrong
        logging.getLogger("rlscale").setLevel(logging.WARNING)
    live = _live_policy(args, spec)  # bad input (an agent that does not fit) before any network call
    if args.once:  # nothing to hold on to in a one-shot run: an unreachable Prometheus ends it at once
        try:
            reader.arrival_rate_rps(spec.stages[0].name, window=duration(window_s / args.speedup))
        except MetricsUnavailable as exc:
            print(f"rlscale sidecar: error: {exc}; nothing was changed", file=sys.stderr)
            return 1
    actuator = DeploymentActuator(spec, _kube_api(args.kubeconfig), namespace, dry_run=args.dry_run)
    cluster = KubernetesCluster(spec, reader, actuator, interval_s=interval_s, window_s=window_s, speedup=args.speedup)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    import prometheus_client

    prometheus_client.disable_created_metrics()  # no *_created series per label set: this process only serves ours
    metrics = SidecarMetrics()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    settings = SidecarSettings(interval_s=interval_s, max_backoff_s=args.max_backoff, speedup=args.speedup)
    policy, safety = live.policy, live.guard
    sidecar = Sidecar(cluster, policy, safety, settings, metrics, stop)
    server = None
    if args.metrics_port:
        try:
            server = metrics.serve(args.metrics_port, args.metrics_address, health=sidecar.health)
        except OSError as exc:
            raise RlscaleError(f"cannot serve metrics on {args.metrics_address}:{args.metrics_port}: {exc}") from None
    log.info(
        "sidecar for %s: policy %s%s, namespace %s, Prometheus %s, every %gs (window %gs)%s",
        spec.name,
        policy.name,
        " + safety" if safety is not None else "",
        namespace,
        redact_url(url),
        interval_s,
        window_s,
        ", DRY RUN (server-side, nothing changes)" if args.dry_run else "",
    )
    if args.speedup != 1:
        log.info(
            "the pipeline's clock runs %gx the wall clock: every %gs of wall time",
            args.speedup,
            interval_s / args.speedup,
        )
    try:
        if args.once:
            report = sidecar.run_once()
            if report.outcome in ("held", "failed"):
                print(f"rlscale sidecar: error: {report.message}", file=sys.stderr)
                return 1
            print(report.message)
            return 0
        return sidecar.run()
    finally:
        if server is not None:
            server.shutdown()


def cmd_manifests(args: argparse.Namespace) -> int:
    from rlscale.kube.manifests import render_manifests
    from rlscale.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="rlscale-manifests-") as folder:
        # with --set, the ConfigMap carries the overridden spec: render from a file that holds it
        spec = load_spec(_spec_file(args.spec, args, Path(folder)))
        text = render_manifests(
            spec,
            namespace=args.namespace,
            image=args.image,
            prometheus_url=_check_url(args.prometheus, "--prometheus"),
            policy=args.policy or _default_live_policy(spec),
            interval_s=args.interval,
            window_s=args.window,
            dry_run=args.dry_run,
            allow_system_namespace=args.allow_system_namespace,
            guard=None if args.guard == "default" else args.guard == "on",
        )
    sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlscale",
        description="RL autoscaler for multi-stage ML inference pipelines (simulator, ILP baseline, PPO agent).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("pipelines", help="list bundled pipelines: stages, variants, SLA")
    p.add_argument(
        "--spec",
        action="append",
        metavar="NAME|FILE",
        help="show only this pipeline or spec file (repeatable)",
    )
    _add_set(p)
    p.add_argument("--schema", action="store_true", help="print the spec format as a JSON Schema (one JSON document)")
    _add_json(p)
    p.set_defaults(func=cmd_pipelines)

    p = sub.add_parser("traces", help="list bundled workload traces with length and total requests")
    p.add_argument("--trace", action="append", metavar="NAME|CSV", help="show only this trace (repeatable)")
    _add_json(p)
    p.set_defaults(func=cmd_traces)

    from experiments.registry import POLICIES

    p = sub.add_parser("simulate", help="run one episode of a policy on the simulator and summarise it")
    p.add_argument("--pipeline", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument("--trace", required=True, metavar="NAME|CSV", help="bundled trace name or CSV with an rps column")
    p.add_argument(
        "--policy",
        required=True,
        choices=list(POLICIES),
        metavar="POLICY",
        help="; ".join(f"{k}: {v[1]}" for k, v in POLICIES.items()).replace("%", "%%"),
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--arrivals",
        choices=("even", "poisson"),
        default="even",
        help="spread each second's requests evenly (IPA's generator, default) or as a Poisson process",
    )
    _add_set(p)
    _add_planner_flags(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw load, replicas/variants and p99 vs SLA over time")
    _add_json(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="train the PPO agent on training windows (progress bar, TensorBoard logs)")
    p.add_argument("--pipeline", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument("--timesteps", type=int, default=200_000, help="adaptation intervals to train for (default 200000)")
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of PPO and of the training windows (default 0)"
    )
    p.add_argument("--n-envs", type=int, default=4, help="parallel environments (default 4)")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default runs/)")
    p.add_argument(
        "--resume", metavar="MODEL.zip", help="continue training this model (a run's model.zip or a checkpoint)"
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="also save a checkpoint every M minutes, besides every 50000 steps (default 10; 0: off)",
    )
    p.add_argument(
        "--bundle", action="store_true", help="copy the run's actor.npz into agents/data/ as the bundled agent"
    )
    _add_set(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="run policies x traces x seeds; write results.csv/.md and plots")
    p.add_argument("--pipeline", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument(
        "--traces", required=True, type=_csv_list, metavar="T1,T2", help="comma-separated trace names or CSV paths"
    )
    p.add_argument("--policies", required=True, type=_csv_list, metavar="A,B", help="comma-separated policy names")
    p.add_argument("--seeds", type=int, default=1, help="seeds per combination (default 1; >1 uses Poisson arrivals)")
    p.add_argument("--arrivals", choices=("even", "poisson"), help="override the arrival process")
    p.add_argument("--out", default="out/compare", help="output folder (default out/compare)")
    p.add_argument("--no-timelines", action="store_true", help="skip the per-run timeline plots")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="--out holds an unfinished comparison: run only the (trace, policy, seed) runs it has not recorded "
        "(same flags required)",
    )
    again.add_argument(
        "--overwrite", action="store_true", help="remove the results already in --out (timelines included) first"
    )
    _add_set(p)
    _add_planner_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "bench", help="simulator speed against a naive reference; decision latency of cbc, highs and dp by stages"
    )
    p.add_argument(
        "--repeats", type=int_in(1, 1000), default=5, help="runs per figure; the median is reported (default 5)"
    )
    p.add_argument("--quick", action="store_true", help="decision latency for 2 and 5 stages only (a smoke test)")
    _add_json(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "sidecar",
        help="autoscale a pipeline on Kubernetes: Prometheus metrics in, Deployment patches out, every interval",
        description=(
            "Every interval: read the stage Deployments and the pipeline's metrics from Prometheus, let the policy "
            "propose a configuration, project it onto the SLA-feasible set (safety layer), and patch the "
            "Deployments that change. Faults never stop the loop: Prometheus down -> hold and back off; 409 -> "
            "re-read and retry; 5xx/timeouts -> back off; 401/403/404 -> log once and keep running. SIGTERM ends "
            "it after the current step with exit 0. With --once, a failed step exits 1."
        ),
    )
    p.add_argument("--spec", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://prom:9090")
    p.add_argument(
        "--namespace",
        help="namespace of the stage Deployments (default: the spec's, the pod's or kubeconfig's, else default)",
    )
    _add_live_flags(p)
    p.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    p.add_argument("--once", action="store_true", help="run one step and exit (non-zero if it could not decide)")
    p.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        default=9400,
        metavar="P",
        help="port of the sidecar's /metrics (0: off; 9400)",
    )
    p.add_argument(
        "--metrics-address", default="127.0.0.1", metavar="A", help="address to serve /metrics on (default 127.0.0.1)"
    )
    p.add_argument(
        "--timeout",
        type=float_in(0.1, 300.0),
        default=3.0,
        metavar="S",
        help="Prometheus query timeout, 0.1 to 300 s of wall time (default 3)",
    )
    p.add_argument(
        "--prometheus-token-file", metavar="PATH", help="file with a bearer token for Prometheus (managed Prometheus)"
    )
    p.add_argument("--prometheus-insecure", action="store_true", help="do not verify an https Prometheus' certificate")
    p.add_argument(
        "--max-backoff",
        type=float_in(1.0, 86400.0),
        metavar="S",
        help="longest wait after repeated faults, 1 to 86400 s (default 6 intervals)",
    )
    p.add_argument(
        "--speedup",
        type=float_in(0.01, 1000.0),
        default=1.0,
        metavar="X",
        help="pipeline seconds per wall second, 0.01 to 1000: 1 for a real cluster (default); N drives a twin running "
        "N times faster (intervals, windows and backoff shrink N-fold)",
    )
    _add_set(p)
    _add_planner_flags(p)
    p.set_defaults(func=cmd_sidecar)

    p = sub.add_parser(
        "manifests",
        help="print the Kubernetes manifests that deploy the sidecar (ServiceAccount, Role, ConfigMap, Deployment)",
        description=(
            "Print, as YAML for `kubectl apply -f -`, what runs the sidecar in a cluster: a ServiceAccount, a Role "
            "with only the verbs the sidecar calls (get/list/patch deployments, patch deployments/scale; only on "
            "the named Deployments, and no list, when the spec names every stage's), its RoleBinding, a ConfigMap "
            "with the spec, and the sidecar's Deployment. The --policy, --interval, --window, --guard and --dry-run "
            "given here become the sidecar's arguments. System namespaces (kube-system...) need "
            "--allow-system-namespace."
        ),
    )
    p.add_argument("--spec", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    p.add_argument(
        "--namespace",
        default="default",
        help="namespace of the sidecar and of the stage Deployments, unless the spec's kubernetes.namespace names "
        "another (default: default)",
    )
    p.add_argument("--image", default="rlscale:latest", help="the sidecar's image (default rlscale:latest)")
    p.add_argument(
        "--prometheus",
        default="http://prometheus-server.monitoring.svc:9090",
        metavar="URL",
        help="Prometheus URL as seen from the pod (default http://prometheus-server.monitoring.svc:9090)",
    )
    _add_live_flags(p)
    _add_guard(p)
    _add_set(p)
    p.set_defaults(func=cmd_manifests)

    p = sub.add_parser("demo", help="the main job on the bundled default (what `make demo` runs)")
    p.add_argument("--out", default="out/demo", help="folder for the plots (default: out/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("RLSCALE_DEBUG") == "1"
    command = "rlscale"
    try:
        args = build_parser().parse_args(argv)
        command = f"rlscale {args.command}"
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        # the HTTP libraries' retry warnings repeat what our own one-line messages say
        logging.getLogger("urllib3").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
        func: Callable[[argparse.Namespace], int] = args.func
        if not getattr(args, "json", False):
            return func(args)
        # --json: stdout holds exactly one JSON document, whatever a library prints (C code included)
        global _json_out
        with stdout_to_stderr() as _json_out:
            try:
                return func(args)
            finally:
                _json_out = None
    except RlscaleError as exc:
        if debug:
            raise
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        print(
            f"{command}: internal error: {type(exc).__name__}: {exc} (set RLSCALE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
