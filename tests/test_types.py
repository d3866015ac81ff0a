"""Configurations with variant pools (rlscale.types): pools, shares, their checks, totals and the text form."""

from __future__ import annotations

import pytest

from rlscale.types import ConfigError, PipelineConfig, StageConfig

R152 = StageConfig("r152", 1, 1, 8, share=0.7)
R50 = StageConfig("r50", 1, 1, 4, share=0.3)


def mix(*pools: StageConfig) -> StageConfig:
    return StageConfig.of_pools(pools)


def test_a_single_pool_stage_is_its_own_only_pool_with_share_one():
    sc = StageConfig("r50", 2, 3, 4)
    assert sc.share == 1.0 and sc.mix == ()
    assert sc.pools == (sc,)
    assert not sc.pooled
    assert sc.total_cores == 12 and sc.total_batch == 2 and isinstance(sc.total_batch, int)
    assert str(sc) == "r50 b2 x3 c4"


def test_pools_are_the_first_pool_then_the_mix_each_with_its_share_and_no_mix():
    sc = mix(R152, StageConfig("r50", 4, 2, 2, share=0.3))
    assert sc.pooled and sc.variant == "r152" and sc.share == 0.7
    assert [(p.variant, p.share, p.mix) for p in sc.pools] == [("r152", 0.7, ()), ("r50", 0.3, ())]
    assert sc.total_cores == 8 + 2 * 2
    assert sc.total_replicas == 3
    assert sc.total_batch == pytest.approx(0.7 * 1 + 0.3 * 4)


def test_str_shows_the_pools_only_when_there_are_several():
    assert str(mix(R152, R50)) == "r152 b1 x1 c8 70% + r50 b1 x1 c4 30%"
    config = PipelineConfig((StageConfig("y", 1, 2, 1), mix(R152, R50)))
    assert str(config) == "y b1 x2 c1 | r152 b1 x1 c8 70% + r50 b1 x1 c4 30%"


def test_pipeline_total_cores_sums_every_pool_of_every_stage():
    config = PipelineConfig((StageConfig("y", 1, 2, 3), mix(StageConfig("r152", 1, 2, 8, share=0.7), R50)))
    assert config.total_cores == 2 * 3 + 2 * 8 + 1 * 4
    assert config.pooled and not PipelineConfig((StageConfig("y", 1, 2, 3),)).pooled
    assert config.total_batch == pytest.approx(1 + 1.0)


@pytest.mark.parametrize(
    "pools,problem",
    [
        ((R152, StageConfig("r152", 1, 1, 4, share=0.3)), "two pools"),
        ((R152, StageConfig("r50", 1, 1, 4, share=0.2)), "sum to"),
        ((StageConfig("r152", 1, 1, 8, share=0.7), StageConfig("r50", 1, 1, 4, share=0.4)), "sum to"),
    ],
    ids=["repeated variant", "shares below one", "shares above one"],
)
def test_invalid_pools_are_refused(pools, problem):
    with pytest.raises(ConfigError, match=problem):
        mix(*pools)


@pytest.mark.parametrize("share", [0.0, -0.3, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ConfigError, match="share"):
        StageConfig("r50", 1, 1, 4, share=share)


def test_shares_may_miss_one_by_the_tolerance_only():
    third = 1 / 3
    sc = mix(*(StageConfig(v, 1, 1, 1, share=third) for v in ("a", "b", "c")))
    assert len(sc.pools) == 3
    with pytest.raises(ConfigError):
        mix(StageConfig("a", 1, 1, 1, share=0.5), StageConfig("b", 1, 1, 1, share=0.5 - 1e-6))


def test_a_pool_of_a_mix_has_no_mix_of_its_own():
    with pytest.raises(ConfigError, match="no mix"):
        StageConfig("a", 1, 1, 1, share=0.5, mix=(mix(StageConfig("b", 1, 1, 1, share=0.7), R50),))


def test_a_single_pool_stage_of_a_pipeline_serves_the_whole_load():
    with pytest.raises(ConfigError, match="share 1"):
        PipelineConfig((StageConfig("r50", 1, 1, 4, share=0.3),))


def test_with_keeps_the_mix_and_of_pools_of_one_pool_is_that_pool():
    sc = mix(R152, R50).with_(replicas=5)
    assert sc.replicas == 5 and sc.mix == (R50,)
    single = StageConfig("r50", 1, 1, 4)
    assert StageConfig.of_pools([single]) == single
