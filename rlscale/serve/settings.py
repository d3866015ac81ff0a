"""The settings a stage server starts with: each from its flag, else from the stage's env var.

| setting | flag | env var | default |
|---|---|---|---|
| model factory ``MODULE:FUNCTION`` | ``--model`` | ``RLSCALE_MODEL_FACTORY`` | required |
| variant handed to the factory | ``--variant`` | ``MODEL_VARIANT`` (``kubernetes.variant_env``) | required |
| largest batch, in items | ``--batch`` | ``MAX_BATCH_SIZE`` (``kubernetes.batch_env``) | 1 |
| longest wait for a full batch (s) | ``--batch-timeout`` | ``BATCH_TIMEOUT_S`` (``kubernetes.batch_timeout_env``) | 0 |
| ``pipeline`` label of the metrics | ``--pipeline`` | ``RLSCALE_PIPELINE`` | required |
| ``stage`` label of the metrics | ``--stage`` | ``RLSCALE_STAGE`` | required |
| largest REST request body (bytes) | ``--max-request-bytes`` | ``RLSCALE_MAX_REQUEST_BYTES`` | 16 MiB |

The variant, batch and timeout env vars are the spec's ``kubernetes`` defaults, which the sidecar writes into the
stage's pod template. A spec that renames them is served with the flags, which Kubernetes fills from any env var
(``args: ["--variant", "$(MY_VARIANT)"]``). A batch timeout of 0 never holds a request back: a batch is what
queued while the model was busy. A REST request whose body (decompressed) is larger than the request limit is
answered 413 before the server reads it into memory (`rlscale.serve.limits`); gRPC keeps gRPC's own limit on a
received message (4 MiB).
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from rlscale.errors import ServeError
from rlscale.paths import is_safe_name, name_rule
from rlscale.serve.limits import DEFAULT_MAX_REQUEST_BYTES, MAX_REQUEST_BYTES_ENV
from rlscale.spec import BATCH_ENV, BATCH_TIMEOUT_ENV, VARIANT_ENV

FACTORY_ENV = "RLSCALE_MODEL_FACTORY"
PIPELINE_ENV = "RLSCALE_PIPELINE"
STAGE_ENV = "RLSCALE_STAGE"

MAX_BATCH = 100_000
MAX_BATCH_TIMEOUT_S = 3600.0
MIN_REQUEST_BYTES = 1024
MAX_REQUEST_BYTES = 2**31
MAX_LABEL = 253
"""The longest variant, pipeline or stage name taken (a Kubernetes object name's limit)."""

FIELDS = (  # setting, flag, env var
    ("factory", "--model", FACTORY_ENV),
    ("variant", "--variant", VARIANT_ENV),
    ("max_batch_size", "--batch", BATCH_ENV),
    ("batch_timeout_s", "--batch-timeout", BATCH_TIMEOUT_ENV),
    ("pipeline", "--pipeline", PIPELINE_ENV),
    ("stage", "--stage", STAGE_ENV),
    ("max_request_bytes", "--max-request-bytes", MAX_REQUEST_BYTES_ENV),
)
OPTIONAL = ("max_batch_size", "batch_timeout_s", "max_request_bytes")
"""The settings with a default."""
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PRINTABLE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class StageSettings:
    """What a stage server serves (checked by `resolve`).

    Attributes:
        factory: ``MODULE:FUNCTION``; ``FUNCTION(variant)`` returns ``(model, make_batch)``.
        variant: the variant handed to the factory.
        max_batch_size: the most items one model call takes.
        batch_timeout_s: the longest the oldest queued request waits for a full batch while the model is idle.
        pipeline: the ``pipeline`` label of every metric.
        stage: the ``stage`` label of every metric.
        name: the model's name in the protocol's paths (``/v2/models/{name}/infer``); the stage's by default.
        max_request_bytes: the largest REST request body taken (decompressed); a larger one is answered 413.
    """

    factory: str
    variant: str
    pipeline: str
    stage: str
    max_batch_size: int = 1
    batch_timeout_s: float = 0.0
    name: str = ""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    @property
    def model_name(self) -> str:
        return self.name or self.stage


def resolve(given: Mapping[str, str | None], environ: Mapping[str, str], name: str | None = None) -> StageSettings:
    """The settings from the flags given, each missing one from its env var (module docstring), checked.

    Args:
        given: raw flag values by setting (``factory``, ``variant``...), None or absent where not given.
        environ: the environment (``os.environ``).
        name: the model's name (``--name``); None: the stage's.

    Raises:
        ServeError: a required setting is missing or a value is invalid; the message names the flag or env var.
    """
    raw: dict[str, tuple[str, str]] = {}  # setting -> (value, where it came from, for messages)
    for setting, flag, env in FIELDS:
        value = given.get(setting)
        if value is not None:
            raw[setting] = (value, flag)
        elif environ.get(env, "") != "":
            raw[setting] = (environ[env], env)
    for setting, flag, env in FIELDS:
        if setting not in raw and setting not in OPTIONAL:
            raise ServeError(f"no {_WHAT[setting]}: give {flag} or set {env}")

    def where(setting: str) -> str:
        value, source = raw[setting]
        return f"{source} {value!r}" if source.startswith("--") else f"{source}={value!r}"

    factory = raw["factory"][0].strip()
    if not _FACTORY.match(factory):
        raise ServeError(f"{where('factory')}: expected MODULE:FUNCTION, such as rlscale.examples.mlp:build")
    texts = {}
    for setting in ("variant", "pipeline", "stage"):
        value = raw[setting][0].strip()
        if not _PRINTABLE.match(value) or len(value) > MAX_LABEL:
            raise ServeError(f"{where(setting)}: expected 1-{MAX_LABEL} printable characters without spaces")
        texts[setting] = value
    batch = 1
    if "max_batch_size" in raw:
        try:
            batch = int(raw["max_batch_size"][0].strip())
        except ValueError:
            batch = 0
        if not 1 <= batch <= MAX_BATCH:
            raise ServeError(f"{where('max_batch_size')}: expected an integer from 1 to {MAX_BATCH}")
    timeout = 0.0
    if "batch_timeout_s" in raw:
        try:
            timeout = float(raw["batch_timeout_s"][0].strip())
        except ValueError:
            timeout = math.nan
        if not 0.0 <= timeout <= MAX_BATCH_TIMEOUT_S:  # NaN fails too
            raise ServeError(f"{where('batch_timeout_s')}: expected seconds from 0 to {MAX_BATCH_TIMEOUT_S:g}")
    max_request_bytes = DEFAULT_MAX_REQUEST_BYTES
    if "max_request_bytes" in raw:
        try:
            max_request_bytes = int(raw["max_request_bytes"][0].strip())
        except ValueError:
            max_request_bytes = 0
        if not MIN_REQUEST_BYTES <= max_request_bytes <= MAX_REQUEST_BYTES:
            raise ServeError(
                f"{where('max_request_bytes')}: expected a whole number of bytes from {MIN_REQUEST_BYTES} to "
                f"{MAX_REQUEST_BYTES}"
            )
    model_name = name if name is not None else texts["stage"]
    if not is_safe_name(model_name):
        source = f"--name {name!r}" if name is not None else f"the stage {model_name!r}"
        raise ServeError(f"{source} cannot name the model in its URL ({name_rule()}): give --name")
    return StageSettings(
        factory=factory,
        variant=texts["variant"],
        pipeline=texts["pipeline"],
        stage=texts["stage"],
        max_batch_size=batch,
        batch_timeout_s=timeout,
        name=name or "",
        max_request_bytes=max_request_bytes,
    )


_WHAT = {
    "factory": "model factory",
    "variant": "model variant",
    "pipeline": "pipeline name (the metrics' pipeline label)",
    "stage": "stage name (the metrics' stage label)",
}


def check_ports(host: str, ports: Mapping[str, int]) -> None:
    """Check that each port can be bound on ``host`` now, so a taken one is one line before the model loads.

    Args:
        host: the address the server binds.
        ports: port by flag (``--http-port``...).

    Raises:
        ServeError: two flags name the same port, the host is not an address of this machine, or a port is taken.
    """
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise ServeError(f"{flag} {port}: already {seen[port]}'s; each server needs a port of its own")
        seen[port] = flag
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"--host {host!r}: not an address ({exc.strerror or exc})") from None
    family, _, _, _, address = infos[0]
    for flag, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no conflict
            try:
                s.bind((address[0], port))
            except OSError as exc:
                raise ServeError(f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
