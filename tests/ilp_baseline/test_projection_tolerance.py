"""One tolerance of capacity against load (`rlscale.model.CAPACITY_RTOL`): what the safety layer's projection
returns at a load a hair above a configuration's capacity is feasible as `violations` counts it."""

from __future__ import annotations

import numpy as np
import pytest

from ilp_baseline.safety import SafetyLayer
from rlscale.model import pipeline_capacity_rps, plan_fixed_variants, replicas_for, violations
from rlscale.spec import load_spec

POOLED = ["stages.0.max_pools=2", "stages.1.max_pools=2"]


@pytest.mark.parametrize("overrides", [[], POOLED], ids=["single-pool", "pooled"])
@pytest.mark.parametrize("planned_rps", [1.0, 3.0, 7.0, 20.0])
@pytest.mark.parametrize("excess", [1e-9, 1e-10, 0.0])
def test_the_projection_a_hair_above_capacity_passes_violations(overrides, planned_rps, excess):
    spec = load_spec("video", overrides)
    config = plan_fixed_variants(spec, [st.variants[0].name for st in spec.stages], planned_rps)
    load = pipeline_capacity_rps(spec, config) * (1 + excess)
    result = SafetyLayer(spec).nearest(config, load)
    assert result is not None
    assert violations(spec, result, load) == []


def test_planned_replicas_always_carry_the_load():
    """`replicas_for` and `violations` agree on every load, near-integer ratios included."""
    from rlscale.model import carries  # the one comparison `violations` makes

    rng = np.random.default_rng(0)
    replica_rps = rng.uniform(0.1, 50.0, 2000)
    n_true = rng.integers(1, 200, 2000)
    for rel in (0.0, 1e-9, -1e-9, 1e-10, 3e-16, -3e-16):
        load = n_true * replica_rps * (1 + rel)
        n = replicas_for(load, replica_rps, 1)
        assert bool(np.all(carries(n * replica_rps, load))), rel
        assert bool(np.all(n <= n_true + 1))  # and never more than one replica to spare
