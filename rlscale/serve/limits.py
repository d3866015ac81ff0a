"""A cap on the size of a REST request's body (`BodyLimit`), applied before the server reads the body into memory.

MLServer reads a request's whole body, then parses the JSON into Python lists and pydantic models: a body takes
about 18 times its size in memory (one request of 100 MB took a stage server to 1.8 GB). `BodyLimit` answers
**413** instead of handing the server a body over ``max_bytes``:

- a ``Content-Length`` over the cap is refused before a byte of the body is read;
- a body without one (``Transfer-Encoding: chunked``) is counted as it arrives and refused once it passes the cap,
  so at most ``max_bytes`` of it is ever held;
- a gzip-compressed body (``Content-Encoding: gzip``, which MLServer decompresses whole) is decompressed here, at
  most ``max_bytes`` of output, and handed on decompressed: a small bomb is refused as a large body is.

The response names the cap and the setting that raises it, in MLServer's error format (``{"error": ...}``), and
closes the connection (the rest of a refused body is never read). This module is plain ASGI: it imports only the
standard library.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_REQUEST_BYTES_ENV = "RLSCALE_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""16 MiB: a batch of 8 images of 3x224x224 in JSON (about 12 MB) fits; the server then holds a few hundred MB."""


class BodyTooLarge(Exception):
    """The body passed the cap."""


class BodyLimit:
    """ASGI middleware: refuse (413) a request whose body, decompressed, is over ``max_bytes`` (module docstring).

    Args:
        app: the ASGI app behind it.
        max_bytes: the largest body handed on, in bytes.
        setting: how a user raises the cap, for the message (a flag or an env var).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str = MAX_REQUEST_BYTES_ENV) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._refuse(send, 400, f"Content-Length {length[:40]!r} is not a number of bytes")
                return
            if int(length) > self.max_bytes:
                await self._refuse(send, 413, f"the request body has {int(length)} bytes, {self._over()}")
                return
        try:
            body = await self._read(receive)
        except BodyTooLarge:
            await self._refuse(send, 413, f"the request body is {self._over()}")
            return
        if body is None:  # the client went away
            return
        encoding = (_header(scope, b"content-encoding") or "").lower()
        if "gzip" in encoding:
            try:
                body = self._gunzip(body)
            except BodyTooLarge:
                await self._refuse(send, 413, f"the request body, decompressed, is {self._over()}")
                return
            except ValueError as exc:
                await self._refuse(send, 400, f"the request body is not valid gzip: {exc}")
                return
            headers = []
            for name, value in scope["headers"]:  # what follows sees the decompressed body
                key = name.lower()
                if key == b"content-encoding":
                    continue
                headers.append((name, str(len(body)).encode() if key == b"content-length" else value))
            scope = {**scope, "headers": headers}

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, when it comes

        await self.app(scope, replay, send)

    def _over(self) -> str:
        return f"over this server's limit of {self.max_bytes} bytes (raise it with {self.setting})"

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, at most ``max_bytes`` of it held; None when the client disconnects first.

        Raises:
            BodyTooLarge: it passed ``max_bytes``.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _gunzip(self, body: bytes) -> bytes:
        """``body`` decompressed (gzip), at most ``max_bytes`` of output.

        Raises:
            BodyTooLarge: the output passes ``max_bytes``.
            ValueError: not gzip, or cut short.
        """
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = decompressor.decompress(body, self.max_bytes + 1)
        except zlib.error as exc:
            raise ValueError(str(exc)) from None
        if len(out) > self.max_bytes:
            raise BodyTooLarge
        if not decompressor.eof:
            raise ValueError("the compressed data ends early")
        if decompressor.unused_data:
            raise ValueError("data after the end of the compressed stream")
        return out

    @staticmethod
    async def _refuse(send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the rest of a refused body is never read
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as latin-1, stripped; None when absent."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
