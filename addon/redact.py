"""Keeping credentials out of every text the balancer makes from a provider's words (error messages echo keys)."""

from __future__ import annotations

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


class Redactor:
    """Replaces any configured secret in a text, and any run of 8+ key-like characters that is part of one
    (a provider that echoes `sk-ant-...XYZ12345` or the first characters of a key)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._short = functools.lru_cache(maxsize=1024)(self._redact)

    def __call__(self, text: str) -> str:
        if not self.secrets or not text:
            return text
        return self._short(text) if len(text) <= SHORT_TEXT else self._redact(text)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _TOKEN.sub(self._token, text)

    def _token(self, match: re.Match[str]) -> str:
        token = match.group(0)
        for part in _parts(token):
            if any(part in secret for secret in self.secrets):
                return REDACTED
        return token


def _parts(token: str) -> list[str]:
    """The token, and its pieces between punctuation that a provider may have put around a key fragment."""
    pieces = [p for p in re.split(r"[.~+/=]+", token) if len(p) >= MIN_SECRET]
    return [token, *pieces]
