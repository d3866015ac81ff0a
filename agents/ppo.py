"""``python -m agents.ppo MODEL.zip OUT.npz``: convert a training run's stable-baselines3 model to an actor file.

For a ``model.zip`` trained before runs wrote ``actor.npz``; it checks that the actor picks SB3's actions
(`agents.conversion`). The command keeps this module's name, which messages and documents give; the PPO agent itself
lives in `agents.inference` (numpy inference, the ``ppo`` / ``ppo-raw`` policies), `agents.train_config` and
`agents.training` (training).
"""

from __future__ import annotations

import sys
from pathlib import Path

from agents.conversion import actor_from_model_zip, agreement
from rlscale.errors import RlscaleError
from rlscale.inputs import special_file_kind
from rlscale.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.ppo MODEL.zip OUT.npz``: write a model's actor file, checked against SB3's actions.

    Loading MODEL.zip unpickles it (stable-baselines3), which can run any code: convert only models you trained
    yourself. The actor file it writes is data (numpy arrays, never unpickled): what ``--agent`` takes."""
    import argparse

    from stable_baselines3 import PPO

    parser = argparse.ArgumentParser(prog="python -m agents.ppo", description=main.__doc__)
    parser.add_argument(
        "model",
        type=Path,
        help="a training run's model.zip or checkpoint (settings beside it); it is unpickled: only your own runs",
    )
    parser.add_argument("out", type=Path, help="the actor file to write (.npz)")
    parser.add_argument("--check", type=int, default=400, metavar="N", help="observations to compare (default 400)")
    args = parser.parse_args(argv)
    try:
        try:
            kind = special_file_kind(args.model)
        except OSError:
            raise RlscaleError(f"{args.model}: no such model file") from None
        if kind is not None:
            raise RlscaleError(f"{args.model}: is {kind}, not a model file")
        actor = actor_from_model_zip(args.model)
        spec = load_spec(actor.pipeline)
        same = agreement(PPO.load(args.model, device="cpu"), actor, spec, n=args.check)
        if same != args.check:
            raise RlscaleError(f"the actor differs from SB3 on {args.check - same} of {args.check} observations")
        actor.save(args.out)
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: actor of {actor.pipeline}, identical actions to SB3 on {same} observations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
