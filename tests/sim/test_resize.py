"""In-place vertical scaling in the simulator (``in_place_resize``, ``resize_s``; DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.control import is_rollout, resized, rolled_out
from rlscale.sim.cluster import Simulator
from rlscale.sim.runner import run_episode
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace

SMALL = PipelineConfig((StageConfig.one("fast", 1, 1, 1),))
BIG = PipelineConfig((StageConfig.one("fast", 1, 1, 4),))  # same variant and batch: cores only


def resize_run(spec, seconds=30, rps=5.0):
    """5 rps on one 1-core replica; at t = 10 the configuration moves to 4 cores."""
    sim = Simulator(spec, Trace("c", np.full(seconds, rps)), SMALL, log_batches=True)
    sim.step()
    sim.apply(BIG)
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def test_a_cores_only_change_resizes_in_place_after_resize_s(sponge_like):
    sim = resize_run(sponge_like(in_place=True, resize_s=0.5))
    seqs = {seq for *_x, seq, _v in sim.batch_log}
    assert seqs == {1}  # the same replica throughout: nothing rolled out
    by_start = [(start, finish - start) for _s, start, finish, *_r in sim.batch_log]
    assert all(d == pytest.approx(0.1) for start, d in by_start if start < 10.5)  # old speed until then
    assert all(d == pytest.approx(0.025) for start, d in by_start if start >= 10.5)  # new speed after
    assert any(10 <= start < 10.5 for start, _d in by_start)  # batches between the change and the resize
    # charged at the new cores from the change, with no overlap: 1 core, then 4
    assert [m.cost_cores for m in sim.history[:3]] == [pytest.approx(1.0), pytest.approx(4.0), pytest.approx(4.0)]


def test_a_batch_in_progress_finishes_at_its_old_speed(sponge_like):
    # 10 rps on a 1-core replica of batch 1 (0.1 s): busy all the time; the resize lands mid-batch at 10.05
    sim = resize_run(sponge_like(in_place=True, resize_s=0.05), rps=10.0)
    straddling = [(s0, s1) for _s, s0, s1, *_r in sim.batch_log if s0 < 10.05 < s1]
    assert straddling and all(s1 - s0 == pytest.approx(0.1) for s0, s1 in straddling)


def test_without_in_place_resize_a_cores_change_rolls_out(sponge_like):
    sim = resize_run(sponge_like(in_place=False))
    assert {seq for *_x, seq, _v in sim.batch_log} == {1, 2}  # a new replica after startup (5 s)
    first_new = min(start for _s, start, _f, _k, seq, _v in sim.batch_log if seq == 2)
    assert first_new >= 15.0
    # the old replica serves (and costs) until the new one is ready at 15 s: 1 x 5 + 4 x 10 core-seconds
    assert sim.history[1].cost_cores == pytest.approx((1.0 * 5 + 4.0 * 10) / 10)


def test_replica_count_changes_keep_their_semantics_with_in_place(sponge_like):
    spec = sponge_like(in_place=True, resize_s=0.5)
    sim = Simulator(spec, Trace("c", np.full(30, 5.0)), SMALL, log_batches=True)
    sim.step()
    sim.apply(PipelineConfig((StageConfig.one("fast", 1, 3, 4),)))  # resize the one, add two (4 cores, after 5 s)
    sim.step()
    replicas = sim.stages[0].replicas
    assert [r.cores for r in replicas] == [4, 4, 4]
    assert [r.ready_s for r in replicas] == [0.0, 15.0, 15.0]
    assert sim.history[1].cost_cores == pytest.approx(12.0)


def test_rollout_counting_knows_in_place():
    a, b = SMALL.stages[0], BIG.stages[0]
    assert rolled_out(a, b) == ("fast",) and rolled_out(a, b, in_place=True) == ()
    assert is_rollout(SMALL, BIG) and not is_rollout(SMALL, BIG, in_place=True)
    assert resized(a, b) == ("fast",) and resized(a, a.with_(replicas=3)) == ()
    batch = StageConfig.one("fast", 2, 1, 4)
    assert rolled_out(a, batch, in_place=True) == ("fast",) and resized(a, batch) == ()
    variant = StageConfig.one("slow", 1, 1, 4)
    assert rolled_out(a, variant, in_place=True) == ("slow",)


class _Flip:
    """Decides 1 core, then 4, then 1, ...: cores-only changes every interval."""

    name = "flip"

    def __init__(self) -> None:
        self.n = 0

    def decide(self, state):
        self.n += 1
        return SMALL if self.n % 2 else BIG


@pytest.mark.parametrize("in_place", [True, False])
def test_the_record_counts_resizes_not_rollouts(sponge_like, in_place):
    spec = sponge_like(in_place=in_place)
    record = run_episode(spec, Trace("c", np.full(60, 2.0)), _Flip()).record
    assert record["reconfigurations"] == 5
    if in_place:
        assert (record["rollouts"], record["scalings"], record["resizes"]) == (0, 5, 5)
    else:
        assert (record["rollouts"], record["scalings"]) == (5, 0) and "resizes" not in record
