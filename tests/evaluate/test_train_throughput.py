"""The training throughput benchmark (`rlscale.evaluate.train_throughput`) measures the PPO that training builds."""

from __future__ import annotations

import pytest

pytest.importorskip("stable_baselines3", reason="the benchmark trains PPO (the train extra)")


@pytest.mark.e2e
def test_the_benchmark_trains_the_ppo_training_builds_with_a_uniform_start(monkeypatch):
    import agents.training as training
    from agents.train_config import TrainConfig
    from rlscale.evaluate.train_throughput import _pipeline_venv, ppo_steps_per_s

    built = []
    real = training.build_ppo

    def spy(venv, cfg, prior="none"):
        built.append(prior)
        return real(venv, cfg, prior)

    monkeypatch.setattr(training, "build_ppo", spy)
    cfg = TrainConfig(pipeline="video", n_envs=1, n_steps=32, batch_size=32, n_epochs=1)
    result = ppo_steps_per_s(_pipeline_venv(cfg), cfg, 32)
    assert built == ["none"]  # SB3's uniform start: the figure never included a prior
    assert result["timesteps"] == 32 and result["steps_per_s"] > 0
