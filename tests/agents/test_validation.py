"""Validation against IPA (`agents.validation`): the cells and the checkpoints scored."""

from __future__ import annotations

from agents.validation import MAX_CANDIDATES, checkpoint_candidates, validation_cells
from rlscale.spec import load_spec
from rlscale.workload import load_trace


def test_at_most_ten_checkpoints_evenly_spread_the_latest_kept(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for steps in range(64, 64 * 31, 64):  # 30 checkpoints, and files that are not step checkpoints
        (folder / f"ppo_{steps}_steps.zip").write_bytes(b"")
    (folder / "eval_128.zip").write_bytes(b"")
    (folder / "ppo_x_steps.zip").write_bytes(b"")
    chosen = [s for s, _ in checkpoint_candidates(tmp_path)]
    assert len(chosen) == MAX_CANDIDATES == 10
    assert chosen[0] == 64 and chosen[-1] == 64 * 30 and chosen == sorted(set(chosen))
    gaps = [b - a for a, b in zip(chosen, chosen[1:], strict=False)]
    assert max(gaps) - min(gaps) <= 64  # evenly spread
    assert [s for s, _ in checkpoint_candidates(tmp_path, most=50)] == list(range(64, 64 * 31, 64))


def test_cells_cover_weights_and_load_scales():
    spec = load_spec("video")
    windows = [load_trace("bursty")]
    cells = validation_cells(spec, windows, sampled_weights=True, load_scales=(0.25, 3.0))
    assert {(c.alpha, c.load_scale) for c in cells} == {(a, x) for a in (2.0, 10.0) for x in (0.5, 1.0, 2.0)}
    only = validation_cells(spec, windows, sampled_weights=False, load_scales=None)
    assert [(c.alpha, c.load_scale) for c in only] == [(2.0, 1.0)] and only[0].spec is spec
