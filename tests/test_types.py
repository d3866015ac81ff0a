"""Configurations with variant pools (rlscale.types): pools, shares, their checks, totals and the text form."""

from __future__ import annotations

import pytest

from rlscale.types import ConfigError, PipelineConfig, StageConfig, VariantPool

R152 = VariantPool("r152", 1, 1, 8, share=0.7)
R50 = VariantPool("r50", 1, 1, 4, share=0.3)


def mix(*pools: VariantPool) -> StageConfig:
    return StageConfig.of_pools(pools)


def test_a_single_pool_stage_is_a_stage_of_one_pool_with_share_one():
    sc = StageConfig.one("r50", 2, 3, 4)
    assert sc.pools == (VariantPool("r50", 2, 3, 4),) and sc.only.share == 1.0
    assert (sc.variant, sc.batch, sc.replicas, sc.cores) == ("r50", 2, 3, 4)
    assert sc.total_cores == 12 and sc.total_batch == 2 and isinstance(sc.total_batch, int)
    assert str(sc) == "r50 b2 x3 c4"


def test_a_stage_of_several_pools_keeps_each_with_its_share_and_has_no_single_figure():
    sc = mix(R152, VariantPool("r50", 4, 2, 2, share=0.3))
    assert [(p.variant, p.share) for p in sc.pools] == [("r152", 0.7), ("r50", 0.3)]
    assert sc.variants == ("r152", "r50")
    assert sc.total_cores == 8 + 2 * 2
    assert sc.total_replicas == 3
    assert sc.total_batch == pytest.approx(0.7 * 1 + 0.3 * 4)
    for name in ("variant", "batch", "replicas", "cores", "only"):  # the first-pool reading is gone
        with pytest.raises(ValueError, match="2 pools"):
            getattr(sc, name)
    with pytest.raises(ValueError, match="2 pools"):
        sc.with_(replicas=5)


def test_str_shows_the_pools_only_when_there_are_several():
    assert str(mix(R152, R50)) == "r152 b1 x1 c8 70% + r50 b1 x1 c4 30%"
    config = PipelineConfig((StageConfig.one("y", 1, 2, 1), mix(R152, R50)))
    assert str(config) == "y b1 x2 c1 | r152 b1 x1 c8 70% + r50 b1 x1 c4 30%"


def test_pipeline_total_cores_sums_every_pool_of_every_stage():
    config = PipelineConfig((StageConfig.one("y", 1, 2, 3), mix(VariantPool("r152", 1, 2, 8, share=0.7), R50)))
    assert config.total_cores == 2 * 3 + 2 * 8 + 1 * 4
    assert config.most_pools == 2 and PipelineConfig((StageConfig.one("y", 1, 2, 3),)).most_pools == 1
    assert config.total_batch == pytest.approx(1 + 1.0)


@pytest.mark.parametrize(
    "pools,problem",
    [
        ((R152, VariantPool("r152", 1, 1, 4, share=0.3)), "two pools"),
        ((R152, VariantPool("r50", 1, 1, 4, share=0.2)), "sum to"),
        ((VariantPool("r152", 1, 1, 8, share=0.7), VariantPool("r50", 1, 1, 4, share=0.4)), "sum to"),
    ],
    ids=["repeated variant", "shares below one", "shares above one"],
)
def test_invalid_pools_are_refused(pools, problem):
    with pytest.raises(ConfigError, match=problem):
        mix(*pools)


@pytest.mark.parametrize("share", [0.0, -0.3, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ConfigError, match="share"):
        VariantPool("r50", 1, 1, 4, share=share)


def test_shares_may_miss_one_by_the_tolerance_only():
    third = 1 / 3
    sc = mix(*(VariantPool(v, 1, 1, 1, share=third) for v in ("a", "b", "c")))
    assert len(sc.pools) == 3
    with pytest.raises(ConfigError):
        mix(VariantPool("a", 1, 1, 1, share=0.5), VariantPool("b", 1, 1, 1, share=0.5 - 1e-6))


def test_a_stage_needs_a_pool_and_its_pools_are_variant_pools():
    with pytest.raises(ConfigError, match="at least one pool"):
        StageConfig(())
    with pytest.raises(TypeError, match="VariantPool"):
        StageConfig((StageConfig.one("a", 1, 1, 1),))


def test_a_single_pool_stage_serves_the_whole_load():
    with pytest.raises(ConfigError, match="share 1"):
        StageConfig((VariantPool("r50", 1, 1, 4, share=0.3),))


def test_with_changes_the_one_pool_and_of_pools_of_one_pool_is_that_stage():
    sc = StageConfig.one("r50", 1, 1, 4).with_(replicas=5)
    assert sc == StageConfig.one("r50", 1, 5, 4)
    assert StageConfig.of_pools([VariantPool("r50", 1, 1, 4)]) == StageConfig.one("r50", 1, 1, 4)
