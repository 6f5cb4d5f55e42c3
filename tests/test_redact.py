"""Credentials never survive in text taken from a provider."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import strategies as st

from addon.redact import MIN_SECRET, REDACTED, Redactor, base64_forms
from fuzzing import quick_and_deep

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


KEY_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=MIN_SECRET, max_size=60)


@quick_and_deep(200, secret=KEY_TEXT, before=st.binary(max_size=5), after=st.binary(max_size=5),
                urlsafe=st.booleans())
def test_a_secret_in_base64_is_removed_at_any_alignment(secret, before, after, urlsafe):
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(before + secret.encode() + after).decode()
    out = Redactor([secret])(f"echo: {encoded} end")
    assert REDACTED in out
    # What is left of the encoding is what depends on the bytes around the secret: never the secret's own.
    for form in base64_forms(secret):
        assert form not in out
    assert len(out) <= len(f"echo: {encoded} end") - len(secret) * 4 // 3 + len(REDACTED) + 8


@quick_and_deep(200, secret=KEY_TEXT, flips=st.lists(st.booleans(), min_size=60, max_size=60),
                around=st.sampled_from(["{}", "key={}&x=1", '"{}"', "Bearer {}\n"]))
def test_a_secret_in_any_letter_case_is_removed(secret, flips, around):
    cased = "".join(c.upper() if flip else c.lower() for c, flip in zip(secret, flips, strict=False))
    out = Redactor([secret])(around.format(cased))
    assert REDACTED in out and cased not in out and cased.lower() not in out.lower()


def test_the_trial_echoes_are_removed():
    key = "sk-ant-api03-SEEDK1aaaaaaaaaaaaaaaa"
    echoed = base64.b64encode(key.encode()).decode()
    assert echoed == "c2stYW50LWFwaTAzLVNFRURLMWFhYWFhYWFhYWFhYWFhYWE="
    out = Redactor([key])(f"key rate limited; b64 {echoed} upper {key.upper()}")
    assert "c2stYW50LWFwaTAzLVNFRURLMWFh" not in out and key.upper() not in out
    assert out.count(REDACTED) == 2


def test_base64_of_other_text_is_left_alone():
    text = "data " + base64.b64encode(b"an innocent image header, nothing secret here").decode()
    assert Redactor([KEY, "another-secret-value-0000"])(text) == text
