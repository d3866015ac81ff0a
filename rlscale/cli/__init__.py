"""The ``rlscale`` command: the composition root.

One module per command (``pipelines``, ``traces``, ``simulate``, ``train``, ``tune``, ``compare``, ``bench``,
``profile``, ``serve``, ``calibrate``, ``sidecar``, ``manifests``, ``demo``), the shared argument groups
(`rlscale.cli.args`), the policy registry (`rlscale.policies.registry`: names -> policies behind their guards, handed
to `rlscale.evaluate` and the sidecar), and the parser with its error handling (`rlscale.cli.parser`). Every
sub-command has ``--help``. Errors caused by input (a bad spec, trace or flag) are printed as one line on stderr with
exit code 2; nothing prints a traceback unless ``RLSCALE_DEBUG=1`` is set.
"""

from __future__ import annotations

from rlscale.cli.parser import EXIT_INTERNAL, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_INTERNAL", "EXIT_USAGE", "build_parser", "main"]
