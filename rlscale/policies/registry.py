"""Policy names -> constructors: the one place ``simulate``, ``compare``, ``demo`` and the sidecar build policies
from (the composition root hands `make_policy` to `rlscale.evaluate.compare` and `rlscale.evaluate.demo`).

``ipa``, ``fa2-low``, ``fa2-high`` and ``rim`` default to IPA's own choices: the LSTM predictor and IPA's
published margin for the pipeline. ``ipa-tuned`` is ``ipa`` with the headroom that scored best on training
windows, and ``hpa-tuned`` the HPA with the target utilisation that did: from ``--tuning FILE`` (written by
``rlscale tune``), else from the bundled tunings (``rlscale/data/ipa_tuned.json``,
`rlscale.policies.tunings.TUNED_PATH`). ``ipa-hold`` is IPA's planner with hysteresis (`ILPPolicy` with
``hold_delta``): it keeps each stage's variant, batch and cores and resizes replicas, unless a full re-plan beats
that by more than δ core-equivalents of objective; its headroom and δ come from the tuning file likewise (a
pipeline the bundled tunings lack gets `HOLD_DEFAULTS`), ``--headroom`` / ``--hold-delta`` override them.
``oracle`` is IPA's one-interval planner given the true peak load of the coming interval (foresight no live policy
has), not an upper bound: it plans one interval at a time and pays for reconfigurations like any other policy, so
a policy that plans ahead can beat it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.hpa import TARGET_UTILISATION, HPAPolicy
from agents.static import StaticPolicy
from agents.vpa import MIN_REPLICAS, SAFETY_MARGIN, TARGET_PERCENTILE, UPDATERS, VPAPolicy
from ilp_baseline.policy import ALL_SOLVERS, ILPPolicy, ipa_headroom
from rlscale.control import Controller, guard_default
from rlscale.errors import RlscaleError
from rlscale.interfaces import Policy, Predictor
from rlscale.lstm import LSTMPredictor
from rlscale.policies.tunings import HOLD_DEFAULTS, tuned_hold, tuned_value
from rlscale.predictors import EWMAPredictor, MinutePeakPredictor, OraclePredictor, ReactivePredictor
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace

log = logging.getLogger(__name__)

PREDICTORS = ("reactive", "ewma", "lstm", "oracle")


@dataclass(frozen=True)
class PolicyOptions:
    """Flags that shape planner policies; None means the policy's own default.

    Attributes:
        solver: ``cbc``, ``highs`` or ``dp`` (default ``dp``: the same optimum, fastest).
        predictor: ``reactive``, ``ewma``, ``lstm`` or ``oracle`` (default ``lstm``, IPA's).
        headroom: plan for this multiple of the predicted load (default IPA's margin for the pipeline).
        agent: a trained agent for ``ppo`` / ``ppo-raw``: an actor ``.npz`` (a run's ``actor.npz``; a ``model.zip``
            is refused, never unpickled); default: the bundled agent.
        safety_load: the safety layer's load estimate: observed, backlog (default) or predicted.
        guard: put the safety layer in front of the policy (True) or not (False); None: the policy's default
            (`rlscale.control.guard_default`: ``ppo`` yes, every other policy no).
        tuning: a tuning file (``rlscale tune --out FILE``) for ``ipa-tuned`` / ``hpa-tuned``; default: the bundled
            tunings.
        hpa_target: the HPA's target utilisation, (0, 1] (default 0.8; ``hpa-tuned``: the tuned one).
        hpa_variant: pin the HPA's variant of every stage (one name per stage); default: the variants in force (a
            simulation's warm start installs IPA's FA2-high variants).
        hpa_batch: pin the HPA's batch size (one for every stage, or one per stage); default: in force / planned.
        hpa_cores: pin the HPA's cores per replica (as ``hpa_batch``).
        hold_delta: ``ipa-hold``'s hysteresis margin, >= 0 core-equivalents of objective (default: the tuned one).
        vpa_target: the VPA's target CPU percentile, (0, 1] (default 0.9, ``--target-cpu-percentile``).
        vpa_margin: the VPA's safety margin fraction, [0, 10] (default 0.15, ``--recommendation-margin-fraction``).
        vpa_min_replicas: the VPA updater changes no stage with fewer replicas (default 2, ``--min-replicas``).
        vpa_updater: who applies the VPA's recommendation: ``kubernetes`` (the VPA updater, default) or
            ``infadapter`` (InfAdapter's adapter: the target every decision, a lower one after 4 skipped decisions).
        vpa_variant: pin the VPA's variants: one name per stage, or one name for every stage that offers it;
            default: the variants in force (a simulation's warm start installs IPA's FA2-high variants).
        vpa_cores: the VPA's initial cores per replica (one for every stage, or one per stage); default: planned.
    """

    solver: str | None = None
    predictor: str | None = None
    headroom: float | None = None
    agent: str | None = None
    safety_load: str | None = None
    guard: bool | None = None
    tuning: str | None = None
    hpa_target: float | None = None
    hpa_variant: tuple[str, ...] | None = None
    hpa_batch: tuple[int, ...] | None = None
    hpa_cores: tuple[int, ...] | None = None
    hold_delta: float | None = None
    vpa_target: float | None = None
    vpa_margin: float | None = None
    vpa_min_replicas: int | None = None
    vpa_updater: str | None = None
    vpa_variant: tuple[str, ...] | None = None
    vpa_cores: tuple[int, ...] | None = None


def make_predictor(name: str, trace: Trace | None) -> Predictor:
    if name == "reactive":
        return ReactivePredictor()
    if name == "ewma":
        return EWMAPredictor()
    if name == "lstm":
        return LSTMPredictor()
    if name == "oracle":
        if trace is None:
            raise RlscaleError("the oracle predictor needs the future of a trace; it cannot run live")
        return OraclePredictor(trace)
    raise RlscaleError(f"unknown predictor {name!r} (known: {', '.join(PREDICTORS)})")


def tuned_headroom(spec: PipelineSpec, tuning: str | None = None) -> float:
    """The headroom ``rlscale tune`` chose for this pipeline on training windows (in ``tuning``, else bundled)."""
    return tuned_value(spec, "ipa", tuning)


def _hpa(name: str) -> Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy]:
    def build(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
        target = opts.hpa_target
        if target is None:
            target = tuned_value(spec, "hpa", opts.tuning) if name == "hpa-tuned" else TARGET_UTILISATION
        policy = HPAPolicy(spec, opts.hpa_variant, target, batch=opts.hpa_batch, cores=opts.hpa_cores)
        policy.name = name
        return policy

    return build


def _vpa(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
    """The VPA; a flag left unset takes the spec's ``vpa`` section (the reproduced system's setup), then the
    VPA's defaults."""
    section = spec.vpa
    updater = opts.vpa_updater or (section.updater if section is not None else UPDATERS[0])
    variants = opts.vpa_variant if opts.vpa_variant is not None else (section.variant if section else None)
    cores = opts.vpa_cores if opts.vpa_cores is not None else (section.cores if section else None)
    if opts.vpa_min_replicas is not None and updater == "infadapter":
        raise RlscaleError("--vpa-min-replicas is for --vpa-updater kubernetes; the infadapter updater would ignore it")
    policy = VPAPolicy(
        spec,
        TARGET_PERCENTILE if opts.vpa_target is None else opts.vpa_target,
        SAFETY_MARGIN if opts.vpa_margin is None else opts.vpa_margin,
        min_replicas=MIN_REPLICAS if opts.vpa_min_replicas is None else opts.vpa_min_replicas,
        updater=updater,
        variants=variants,
        cores=cores,
    )
    if section is not None:  # after the checks: bad input gets its one error line only
        log.info(
            "vpa: %s's vpa section: updater %s, variant %s, cores %s (flags override)",
            spec.name,
            updater,
            ",".join(variants) if variants else "in force",
            ",".join(map(str, cores)) if cores else "planned",
        )
    return policy


def hold_settings(spec: PipelineSpec, opts: PolicyOptions) -> tuple[float, float]:
    """``ipa-hold``'s (headroom, δ): the flags, else the tuning (``opts.tuning``, else bundled), else, for a pipeline
    the bundled tunings lack, `HOLD_DEFAULTS`."""
    if opts.headroom is not None and opts.hold_delta is not None:
        return opts.headroom, opts.hold_delta
    tuned = tuned_hold(spec, opts.tuning)
    if tuned is None:
        tuned = HOLD_DEFAULTS
        log.info("ipa-hold: no bundled tuning for %s; headroom %g, delta %g", spec.name, *tuned)
    headroom = opts.headroom if opts.headroom is not None else tuned[0]
    return headroom, opts.hold_delta if opts.hold_delta is not None else tuned[1]


def _planner(mode: str, name: str) -> Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy]:
    def build(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
        headroom, delta = opts.headroom, None
        if name == "ipa-hold":
            headroom, delta = hold_settings(spec, opts)
        elif headroom is None:
            headroom = tuned_headroom(spec, opts.tuning) if name == "ipa-tuned" else ipa_headroom(spec)
        return ILPPolicy(
            spec,
            make_predictor(opts.predictor or "lstm", trace),
            mode=mode,
            solver=opts.solver or "dp",
            headroom=headroom,
            hold_delta=delta,
            peak_rps=trace.peak_rps if trace is not None else None,
            name=name,
        )

    return build


def _oracle(spec: PipelineSpec, trace: Trace, opts: PolicyOptions) -> Policy:
    if opts.predictor not in (None, "oracle"):
        raise RlscaleError("the oracle policy always plans on the true load; drop --predictor")
    return ILPPolicy(
        spec,
        OraclePredictor(trace),
        mode="ipa",
        solver=opts.solver or "dp",
        headroom=opts.headroom or 1.0,
        name="oracle",
    )


def _infadapter(single: bool) -> Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy]:
    def build(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
        from ilp_baseline.infadapter import HEADROOM, InfAdapterPolicy

        if opts.predictor is None:  # InfAdapter's: minute peaks, a weighted mean until 10 minutes are known
            predictor: Predictor = MinutePeakPredictor(LSTMPredictor())
        else:
            predictor = make_predictor(opts.predictor, trace)
        return InfAdapterPolicy(spec, predictor, single=single, headroom=opts.headroom or HEADROOM)

    return build


def _sponge(rule: str) -> Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy]:
    def build(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
        from ilp_baseline.sponge import SpongePolicy

        return SpongePolicy(spec, rule)

    return build


def _ppo(name: str) -> Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy]:
    def build(spec: PipelineSpec, trace: Trace | None, opts: PolicyOptions) -> Policy:
        from agents.inference import PPOPolicy  # numpy only: an actor .npz, never a (pickled) model.zip

        agent = PPOPolicy(spec, Path(opts.agent) if opts.agent else None)
        agent.name = name
        return agent

    return build


POLICIES: dict[str, tuple[Callable[[PipelineSpec, Trace | None, PolicyOptions], Policy], str]] = {
    "ppo": (_ppo("ppo"), "the PPO agent behind the safety layer (rlscale's policy)"),
    "ppo-raw": (_ppo("ppo-raw"), "the PPO agent alone (ablation: what the safety layer buys)"),
    "ipa": (_planner("ipa", "ipa"), "IPA: ILP over variant, batch, replicas on the predicted load"),
    "ipa-tuned": (_planner("ipa", "ipa-tuned"), "IPA with the headroom that scored best on training windows"),
    "ipa-hold": (
        _planner("ipa", "ipa-hold"),
        "IPA with hysteresis: keeps variant, batch and cores and resizes replicas unless a re-plan gains more than "
        "--hold-delta core-equivalents (headroom and delta tuned on training windows)",
    ),
    "oracle": (
        _oracle,
        "IPA's one-interval planner given the true next-interval load (foresight; offline only), not an upper bound",
    ),
    "fa2-low": (_planner("fa2-low", "fa2-low"), "cheapest variants fixed; batch, cores, replicas optimised"),
    "fa2-high": (_planner("fa2-high", "fa2-high"), "heavier variants fixed; batch, cores, replicas optimised"),
    "rim": (_planner("rim", "rim"), "replicas fixed (sized for the peak); variant and batch optimised"),
    "hpa": (
        _hpa("hpa"),
        "Kubernetes HPA on CPU utilisation (target 80%, --hpa-target): scales replicas only; variant, batch and cores "
        "as deployed (a simulation starts from IPA's FA2-high variants) unless --hpa-variant/--hpa-batch/--hpa-cores",
    ),
    "hpa-tuned": (_hpa("hpa-tuned"), "the HPA with the target utilisation that scored best on training windows"),
    "vpa": (
        _vpa,
        "Kubernetes VPA recommender and updater on CPU (p90 + 15%, 24 h half-life, 1 min ticks, --vpa-target, "
        "--vpa-margin): changes cores per replica only; variant, batch and replicas as deployed (a simulation starts "
        "from IPA's FA2-high variants with at least --vpa-min-replicas replicas per stage, or --vpa-variant/"
        "--vpa-cores); --vpa-updater infadapter applies the target as InfAdapter's VPA baseline does (every decision, "
        "a lower one after 4 skipped decisions, no replica minimum)",
    ),
    "infadapter": (
        _infadapter(single=False),
        "InfAdapter: integer cores per variant and a load split over the variants (a mix of pools), solved exactly, "
        "on its minute-peak prediction + 10% (single-stage pipelines)",
    ),
    "ms-plus": (
        _infadapter(single=True),
        "InfAdapter's MS+ baseline: the one variant and fewest cores that cover the predicted load + 10%",
    ),
    "sponge": (
        _sponge("sponge"),
        "Sponge: every interval, the fewest cores then the smallest batch of one replica whose drain of the last "
        "second's load meets 0.9 x the remaining budget's low quantile (cores resized in place; single-stage)",
    ),
    "fa2": (
        _sponge("fa2"),
        "Sponge's horizontal FA2 baseline: one core per replica, the fewest replicas then the smallest batch (up to "
        "8) passing Sponge's check (not IPA's fa2-low/fa2-high; needs max_replicas > 1; single-stage)",
    ),
    "static-max": (
        lambda spec, trace, opts: StaticPolicy(spec, "max", trace.peak_rps),
        "most accurate variants, sized once for the trace's peak",
    ),
    "static-min": (
        lambda spec, trace, opts: StaticPolicy(spec, "min", trace.peak_rps),
        "cheapest variants, sized once for the trace's peak",
    ),
}


# policies that need no knowledge of the future (the oracle, static sizing and rim read the whole trace)
LIVE_POLICIES = (
    "ppo",
    "ppo-raw",
    "ipa",
    "ipa-tuned",
    "ipa-hold",
    "fa2-low",
    "fa2-high",
    "hpa",
    "hpa-tuned",
    "vpa",
    "infadapter",
    "ms-plus",
    "sponge",
    "fa2",
)


def make_live_policy(name: str, spec: PipelineSpec, options: PolicyOptions | None = None) -> Controller:
    """The policy called ``name`` for a live cluster, behind its guard: the same decision path as `make_policy`.

    Only policies that need no future of a trace can run live (`LIVE_POLICIES`); none of them is given a trace.
    """
    if name not in LIVE_POLICIES:
        raise RlscaleError(
            f"policy {name!r} cannot run live (needs the future of a trace); use one of: {', '.join(LIVE_POLICIES)}"
        )
    if options is not None and options.predictor == "oracle":
        raise RlscaleError("the oracle predictor needs the future of a trace; it cannot run live")
    return make_policy(name, spec, None, options)


def default_live_policy(spec: PipelineSpec) -> str:
    """``ppo`` where the pipeline has a bundled agent that did not trail IPA on its validation cells (its actor
    file records ``validation_score``, the mean margin over IPA in cores; agents bundled before it was recorded
    count as not trailing), else ``ipa``."""
    from agents.actor import load_actor
    from agents.inference import bundled_agent

    path = bundled_agent(spec.name)
    if not path.exists():
        return "ipa"
    score = load_actor(path).training.get("validation_score")
    return "ipa" if isinstance(score, int | float) and score < 0 else "ppo"


def policy_names() -> list[str]:
    return list(POLICIES)


def make_policy(name: str, spec: PipelineSpec, trace: Trace | None, options: PolicyOptions | None = None) -> Controller:
    """The policy called ``name`` for this pipeline (and trace, offline), behind its guard: a `Controller`.

    ``ppo`` is the agent behind the safety layer and ``ppo-raw`` the agent alone; every other policy runs as
    published, without a guard, unless ``options.guard`` says otherwise. The same name gives the same decision
    path in ``simulate``, ``compare`` and the sidecar, and records carry the guard.
    """
    opts = options or PolicyOptions()
    if opts.solver is not None and opts.solver not in ALL_SOLVERS:
        raise RlscaleError(f"unknown solver {opts.solver!r} (known: {', '.join(ALL_SOLVERS)})")
    if opts.predictor is not None and opts.predictor not in PREDICTORS:
        raise RlscaleError(f"unknown predictor {opts.predictor!r} (known: {', '.join(PREDICTORS)})")
    if opts.headroom is not None and not opts.headroom > 0:
        raise RlscaleError(f"headroom must be > 0, got {opts.headroom}")
    if opts.hold_delta is not None and not (math.isfinite(opts.hold_delta) and opts.hold_delta >= 0):
        raise RlscaleError(f"hold delta must be a finite number >= 0, got {opts.hold_delta}")
    try:
        factory, _ = POLICIES[name]
    except KeyError:
        raise RlscaleError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
    policy = factory(spec, trace, opts)
    guarded = guard_default(name) if opts.guard is None else opts.guard
    if not guarded:
        return Controller(policy)
    from ilp_baseline.safety import DEFAULT_LOAD, SafetyLayer

    load = opts.safety_load or DEFAULT_LOAD
    predictor = getattr(policy, "predictor", None) if load == "predicted" else None
    if load == "predicted" and predictor is None:
        predictor = make_predictor("lstm", trace)
    return Controller(policy, SafetyLayer(spec, load=load, predictor=predictor))
