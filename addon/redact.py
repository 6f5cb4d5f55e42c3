"""Keeping credentials out of every text the balancer makes from a provider's words (error messages echo keys)."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter secrets are not looked for: too many innocent words would match.
MIN_SECRET = 8
_TOKEN = re.compile(rf"[A-Za-z0-9_\-.~+/=]{{{MIN_SECRET},}}")
# Texts up to this long (header values, mostly) are remembered with their redaction: every request brings the
# same user agent, beta flags and content types, and each flow's headers are looked at.
SHORT_TEXT = 256


def base64_forms(secret: str) -> set[str]:
    """What a secret looks like inside any base64 text (standard or URL-safe alphabet): for each of the three
    alignments it can start at, the characters that depend on the secret's bytes alone (the first and last
    characters also depend on the bytes around it)."""
    data = secret.encode("utf-8", "surrogatepass")
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        start, end = -(-8 * offset // 6), 8 * (offset + len(data)) // 6
        inner = encoded[start:end]
        if len(inner) >= MIN_SECRET:
            forms |= {inner, inner.translate(_URLSAFE)}
    return forms


_URLSAFE = str.maketrans("+/", "-_")


class Redactor:
    """Replaces any configured secret in a text, in any letter case and in its base64 forms, and any run of 8+
    key-like characters that is part of one in any case (a provider that echoes `sk-ant-...XYZ12345` or the
    first characters of a key)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._folded = [(s.lower(), re.compile(re.escape(s), re.IGNORECASE)) for s in self.secrets]
        self._lowered = [s.lower() for s in self.secrets]
        self._encoded = sorted({f for s in self.secrets for f in base64_forms(s)}, key=len, reverse=True)
        self._short = functools.lru_cache(maxsize=1024)(self._redact)

    def __call__(self, text: str) -> str:
        if not self.secrets or not text:
            return text
        return self._short(text) if len(text) <= SHORT_TEXT else self._redact(text)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        lowered = text.lower()  # only to tell whether a secret is there in another case: rare, then a regex
        for folded, pattern in self._folded:
            if folded in lowered:
                text = pattern.sub(REDACTED, text)
        for form in self._encoded:
            text = text.replace(form, REDACTED)
        return _TOKEN.sub(self._token, text)

    def _token(self, match: re.Match[str]) -> str:
        token = match.group(0)
        for part in _parts(token):
            part = part.lower()
            if any(part in secret for secret in self._lowered):
                return REDACTED
        return token


def client_secrets(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The credentials a client's request carries (its x-api-key, its bearer token): what a passthrough provider
    receives, and may echo."""
    found = []
    for name, value in headers:
        lname = name.lower()
        if lname == "x-api-key":
            found.append(value.strip())
        elif lname == "authorization":
            scheme, _, token = value.strip().partition(" ")
            found.append(token.strip() if token else scheme)
    return tuple(s for s in found if len(s) >= MIN_SECRET)


@functools.lru_cache(maxsize=64)  # a client sends the same key with every request
def with_secrets(base: Redactor, extra: tuple[str, ...]) -> Redactor:
    """`base` that also replaces `extra` (a client's own credentials)."""
    return Redactor([*base.secrets, *extra])


def _parts(token: str) -> list[str]:
    """The token, and its pieces between punctuation that a provider may have put around a key fragment."""
    pieces = [p for p in re.split(r"[.~+/=]+", token) if len(p) >= MIN_SECRET]
    return [token, *pieces]
