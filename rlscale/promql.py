"""PromQL templates of the pipeline metrics: the documented defaults and the check a custom template must pass.

A core module (no client library, no Kubernetes): the spec validates its ``kubernetes.promql`` section with
`check_template`, and `rlscale.kube.prometheus` fills the templates in to query Prometheus (it re-exports these
names). Templates are Python format strings with the fields ``pipeline``, ``stage``, ``window`` (a PromQL
duration), ``q`` (a quantile) and ``sla`` (a regex matching the ``le`` label of the SLA's bucket); PromQL's own
braces are written ``{{ }}``.
"""

from __future__ import annotations

import string

_STAGE = '{{pipeline="{pipeline}",stage="{stage}"}}'
_PIPE = '{{pipeline="{pipeline}"}}'
DEFAULT_TEMPLATES = {
    "arrival_rate": f"sum(rate(rlscale_requests_total{_STAGE}[{{window}}]))",
    # the history policies see: irate uses the last two scrapes in the window, so peaks keep the scrape's resolution
    "arrival_history": f"sum(irate(rlscale_requests_total{_STAGE}[{{window}}]))",
    "latency_quantile": (
        f"histogram_quantile({{q}}, sum by (le) (rate(rlscale_request_latency_seconds_bucket{_STAGE}[{{window}}])))"
    ),
    "queue_length": f"sum(rlscale_queue_length{_STAGE})",
    "busy_rate": f"sum(rate(rlscale_busy_seconds_total{_STAGE}[{{window}}]))",
    "e2e_latency_quantile": (
        f"histogram_quantile({{q}}, sum by (le) (rate(rlscale_e2e_latency_seconds_bucket{_PIPE}[{{window}}])))"
    ),
    "completed_rate": f"sum(rate(rlscale_e2e_latency_seconds_count{_PIPE}[{{window}}]))",
    "late_rate": (
        f"sum(rate(rlscale_e2e_latency_seconds_count{_PIPE}[{{window}}])) - "
        'sum(rate(rlscale_e2e_latency_seconds_bucket{{pipeline="{pipeline}",le=~"{sla}"}}[{window}]))'
    ),
    "dropped_rate": f"sum(rate(rlscale_dropped_requests_total{_PIPE}[{{window}}]))",
}
"""The template of each metric the sidecar reads, by name (the names a spec's ``kubernetes.promql`` may use)."""

TEMPLATE_FIELDS = {"pipeline": "p", "stage": "s", "window": "10s", "q": 0.99, "sla": "1|1\\\\.0"}
"""The fields a template may use, with sample values that `check_template` formats it with."""

MAX_TEMPLATE_CHARS = 4096  # the longest default is a few hundred characters


def check_template(name: str, template: str) -> str | None:
    """Why a template cannot be used (unknown name, too long, unknown field, bad braces), or None if it can.

    Args:
        name: the template's name (a key of `DEFAULT_TEMPLATES`).
        template: the format string.

    Returns:
        The problem in words, or None.
    """
    if name not in DEFAULT_TEMPLATES:
        return f"unknown template {name!r} (known: {', '.join(DEFAULT_TEMPLATES)})"
    if len(template) > MAX_TEMPLATE_CHARS:
        return f"longer than {MAX_TEMPLATE_CHARS} characters"
    try:
        for _text, field, spec, conversion in string.Formatter().parse(template):
            # plain {field} only: a format spec ({pipeline:>100000000}) or conversion would let a template grow
            # the query without bound, and nothing a query needs is written that way
            if field is not None and (spec or conversion):
                return (
                    f"{{{field}}} must be plain, without a conversion or format spec; write PromQL braces as {{{{ }}}}"
                )
            # a field is one of the names, nothing more: {pipeline.__class__} or {stage[0]} would reach into
            # Python objects when the template is filled in
            if field is not None and field not in TEMPLATE_FIELDS:
                return (
                    f"unknown field {{{field}}} (fields, plain: {', '.join(TEMPLATE_FIELDS)}; no attributes or "
                    "indexes; write PromQL braces as {{ }})"
                )
        template.format(**TEMPLATE_FIELDS)
    except (ValueError, IndexError) as exc:
        return f"not a format string ({exc}); write PromQL braces as {{{{ }}}}"
    return None
