"""Profile a model that is already served, over the Open Inference Protocol (KServe V2 REST; MLServer, Triton and
KServe speak it), with the standard library's `urllib`.

The client asks ``GET /v2/models/{name}/ready`` (HTTP 200 is ready), reads the input tensor's name, datatype and
shape from ``GET /v2/models/{name}`` when the flags leave them open, then times ``POST /v2/models/{name}/infer``
requests. A point of batch b is **one request whose input tensor has a batch dimension of b** (shape
``[b, *item_shape]``, the data flattened in row-major order, as the protocol allows), so the server sees the batch
as the model will: a server-side batcher (MLServer's adaptive batching) has nothing to merge. Each timed run is
one request from sending it to reading the whole response; the body is built once per batch size, before the
timing. Each request opens its own connection (urllib), as a fresh client does; on the same host that costs well
under a millisecond. Proxies named in the environment are not used: they would be part of every timing.

The model is deployed with its own batch and core settings: ``cores`` only labels the rows.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rlscale.errors import ProfilingError
from rlscale.kube.prometheus import redact_url
from rlscale.profiling.results import Measurement
from rlscale.profiling.timing import time_calls
from rlscale.profiling.worker import describe

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
"""The protocol's tensor datatypes this client can fill with random data (``BYTES`` needs real payloads)."""

DEFAULT_INPUT_NAME = "input-0"
DEFAULT_ITEM_SHAPE = (3, 32, 32)
"""One item of the bundled examples (`rlscale.examples`): a 3x32x32 image."""
DEFAULT_DATATYPE = "FP32"
MAX_ERROR_CHARS = 300
"""How much of a server's error body a message quotes."""


@dataclass(frozen=True)
class InputTensor:
    """The input tensor a request carries.

    Attributes:
        name: the model's input name.
        datatype: a key of `DATATYPES`.
        item_shape: one item's shape, without the batch dimension.
    """

    name: str
    datatype: str
    item_shape: tuple[int, ...]


def base_url(url: str, flag: str = "--url") -> str:
    """``url`` checked (http or https, a host) and without a trailing ``/``; a path prefix (a gateway's) is kept.

    A message names ``flag`` and shows the URL without its ``user:password@`` part
    (`rlscale.kube.prometheus.redact_url`).

    Raises:
        ProfilingError: not a URL (an unclosed IPv6 bracket...), another scheme, no host, user:password in it,
            a query or a fragment.
    """
    shown = repr(redact_url(url))
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port that is no number or out of range raises
    except ValueError as exc:
        raise ProfilingError(f"{flag} {shown}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProfilingError(f"{flag} {shown}: expected http://HOST:PORT or https://HOST:PORT")
    if parts.username or parts.password:
        raise ProfilingError(
            f"{flag} {shown}: leave credentials out of the URL (it is written into the profile's source)"
        )
    if parts.query or parts.fragment:
        raise ProfilingError(f"{flag} {shown}: no query or fragment; give the server's base URL")
    return url.rstrip("/")


class V2Client:
    """The three calls of the Open Inference Protocol the profiler needs, for one model.

    Args:
        url: the server's base URL (`base_url`).
        model: the model's name on the server.
        timeout_s: how long one HTTP call may take.
    """

    def __init__(self, url: str, model: str, timeout_s: float = 60.0) -> None:
        self.url = base_url(url)
        self.model = model
        self.timeout_s = timeout_s
        self.model_url = f"{self.url}/v2/models/{urllib.parse.quote(model, safe='')}"
        # straight to the server: a proxy from the environment would be part of every timing
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(HTTP status, body) of a GET (no body) or a JSON POST; an HTTP error status is returned, not raised.

        Raises:
            ProfilingError: the server cannot be reached or does not answer in time.
        """
        request = urllib.request.Request(
            self.model_url + path,
            data=body,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"} if body is not None else {},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except TimeoutError:
            raise ProfilingError(f"--url {self.url}: no answer within {self.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            if isinstance(exc.reason, TimeoutError):
                raise ProfilingError(f"--url {self.url}: no answer within {self.timeout_s:g} s") from None
            raise ProfilingError(f"--url {self.url}: cannot reach the server: {reason}") from None
        except (OSError, ValueError) as exc:  # a reset connection, an invalid port...
            raise ProfilingError(f"--url {self.url}: cannot reach the server: {describe(exc)}") from None

    def check_ready(self) -> None:
        """``GET /v2/models/{name}/ready``: HTTP 200 (and no ``"ready": false`` in a JSON body) is ready.

        Raises:
            ProfilingError: unreachable, or the model is not ready (the status and the server's message).
        """
        status, body = self._call("/ready")
        doc = _json_or_none(body)
        if status == 200 and not (isinstance(doc, dict) and doc.get("ready") is False):
            return
        raise ProfilingError(
            f"model {self.model!r} at {self.url} is not ready (GET {self.model_url}/ready: HTTP {status}"
            f"{_error_text(body, doc)})"
        )

    def metadata(self) -> dict | None:
        """``GET /v2/models/{name}``: the model's metadata, None when the server gives none (not 200, not JSON)."""
        status, body = self._call("")
        doc = _json_or_none(body)
        return doc if status == 200 and isinstance(doc, dict) else None

    def infer(self, body: bytes) -> tuple[int, bytes]:
        """``POST /v2/models/{name}/infer`` with a JSON inference request; (status, response body)."""
        return self._call("/infer", body)


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def _error_text(body: bytes, doc: object = None) -> str:
    """``: <the server's message>`` (the protocol's ``{"error": ...}``, else the body's start), or ``""``."""
    if isinstance(doc, dict) and "error" in doc:
        text = str(doc["error"])
    else:
        text = body.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return f": {text}" if text else ""


def input_tensor(
    metadata: dict | None,
    name: str | None = None,
    datatype: str | None = None,
    item_shape: Sequence[int] | None = None,
) -> InputTensor:
    """The input tensor to send: each of the flags where given, else the model's metadata (its first input; a
    leading ``-1`` there is the batch dimension), else the bundled examples' defaults (``input-0``, FP32, 3x32x32).

    Raises:
        ProfilingError: a datatype this client cannot fill.
    """
    inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else {}
    meta_shape = first.get("shape")
    meta_item = None
    if isinstance(meta_shape, list) and len(meta_shape) >= 2 and all(isinstance(d, int) for d in meta_shape):
        if meta_shape[0] == -1 and all(d > 0 for d in meta_shape[1:]):
            meta_item = tuple(meta_shape[1:])
    meta_name = first.get("name") if isinstance(first.get("name"), str) and first.get("name") else None
    meta_type = first.get("datatype") if isinstance(first.get("datatype"), str) else None
    chosen_type = (datatype or meta_type or DEFAULT_DATATYPE).upper()
    if chosen_type not in DATATYPES:
        raise ProfilingError(
            f"input datatype {chosen_type!r}: the profiler fills {', '.join(DATATYPES)} with random data; give "
            "--datatype for a model that takes one of those"
        )
    return InputTensor(
        name or meta_name or DEFAULT_INPUT_NAME,
        chosen_type,
        tuple(item_shape) if item_shape else (meta_item or DEFAULT_ITEM_SHAPE),
    )


def infer_body(tensor: InputTensor, batch: int, seed: int = 0) -> bytes:
    """An inference request of one input tensor of shape ``[batch, *item_shape]``, random data (seeded)."""
    rng = np.random.default_rng(seed)
    shape = (batch, *tensor.item_shape)
    dtype = DATATYPES[tensor.datatype]
    if tensor.datatype == "BOOL":
        data = rng.random(shape) < 0.5
    elif np.issubdtype(dtype, np.integer):
        data = rng.integers(0, 100, size=shape).astype(dtype)
    else:
        data = rng.standard_normal(shape).astype(dtype)
    request = {
        "inputs": [
            {"name": tensor.name, "shape": list(shape), "datatype": tensor.datatype, "data": data.ravel().tolist()}
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode("utf-8")


def check_response(status: int, body: bytes, variant: str, batch: int) -> None:
    """An HTTP 200 whose body is an inference response (``outputs``: a list of tensors), else one line.

    Raises:
        ProfilingError: the server refused the batch (its status and message) or answered something else.
    """
    doc = _json_or_none(body)
    if status != 200:
        raise ProfilingError(f"variant {variant!r} rejects batch {batch}: HTTP {status}{_error_text(body, doc)}")
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not (isinstance(outputs, list) and all(isinstance(o, dict) and "data" in o for o in outputs)):
        raise ProfilingError(
            f"variant {variant!r}, batch {batch}: the answer is no Open Inference Protocol response (no 'outputs' "
            f"list of tensors): {_error_text(body, doc).removeprefix(': ') or 'empty body'}"
        )


def profile_served(
    client: V2Client,
    tensor: InputTensor,
    variant: str,
    batches: Sequence[int],
    cores: int,
    *,
    warmup: int = 3,
    repeats: int = 20,
) -> Iterator[Measurement]:
    """Time ``repeats`` inference requests per batch size, after ``warmup`` untimed ones; every answer is checked
    (after the timing); yields one `Measurement` per batch size, labelled ``variant`` and ``cores``.

    Raises:
        ProfilingError: the server refused a batch or stopped answering.
    """
    for b in batches:
        body = infer_body(tensor, int(b))
        if warmup:  # the first warm-up checked at once: a refused batch fails fast
            check_response(*client.infer(body), variant, int(b))
        answers: list[tuple[int, bytes]] = []
        samples = time_calls(
            lambda body=body, answers=answers: answers.append(client.infer(body)), max(warmup - 1, 0), repeats
        )
        for status, answer in answers:  # checked after the timing, which covers the request only
            check_response(status, answer, variant, int(b))
        yield Measurement(variant, int(b), int(cores), tuple(samples))
