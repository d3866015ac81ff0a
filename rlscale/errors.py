"""Error types, in two families that never mix (kopf's split):

- **user input**: every error a user can cause with bad input (a spec, a trace, a flag, a file) is a subclass of
  `RlscaleError`; the CLI prints its message as one line on stderr and exits 2.
- **runtime faults** of what rlscale talks to (the Kubernetes API, Prometheus) are `RuntimeFault`s, either
  `TemporaryError` (waiting may fix it: retry after ``delay_s`` or a backoff) or `PermanentError` (waiting will not:
  say so once and keep holding). A loop holds on them; the CLI prints one line and exits 1.
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


class RuntimeFault(Exception):
    """A fault of a system rlscale talks to at run time (not the user's input): `TemporaryError` or
    `PermanentError`. ``temporary`` says which; ``delay_s`` is the wait the other side asked for, if any."""

    temporary: bool = False
    delay_s: float | None = None


class TemporaryError(RuntimeFault):
    """A fault that waiting may fix (a timeout, a 5xx, a 429, no data yet): retry after ``delay_s`` (the wait the
    other side asked for, e.g. a 429's ``Retry-After``) or a backoff."""

    temporary = True

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(RuntimeFault):
    """A fault that waiting will not fix (401, 403, 404, a query Prometheus rejects): say so once, keep holding."""
