"""A training's settings (`agents.train_config`): `TrainConfig`'s fields carry their flags' ranges and choices, and
`check_config` refuses a bad setting in one line naming its flag, before anything is built or written."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from agents.train_config import MAX_STEPS, TrainConfig, check_config, flag_name, flags
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED

NUMBERS = (int, float)


def _kind(name: str) -> type:
    hint = typing.get_type_hints(TrainConfig)[name]
    if typing.get_origin(hint) is list:
        return list
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def test_every_number_has_a_range_holding_its_default_and_every_choice_its_default():
    defaults = TrainConfig()
    for name, flag in flags().items():
        kind, default = _kind(name), getattr(defaults, name)
        if kind in (*NUMBERS, list):
            assert flag.low is not None and flag.high is not None, name
            for value in default if kind is list else [default]:
                assert flag.low <= value <= flag.high and not (flag.exclusive_low and value == flag.low), name
            assert (flag.max_items is not None) == (kind is list), name
        else:
            assert kind is str and flag.low is None and flag.high is None, name
        if flag.choices is not None:
            assert kind is str and default in flag.choices, name
    check_config(defaults)


def test_whatever_the_command_line_takes_the_config_check_takes():
    """The flags' ranges lie within what `check_config` accepts: a value the command line parses never fails later."""
    for name, flag in flags().items():
        if flag.low is None or _kind(name) is list:
            continue
        for value in (flag.high, flag.low if not flag.exclusive_low else flag.low + 1e-9):
            value = int(value) if _kind(name) is int else float(value)
            changes = {name: value}
            if name == "min_load_scale":  # the pair must stay ordered
                changes["max_load_scale"] = 100.0
            if name == "max_load_scale":
                changes["min_load_scale"] = min(value, 0.25)
            check_config(dataclasses.replace(TrainConfig(), **changes))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("vec_env", "threads", "--vec-env must be one of dummy, subproc, got 'threads'"),
        ("action_design", "both", "--action-design must be one of planner, direct, got 'both'"),
        ("weights", "fixed", "--weights must be one of sampled, spec, got 'fixed'"),
        ("curriculum", "genet", "--curriculum must be one of ipa-gap, none, got 'genet'"),
        ("prior", "imitate", "--prior must be one of auto, ipa, ipa-hold, none, got 'imitate'"),
        ("reward_scale", "log", "--reward-scale must be one of none, load, got 'log'"),
        ("timesteps", 0, "--timesteps must be >= 1, got 0"),
        ("n_envs", 0, "--n-envs must be >= 1, got 0"),
        ("seed", -1, f"--seed must be between 0 and {MAX_SEED}, got -1"),
        ("checkpoint_minutes", float("nan"), "--checkpoint-minutes must be a number >= 0 (0: off), got nan"),
        ("checkpoint_every", 0, "checkpoint_every must be >= 1, got 0"),
        ("validation_days", 14, "--validation-days must be within 0..13, got 14"),
        ("validation_windows", 0, "--validation-windows must be >= 1, got 0"),
        ("window_s", 0, "--window-s must be >= 1, got 0"),
        ("damping", 0, "--damping must be >= 1, got 0"),
        ("validation_fraction", 1.0, "--validation-fraction must be in [0, 1), got 1.0"),
        (
            "min_load_scale",
            5.0,
            "--min-load-scale and --max-load-scale must satisfy 0 < min <= max <= 100, got 5.0, 3.0",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_flag(name, value, message):
    with pytest.raises(RlscaleError) as info:
        check_config(dataclasses.replace(TrainConfig(), **{name: value}))
    assert str(info.value) == message


def test_the_choices_checked_are_the_flags():
    for name, flag in flags().items():
        if flag.choices is None:
            continue
        with pytest.raises(RlscaleError, match=f"^{flag_name(name)} must be one of {', '.join(flag.choices)}, got"):
            check_config(dataclasses.replace(TrainConfig(), **{name: "no-such-choice"}))


def test_a_bad_prior_is_refused_before_anything_is_built(tmp_path):
    from agents.training import train

    with pytest.raises(RlscaleError, match="--prior must be one of"):
        train(TrainConfig(prior="imitate", out=str(tmp_path / "runs")), progress_bar=False)
    assert not (tmp_path / "runs").exists()


def test_steps_are_bounded():
    assert flags()["timesteps"].high == MAX_STEPS == flags()["checkpoint_every"].high == flags()["eval_every"].high
