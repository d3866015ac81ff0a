"""``rlscale train``'s flags are generated from `agents.train_config.TrainConfig`: every field settable, with its
range and choices."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from agents.train_config import TrainConfig, flag_name, flags
from rlscale.cli import build_parser
from rlscale.cli.train import field_docs


def _parse(*argv: str):
    return build_parser().parse_args(["train", "--pipeline", "video", *argv])


def test_every_field_is_a_flag_with_the_config_default():
    args = _parse()
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "pipeline":
            assert getattr(args, f.name) == getattr(defaults, f.name), f.name


SWEEP_AND_SPEC = {
    "pipeline",
    "overrides",
    "bundle",
    "seeds",
    "grid",
    "continue_sweep",
    "executor",
    "workers",
    "ray_address",
}
"""The train command's options that are not `TrainConfig` fields (``--pipeline`` is the spec's flag, with ``--set``)."""


def _train_parser():
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices["train"]


def test_the_flags_are_the_config_fields_with_their_defaults_and_choices():
    """One flag per field (but ``pipeline``), named after it, with the field's default and choices: nothing else
    decides them (`agents.train_config.Flag`)."""
    actions = {a.dest: a for a in _train_parser()._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(actions) - SWEEP_AND_SPEC == fields - {"pipeline"}
    defaults = TrainConfig()
    for name, flag in flags(TrainConfig).items():
        if name == "pipeline":
            continue
        action = actions[name]
        assert action.option_strings == [flag_name(name)], name
        assert action.default == getattr(defaults, name), name
        assert action.choices == flag.choices, name
        if flag.high is None:
            assert action.type is str, name
            continue
        high = int(flag.high) if isinstance(action.default, int | list) else flag.high
        assert action.type(str(high)) == ([high] if isinstance(action.default, list) else high), name
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(str(high * 2 + 1))


def test_every_field_has_its_own_docstring_line():
    assert set(field_docs(TrainConfig)) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_settings_reach_the_config():
    args = _parse(
        "--learning-rate", "1e-4", "--gamma", "0.99", "--net-arch", "256,64", "--n-steps", "128",
        "--batch-size", "64", "--checkpoint-every", "1000", "--eval-every", "500", "--load-scale-rps", "80",
    )  # fmt: skip
    cfg = TrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "pipeline"}
    )
    assert (cfg.learning_rate, cfg.gamma, cfg.net_arch, cfg.n_steps, cfg.batch_size) == (1e-4, 0.99, [256, 64], 128, 64)
    assert (cfg.checkpoint_every, cfg.eval_every, cfg.load_scale_rps) == (1000, 500, 80.0)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--gamma", "1.5"),
        ("--learning-rate", "0"),
        ("--learning-rate", "nan"),
        ("--batch-size", "1"),
        ("--net-arch", "0,8"),
        ("--net-arch", "128,,8"),
        ("--n-epochs", "x"),
        ("--timesteps", "0"),
        ("--checkpoint-minutes", "-1"),
    ],
)
def test_bad_values_are_one_usage_line(capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        _parse(flag, value)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
