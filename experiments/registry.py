"""Policy names -> constructors: the one place ``simulate``, ``compare`` and ``demo`` build policies from."""

from __future__ import annotations

from collections.abc import Callable

from agents.static import StaticPolicy
from rlscale.errors import RlscaleError
from rlscale.interfaces import Policy
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace

PolicyFactory = Callable[[PipelineSpec, Trace], Policy]

POLICIES: dict[str, tuple[PolicyFactory, str]] = {
    "static-max": (
        lambda spec, trace: StaticPolicy(spec, "max", trace.peak_rps),
        "most accurate variants, sized once for the trace's peak",
    ),
    "static-min": (
        lambda spec, trace: StaticPolicy(spec, "min", trace.peak_rps),
        "cheapest variants, sized once for the trace's peak",
    ),
}


def policy_names() -> list[str]:
    return list(POLICIES)


def make_policy(name: str, spec: PipelineSpec, trace: Trace) -> Policy:
    """Build the policy called ``name`` for this pipeline and trace."""
    try:
        factory, _ = POLICIES[name]
    except KeyError:
        raise RlscaleError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
    return factory(spec, trace)
