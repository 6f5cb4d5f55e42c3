"""How a provider's keys are named wherever they show: `#1`, `#2`, ... (file order) and a short fingerprint; never
the key.

The fingerprint is a keyed hash (HMAC-SHA256) cut to 6 hex digits. A plain hash of a key would let anyone who sees
it check a guess offline, and keys are not always long random strings (a short proxy token, a key whose prefix
and most characters are known from a leak): with a secret only the balancer holds, a fingerprint tells which key
it is to whoever configured the keys, and nothing to anyone else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

FINGERPRINT_HEX = 6


def key_label(index: int) -> str:
    """`#1` for the first key of the pool."""
    return f"#{index + 1}"


def key_subject(provider: str, index: int) -> str:
    """How usage windows, headroom and shared state know a key: `key:<provider>#<n>`."""
    return f"key:{provider}{key_label(index)}"


def health_name(provider: str, index: int, pool: bool) -> str:
    """The name a key's health is kept under on the health board: the provider's own for a single key (its health
    is the provider's, as before pools), the key's subject in a pool."""
    return key_subject(provider, index) if pool else provider


class Fingerprints:
    def __init__(self, secret: str | None = None):
        self._secret = (secret or secrets.token_hex(32)).encode("utf-8", "surrogatepass")

    def of(self, value: str) -> str:
        digest = hmac.new(self._secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return digest[:FINGERPRINT_HEX]
