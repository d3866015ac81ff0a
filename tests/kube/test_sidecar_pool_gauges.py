"""The sidecar's configuration gauges for a stage with pools: per pool, and stage figures over every pool (issue 27:
a pooled stage's replicas and variant were exported from its first pool only)."""

from __future__ import annotations

from rlscale.kube.sidecar import SidecarMetrics, StepReport
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig, VariantPool

SPEC = load_spec("infadapter")
MIX = PipelineConfig(
    (StageConfig.of_pools([VariantPool("resnet18", 1, 2, 4, share=0.3), VariantPool("resnet50", 1, 3, 8, share=0.7)]),)
)


def gauge(metrics: SidecarMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_pooled_stage_is_exported_pool_by_pool():
    metrics = SidecarMetrics()
    metrics.record(StepReport("applied", "", config=MIX), SPEC)
    assert gauge(metrics, "rlscale_sidecar_stage_replicas", stage="resnet") == 5  # 2 + 3, not the first pool's 2
    assert gauge(metrics, "rlscale_sidecar_stage_cores", stage="resnet") == 8  # the pool serving the most requests
    assert gauge(metrics, "rlscale_sidecar_stage_variant", stage="resnet", variant="resnet18") == 0.3
    assert gauge(metrics, "rlscale_sidecar_stage_variant", stage="resnet", variant="resnet50") == 0.7
    assert gauge(metrics, "rlscale_sidecar_stage_variant", stage="resnet", variant="resnet101") == 0.0
    assert gauge(metrics, "rlscale_sidecar_pool_replicas", stage="resnet", variant="resnet50") == 3
    assert gauge(metrics, "rlscale_sidecar_pool_cores", stage="resnet", variant="resnet18") == 4
    assert gauge(metrics, "rlscale_sidecar_pool_batch", stage="resnet", variant="resnet152") == 0
    # back to one pool: the pool that left reads 0, the stage figures are that pool's
    one = PipelineConfig((StageConfig.one("resnet18", 1, 1, 4),))
    metrics.record(StepReport("applied", "", config=one), SPEC)
    assert gauge(metrics, "rlscale_sidecar_pool_replicas", stage="resnet", variant="resnet50") == 0
    assert gauge(metrics, "rlscale_sidecar_stage_replicas", stage="resnet") == 1
    assert gauge(metrics, "rlscale_sidecar_stage_variant", stage="resnet", variant="resnet18") == 1.0


def test_outcomes_are_enums_that_read_as_their_strings():
    from rlscale.kube.actuator import StageAction, StageOutcome
    from rlscale.kube.sidecar import OUTCOMES, StepOutcome

    report = StepReport("held", "")
    assert report.outcome is StepOutcome.HELD and report.outcome == "held"
    report.outcome = "failed"
    assert report.outcome is StepOutcome.FAILED
    assert [str(o) for o in OUTCOMES] == ["applied", "unchanged", "dry_run", "held", "failed"]
    assert StageOutcome("s", "rolled").action is StageAction.ROLLED
    import pytest

    with pytest.raises(ValueError):
        StepReport("exploded", "")
    with pytest.raises(ValueError):
        StageOutcome("s", "teleported")
