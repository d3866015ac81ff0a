"""The argument groups several commands share, each declared once, and what turns them into values.

The spec argument (``--pipeline`` / ``--spec``), ``--set``, ``--json``, the planner and agent flags, ``--guard``
and the live flags (``sidecar``, ``manifests``); the ``int_in`` / ``float_in`` argparse types that make a bad
value one usage line (exit 2).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

from rlscale.errors import RlscaleError

log = logging.getLogger("rlscale")

MAX_LOAD_SCALE = 1000.0
"""The largest ``--load-scale`` (the scaled trace must also stay within `rlscale.inputs`' limits)."""


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


def int_list_in(low: int, high: int, *, max_items: int) -> Callable[[str], list[int]]:
    """An argparse ``type``: comma-separated integers in [low, high] (``128,128``), 1 to ``max_items`` of them."""
    return _list_of(int_in(low, high), "integers", max_items)


def float_list_in(low: float, high: float, *, max_items: int, exclusive_low: bool = False) -> Callable[[str], list]:
    """An argparse ``type``: comma-separated finite numbers in [low, high] (or (low, high]), 1 to ``max_items``."""
    return _list_of(float_in(low, high, exclusive_low=exclusive_low), "numbers", max_items)


def _list_of(item: Callable[[str], object], what: str, max_items: int) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not 1 <= len(parts) <= max_items or not all(parts):
            raise argparse.ArgumentTypeError(f"expected 1 to {max_items} comma-separated {what}, got {text!r}")
        return [item(p) for p in parts]

    return parse


def csv_list(value: str) -> list[str]:
    """An argparse ``type``: a comma-separated list of names (at least one)."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


# ------------------------------------------------------------------------------------------- the spec


def add_spec(p: argparse.ArgumentParser, flag: str = "--pipeline") -> None:
    """The required spec argument (``--pipeline`` in the offline commands, ``--spec`` in the cluster ones)."""
    p.add_argument(flag, required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")


def add_set(p: argparse.ArgumentParser) -> None:
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


def load_spec(name: str, args: argparse.Namespace):
    """The spec ``name`` (bundled name or file) with the command's ``--set`` overrides; `SpecError` (exit 2)."""
    from rlscale.spec import load_spec as load

    return load(name, getattr(args, "overrides", None) or ())


def spec_file(name: str, args: argparse.Namespace, folder: Path) -> str:
    """The spec argument for code that loads the spec itself (``train``, ``compare``, the manifests' ConfigMap).

    Without ``--set`` it is ``name``. With it, the overridden spec is written to ``folder`` as
    ``spec-<pipeline>-<digest>.yaml`` (profiles as absolute paths; the same overrides give the same file, so a
    resumed run finds the same spec) and that file's path is returned.
    """
    from rlscale.paths import atomic_write_text, inside
    from rlscale.spec import dump_spec

    spec = load_spec(name, args)
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


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def add_load_scale(p: argparse.ArgumentParser) -> None:
    """``--load-scale X``: multiply every trace's per-second counts by X (``simulate``, ``compare``)."""
    p.add_argument(
        "--load-scale",
        type=float_in(0.0, MAX_LOAD_SCALE, exclusive_low=True),
        default=1.0,
        metavar="X",
        help=f"multiply every second's request count by X, rounded half up to whole requests (floor(count*X+0.5)), "
        f"0 < X <= {MAX_LOAD_SCALE:g}; the trace is then named NAME@xX (bursty@x2) and records carry load_scale "
        "(default 1: the trace as it is)",
    )


# ---------------------------------------------------------------------------------- planner and guard


def add_planner_flags(p: argparse.ArgumentParser) -> None:
    """``--solver``, ``--predictor``, ``--headroom``, ``--hold-delta``, ``--agent``, ``--safety-load``, ``--guard``,
    ``--tuning``, the HPA's ``--hpa-target``, ``--hpa-variant``, ``--hpa-batch``, ``--hpa-cores`` and the VPA's
    ``--vpa-target``, ``--vpa-margin``, ``--vpa-min-replicas``, ``--vpa-updater``, ``--vpa-variant``,
    ``--vpa-cores``."""
    from agents.vpa import UPDATERS
    from ilp_baseline.policy import ALL_SOLVERS
    from ilp_baseline.safety import DEFAULT_LOAD, LOAD_MODES
    from rlscale.policies.registry import PREDICTORS
    from rlscale.policies.tunings import HEADROOM_RANGE, HOLD_DELTA_RANGE, HPA_TARGET_RANGE

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
        type=float_in(*HEADROOM_RANGE),
        metavar="H",
        help="plan for H x the predicted load, 0.1-10 (default: IPA's published margin for the pipeline; ipa-tuned, "
        "ipa-hold: the tuned one, which --tuning's file must also hold within 0.1-10)",
    )
    p.add_argument(
        "--hold-delta",
        type=float_in(*HOLD_DELTA_RANGE),
        metavar="D",
        help="ipa-hold: re-plan (change variant, batch or cores) only when it gains more than D cores' worth of "
        "objective over resizing replicas, 0 <= D <= 1e6 (default: the tuned one, held to the same range; 0.5 for a "
        "pipeline without a tuning)",
    )
    p.add_argument(
        "--agent",
        metavar="PATH",
        help="agent for ppo/ppo-raw: a run's actor.npz (numpy data, never unpickled; a model.zip is refused: convert "
        "one you trained with python -m agents.ppo MODEL.zip OUT.npz) (default: bundled)",
    )
    p.add_argument(
        "--safety-load",
        choices=LOAD_MODES,
        help="load the safety layer protects for: the last interval's peak (observed), that plus the backlog, the "
        f"interval's mean plus the backlog (drain), or the LSTM's prediction (default {DEFAULT_LOAD})",
    )
    add_guard(p)
    p.add_argument(
        "--tuning",
        metavar="FILE.json",
        help="tuning file of ipa-tuned/ipa-hold/hpa-tuned, written by rlscale tune --out FILE.json (default: the "
        "bundled tunings of the bundled pipelines); its values must lie within the ranges of --headroom, "
        "--hold-delta and --hpa-target, else the command stops with one line",
    )
    p.add_argument(
        "--hpa-target",
        type=float_in(*HPA_TARGET_RANGE, exclusive_low=True),
        metavar="U",
        help="hpa/hpa-tuned: target CPU utilisation, (0, 1] (default 0.8, Kubernetes'; hpa-tuned: the tuned one, "
        "held to the same range)",
    )
    p.add_argument(
        "--hpa-variant",
        type=csv_list,
        metavar="V1,V2,...",
        help="hpa/hpa-tuned: run these variants, one per stage (default: the variants deployed; a simulation starts "
        "from IPA's FA2-high variants)",
    )
    p.add_argument(
        "--hpa-batch",
        type=int_list_in(1, 1_000_000, max_items=64),
        metavar="B|B1,B2,...",
        help="hpa/hpa-tuned: batch size, one for every stage or one per stage (default: as deployed; a simulation "
        "plans it for the first interval's load)",
    )
    p.add_argument(
        "--hpa-cores",
        type=int_list_in(1, 1_000_000, max_items=64),
        metavar="C|C1,C2,...",
        help="hpa/hpa-tuned: cores per replica, one for every stage or one per stage (default: as --hpa-batch)",
    )
    p.add_argument(
        "--vpa-target",
        type=float_in(0.0, 1.0, exclusive_low=True),
        metavar="P",
        help="vpa: CPU usage percentile the recommendation targets, (0, 1] (default 0.9, the VPA recommender's "
        "--target-cpu-percentile)",
    )
    p.add_argument(
        "--vpa-margin",
        type=float_in(0.0, 10.0),
        metavar="F",
        help="vpa: safety margin added to the percentile, a fraction in [0, 10] (default 0.15, the VPA recommender's "
        "--recommendation-margin-fraction)",
    )
    p.add_argument(
        "--vpa-min-replicas",
        type=int_in(1, 10_000),
        metavar="N",
        help="vpa: change no stage with fewer replicas, 1-10000 (default 2, the VPA updater's --min-replicas); a "
        "simulation starts every stage with at least N replicas where the stage allows them (kubernetes updater only)",
    )
    p.add_argument(
        "--vpa-updater",
        choices=UPDATERS,
        help="vpa: who applies the recommendation: kubernetes (the VPA updater: 1 min ticks, at least "
        "--vpa-min-replicas replicas, outside the bounds or 12 h old pods 10%% off; default) or infadapter "
        "(InfAdapter's VPA baseline: every decision the target rounded up to the core list; a target not above the "
        "cores only at the 5th such decision in a row)",
    )
    p.add_argument(
        "--vpa-variant",
        type=csv_list,
        metavar="V1,V2,...",
        help="vpa: run these variants, one per stage, or one name for every stage that has it (default: the variants "
        "deployed; a simulation starts from IPA's FA2-high variants)",
    )
    p.add_argument(
        "--vpa-cores",
        type=int_list_in(1, 1_000_000, max_items=64),
        metavar="C|C1,C2,...",
        help="vpa: initial cores per replica, one for every stage or one per stage, from the stage's core list; the "
        "VPA changes them from then on (default: planned for the first interval's load)",
    )


def add_guard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guard",
        choices=("default", "on", "off"),
        default="default",
        help="put the safety layer in front of the policy (on) or not (off); default: on for ppo, off for the rest "
        "(ppo-raw and the published baselines); the same in simulate, compare and the sidecar, and in every record",
    )


def guard_flag(args: argparse.Namespace) -> bool | None:
    """``--guard`` as the registry takes it: True (on), False (off) or None (the policy's default)."""
    return None if args.guard == "default" else args.guard == "on"


def policy_options(args: argparse.Namespace, policies: list[str] | None = None):
    """The planner and agent flags of `add_planner_flags` as `rlscale.policies.registry.PolicyOptions`.

    Raises:
        RlscaleError: ``--agent`` given while none of ``policies`` (when known) is an agent that would use it.
    """
    from rlscale.policies.registry import PolicyOptions

    if args.agent is not None and policies is not None and not {"ppo", "ppo-raw"} & set(policies):
        raise RlscaleError(f"--agent is for the ppo and ppo-raw policies; {', '.join(policies)} would ignore it")
    if args.tuning is not None and policies is not None and not {"ipa-tuned", "ipa-hold", "hpa-tuned"} & set(policies):
        raise RlscaleError(
            f"--tuning is for the ipa-tuned, ipa-hold and hpa-tuned policies; {', '.join(policies)} would ignore it"
        )
    if args.hold_delta is not None and policies is not None and "ipa-hold" not in policies:
        raise RlscaleError(f"--hold-delta is for the ipa-hold policy; {', '.join(policies)} would ignore it")
    hpa_flags = [
        flag
        for flag, value in (
            ("--hpa-target", args.hpa_target),
            ("--hpa-variant", args.hpa_variant),
            ("--hpa-batch", args.hpa_batch),
            ("--hpa-cores", args.hpa_cores),
        )
        if value is not None
    ]
    if hpa_flags and policies is not None and not {"hpa", "hpa-tuned"} & set(policies):
        raise RlscaleError(
            f"{hpa_flags[0]} is for the hpa and hpa-tuned policies; {', '.join(policies)} would ignore it"
        )
    vpa_flags = [
        flag
        for flag, value in (
            ("--vpa-target", args.vpa_target),
            ("--vpa-margin", args.vpa_margin),
            ("--vpa-min-replicas", args.vpa_min_replicas),
            ("--vpa-updater", args.vpa_updater),
            ("--vpa-variant", args.vpa_variant),
            ("--vpa-cores", args.vpa_cores),
        )
        if value is not None
    ]
    if vpa_flags and policies is not None and "vpa" not in policies:
        raise RlscaleError(f"{vpa_flags[0]} is for the vpa policy; {', '.join(policies)} would ignore it")
    if args.vpa_min_replicas is not None and args.vpa_updater == "infadapter":
        raise RlscaleError("--vpa-min-replicas is for --vpa-updater kubernetes; the infadapter updater would ignore it")

    def as_tuple(values):
        return tuple(values) if values is not None else None

    return PolicyOptions(
        solver=args.solver,
        predictor=args.predictor,
        headroom=args.headroom,
        agent=args.agent,
        safety_load=args.safety_load,
        guard=guard_flag(args),
        tuning=args.tuning,
        hpa_target=args.hpa_target,
        hpa_variant=as_tuple(args.hpa_variant),
        hpa_batch=as_tuple(args.hpa_batch),
        hpa_cores=as_tuple(args.hpa_cores),
        hold_delta=args.hold_delta,
        vpa_target=args.vpa_target,
        vpa_margin=args.vpa_margin,
        vpa_min_replicas=args.vpa_min_replicas,
        vpa_updater=args.vpa_updater,
        vpa_variant=as_tuple(args.vpa_variant),
        vpa_cores=as_tuple(args.vpa_cores),
    )


# --------------------------------------------------------------------------------------------- live


def add_live_flags(p: argparse.ArgumentParser) -> None:
    """The sidecar's decision flags, shared by ``sidecar`` and ``manifests`` (which passes them on)."""
    from rlscale.kube.manifests import INTERVAL_RANGE_S
    from rlscale.policies.registry import LIVE_POLICIES

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
