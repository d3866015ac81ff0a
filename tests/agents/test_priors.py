"""Where a fresh training's policy starts (`agents.priors`): IPA's or ``ipa-hold``'s planner action made the
untrained policy's most likely one, and ``--prior auto``'s choice between them on the validation cells.

Needs the train extra (torch, stable-baselines3): without it this module is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")

from agents.train_config import TrainConfig  # noqa: E402
from rlscale.errors import RlscaleError  # noqa: E402
from rlscale.spec import load_spec  # noqa: E402


@pytest.mark.slow
def test_the_ipa_prior_starts_the_policy_at_ipas_action():
    from stable_baselines3 import PPO

    from agents.priors import PRIOR_LOGIT, ipa_action, prior_action, set_prior
    from agents.training import make_vec_env
    from envs.codecs import HEADROOMS, TILTS

    venv = make_vec_env(TrainConfig(pipeline="video", n_envs=1))
    nvec = venv.action_space.nvec
    expected = ipa_action(nvec)
    assert expected == [HEADROOMS.index(1.0), HEADROOMS.index(1.0), 1, TILTS.index(1.0)]  # headroom 1, replan, tilt 1
    obs = venv.reset()
    rng = np.random.default_rng(0)
    samples = np.vstack([obs, rng.uniform(-3, 3, size=(31, obs.shape[1])).astype(np.float32)])
    fresh = PPO("MlpPolicy", venv, seed=0, device="cpu")
    assert not all(list(a) == expected for a in fresh.predict(samples, deterministic=True)[0])
    set_prior(fresh.policy, nvec)
    assert all(list(a) == expected for a in fresh.predict(samples, deterministic=True)[0])
    drawn = fresh.predict(np.repeat(obs, 400, axis=0), deterministic=False)[0]
    share = np.mean([list(a) == expected for a in drawn])  # still explores: about 0.67^2 x 0.86 x 0.86
    assert 0.2 < share < 0.5
    assert PRIOR_LOGIT > 0
    with pytest.raises(RlscaleError, match="not a planner action space"):
        ipa_action([4, 3, 2])
    hold = prior_action(nvec, "ipa-hold")
    assert hold == [HEADROOMS.index(0.9), HEADROOMS.index(0.9), 2, TILTS.index(1.0)]  # 0.9, hold unless gain
    other = PPO("MlpPolicy", venv, seed=0, device="cpu")
    set_prior(other.policy, nvec, "ipa-hold")
    assert all(list(a) == hold for a in other.predict(samples, deterministic=True)[0])
    venv.close()


@pytest.mark.slow
def test_prior_auto_starts_from_the_better_baseline_on_validation():
    from agents.priors import choose_prior, fixed_actor, prior_action
    from agents.training import sources
    from agents.validation import agent_records, gap_vs_ipa, ipa_reference, validation_cells
    from rlscale.workload import source_validation_windows

    cfg = TrainConfig(pipeline="video", validation_windows=1, prior="auto")
    spec = load_spec("video")
    windows = source_validation_windows(sources(cfg), cfg.validation_windows, cfg.window_s)
    nvec = [7, 7, 3, 3]
    memo: dict = {}
    chosen = choose_prior(cfg, spec, windows, nvec, memo)
    assert set(chosen["gaps"]) == {"ipa", "ipa-hold"}
    assert chosen["gaps"][chosen["prior"]] == max(chosen["gaps"].values())
    # the margin is the fixed action's, behind the safety layer, on the validation cells
    cells = validation_cells(spec, windows, True, (cfg.min_load_scale, cfg.max_load_scale))
    hold = fixed_actor(spec, prior_action(nvec, "ipa-hold"), cfg.load_scale_rps)
    assert hold.act(np.zeros(hold.obs_size, np.float32)).tolist() == prior_action(nvec, "ipa-hold")
    ipa = ipa_reference(cells)
    assert memo["ipa"] == ipa and len(memo["cells"]) == len(cells)  # kept for the checkpoints' selection
    gap = gap_vs_ipa(cells, agent_records(hold, cells), ipa)
    assert chosen["gaps"]["ipa-hold"] == pytest.approx(gap, abs=1e-4)
    assert choose_prior(cfg, spec, [], nvec) == {"prior": "ipa", "gaps": {}}
