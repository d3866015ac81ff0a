"""The ``rlscale`` parser (one sub-command per module of this package) and `main`: error handling and the
``--json`` stdout guard."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rlscale.cli import (
    bench,
    calibrate,
    check,
    compare,
    demo,
    manifests,
    pipelines,
    profile,
    serve,
    sidecar,
    simulate,
    traces,
    train,
    tune,
)
from rlscale.cli.output import json_guard
from rlscale.errors import RlscaleError, RuntimeFault

EXIT_USAGE = 2
EXIT_INTERNAL = 3

COMMANDS = (
    pipelines,
    check,
    traces,
    simulate,
    train,
    tune,
    compare,
    bench,
    profile,
    serve,
    calibrate,
    sidecar,
    manifests,
    demo,
)
"""The command modules, in ``--help`` order; each has ``register(subparsers)`` and its ``cmd_*`` function."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlscale",
        description="RL autoscaler for multi-stage ML inference pipelines (simulator, ILP baseline, PPO agent).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("RLSCALE_DEBUG") == "1"
    command = "rlscale"
    try:
        args = build_parser().parse_args(argv)
        command = f"rlscale {args.command}"
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        # the HTTP libraries' retry warnings repeat what our own one-line messages say
        logging.getLogger("urllib3").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
        func: Callable[[argparse.Namespace], int] = args.func
        if not getattr(args, "json", False):
            return func(args)
        # --json: stdout holds exactly one JSON document, whatever a library prints (C code included)
        with json_guard():
            return func(args)
    except RlscaleError as exc:
        if debug:
            raise
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeFault as exc:  # a system rlscale talks to failed (not the input): one line, exit 1
        if debug:
            raise
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        print(
            f"{command}: internal error: {type(exc).__name__}: {exc} (set RLSCALE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
