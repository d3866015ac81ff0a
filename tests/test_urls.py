"""`rlscale.urls`: the one check of an http(s) base URL and the one way a URL is shown."""

from __future__ import annotations

import pytest

from rlscale.errors import RlscaleError
from rlscale.urls import check_http_url, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://prom:9090/api?token=s3cret", "http://prom:9090/api?***"),
        ("http://prom:9090#access_token=s3cret", "http://prom:9090#***"),
        ("http://u:s3cret@prom:9090/?token=s3cret", "http://***@prom:9090/?***"),
        ("http://u:s3?cret@prom:9090/", "http://***@prom:9090/"),
    ],
)
def test_redact_url_hides_query_strings_and_fragments(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://u:s3cret@[::1", "not a valid URL"),
        ("http://[::1]:99999", "not a valid URL"),
        ("http://prom:port", "not a valid URL"),
        ("http://prom:9090\n", "line breaks"),
        ("http://prom:9090?token=s3cret", "query string"),
        ("http://prom:9090?", "query string"),
        ("ftp://prom", "http(s)"),
        ("http://", "http(s)"),
    ],
)
def test_check_http_url_refuses_with_one_line_that_hides_secrets(url, problem):
    with pytest.raises(RlscaleError) as info:
        check_http_url(url, "--prometheus")
    message = str(info.value)
    assert problem in message and "\n" not in message and "s3cret" not in message, message


@pytest.mark.parametrize("url", ["http://prom:9090/", "https://u:p@prom.example/prometheus", "http://[::1]:9090"])
def test_check_http_url_accepts_base_urls(url):
    assert check_http_url(url, "--prometheus") == url.rstrip("/")
