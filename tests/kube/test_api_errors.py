"""Kubernetes API errors: how each status is classified, and a 429's ``Retry-After`` read in seconds or as a date."""

from __future__ import annotations

import email.utils

import pytest
from kubernetes.client.exceptions import ApiException

from rlscale.kube.actuator import (
    ERROR_KINDS,
    TEMPORARY_KINDS,
    classify,
    parse_retry_after,
    retry_after_s,
)

NOW_S = 1_750_000_000.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(409, "conflict"), (429, "throttled"), (500, "server"), (503, "server"), (401, "unauthorized"), (422, "invalid")],
)
def test_classify(status, kind):
    assert classify(ApiException(status=status)) == kind
    assert kind in ERROR_KINDS


def test_throttled_is_temporary_and_its_own_kind():
    assert "throttled" in TEMPORARY_KINDS
    assert classify(ApiException(status=429)) != classify(ApiException(status=500))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),  # not RFC 9110, but unambiguous
        ("-4", 0.0),  # a wait cannot be negative
        (email.utils.formatdate(NOW_S + 42, usegmt=True), 42.0),  # IMF-fixdate
        ("Sun, 15 Jun 2025 15:07:20 GMT", 1_750_000_040.0 - NOW_S),
        (email.utils.formatdate(NOW_S - 60, usegmt=True), 0.0),  # a date already past
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Sun, 15 Jun 2025 15:07:20", None),  # a date without its zone
    ],
)
def test_parse_retry_after(value, seconds):
    got = parse_retry_after(value, now_s=NOW_S)
    assert got == (None if seconds is None else pytest.approx(seconds))


def test_retry_after_is_read_from_a_429_only():
    assert retry_after_s(ApiException(status=429)) is None  # no headers at all
    throttled = ApiException(status=429)
    throttled.headers = {"retry-after": "7"}  # any case
    assert retry_after_s(throttled) == 7.0
    unavailable = ApiException(status=503)
    unavailable.headers = {"Retry-After": "7"}
    assert retry_after_s(unavailable) is None  # a 5xx backs off on its own schedule
