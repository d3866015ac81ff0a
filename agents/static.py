"""Static policies: one configuration, planned once for the trace's peak load, held for the whole run.

- ``static-max``: the most accurate variant of every stage;
- ``static-min``: the cheapest (least accurate) variant of every stage.

Batch, cores and replicas are chosen once for the peak: the fewest total cores whose planned latency
(DESIGN.md section 3) fits the SLA; if nothing fits, the lowest-latency combination, with a warning.
"""

from __future__ import annotations

import logging

from rlscale.model import plan_fixed_variants
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState

log = logging.getLogger(__name__)


class StaticPolicy:
    """Holds one configuration for the whole run.

    Args:
        spec: the pipeline.
        which: ``max`` (most accurate variants) or ``min`` (cheapest variants).
        peak_rps: the load to size for (the trace's peak).
    """

    def __init__(self, spec: PipelineSpec, which: str, peak_rps: float) -> None:
        if which not in ("max", "min"):
            raise ValueError(f"which must be 'max' or 'min', got {which!r}")
        self.name = f"static-{which}"
        pick = max if which == "max" else min
        variants = [pick(st.variants, key=lambda v: v.accuracy).name for st in spec.stages]
        self.config = plan_fixed_variants(spec, variants, peak_rps)
        log.debug("%s for %.1f rps: %s", self.name, peak_rps, self.config)

    def decide(self, state: PipelineState) -> PipelineConfig:
        return self.config
