"""``rlscale demo``: the main job on the bundled default (`rlscale.evaluate.demo`), with this CLI's policy registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlscale.cli.compare import POLICY_FACTORY
from rlscale.evaluate.sweep import add_executor_flags


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the bundled default (what `make demo` runs)")
    p.add_argument("--out", default="out/demo", help="folder for the plots (default: out/demo)")
    add_executor_flags(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from rlscale.evaluate.demo import run_demo
    from rlscale.paths import output_folder

    return run_demo(
        out_dir=output_folder(Path(args.out)),
        make_policy=POLICY_FACTORY,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
    )
