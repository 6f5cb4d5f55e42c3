"""Credentials never survive in text taken from a provider."""

from __future__ import annotations

import pytest

from addon.redact import REDACTED, Redactor

KEY = "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt"


@pytest.mark.parametrize(
    "text",
    [
        f"invalid x-api-key: {KEY}",
        f"Incorrect API key provided: {KEY[:12]}...{KEY[-8:]}.",
        f"key ending in {KEY[-10:]} was revoked",
        f'{{"error": "bad token {KEY[3:20]}"}}',
    ],
)
def test_whole_and_partial_keys_are_removed(text):
    out = Redactor([KEY])(text)
    assert REDACTED in out
    for size in range(8, len(KEY) + 1):
        for start in range(len(KEY) - size + 1):
            assert KEY[start : start + size] not in out


def test_innocent_text_is_left_alone():
    text = "Overloaded: the provider is overloaded_error, retry in 30 seconds (request_id req_0123)"
    assert Redactor([KEY])(text) == text


def test_short_or_empty_secrets_are_not_looked_for():
    assert Redactor(["", "abc"])("abc is fine") == "abc is fine"
