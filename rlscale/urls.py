"""URLs a user hands rlscale (``--prometheus``, a server to profile): parsed safely, checked, and shown without
their secrets.

A core module (standard library only): `check_http_url` is the one check of an http(s) base URL, `redact_url` the
one way a URL is shown in a log line or a message.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from rlscale.errors import RlscaleError


def redact_url(url: str) -> str:
    """``url`` without its secrets, for logs and messages: ``http://user:pw@prom:9090/x?token=t`` ->
    ``http://***@prom:9090/x?***``.

    Everything up to the last ``@`` after the scheme is hidden, so an unencoded ``@``, ``/`` or ``?`` in a
    password cannot leak (an ``@`` in a path hides more than needed, which is the safe side); then a query string
    or fragment (``?token=...``) is hidden whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    head = ""
    if at >= 0:
        head, rest = "***@", rest[at + 1 :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        rest = f"{rest[: cut + 1]}***"
    return f"{scheme}{sep}{head}{rest}"


def check_http_url(url: str, what: str, query_hint: str = "") -> str:
    """``url`` without a trailing slash, if it is a usable http(s) base URL; else `RlscaleError` naming ``what``.

    Usable: no whitespace or control characters, parsed by `urllib.parse.urlsplit` (an unclosed ``[::1`` or a
    port that is no port is an error, not an exception), scheme http or https, a host, and no query string or
    fragment (API paths are appended to a base URL, and a token there would show in logs and manifests).

    Args:
        url: the URL as given.
        what: how messages name it (``--prometheus``).
        query_hint: added to the message about a query string (where a token belongs instead).

    Raises:
        RlscaleError: one line; the URL in it is redacted (`redact_url`).
    """
    shown = repr(redact_url(url))
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise RlscaleError(f"{what} {shown}: a URL has no spaces, line breaks or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        raise RlscaleError(f"{what} {shown}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise RlscaleError(
            f"{what} {shown}: need an http(s) URL such as http://prometheus:9090: it must start with http:// or "
            "https:// and name a host"
        )
    if parts.query or parts.fragment or url.rstrip("/").endswith(("?", "#")):
        raise RlscaleError(
            f"{what} {shown}: a base URL takes no query string or fragment (the API's paths are appended to it, and "
            f"it would show in logs and manifests){query_hint}"
        )
    return url.rstrip("/")
