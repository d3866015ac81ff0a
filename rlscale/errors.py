"""User-facing error types.

Every error a user can cause with bad input (a spec, a trace, a flag) is a subclass of `RlscaleError`; the CLI
prints its message as one line on stderr and exits non-zero.
"""

from __future__ import annotations


class RlscaleError(Exception):
    """Base class for errors caused by user input; the message is shown as-is."""


class SpecError(RlscaleError):
    """A pipeline spec (or a profile it references) is invalid. The message names the file and the field."""


class TraceError(RlscaleError):
    """A workload trace (bundled name or CSV path) is unknown or malformed."""


class ProfileError(RlscaleError):
    """A latency profile table is malformed or lacks the points a query needs."""


class ProfilingError(RlscaleError):
    """``rlscale profile`` cannot measure as asked: the factory, a variant, a batch, the cores or the server."""


class ServeError(RlscaleError):
    """``rlscale serve`` cannot start a stage server as asked: the factory, a variant, a setting or a port."""
