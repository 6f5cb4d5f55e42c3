"""How a provider's keys are named wherever they show: `#1`, `#2`, ... (file order) and a short fingerprint; never
the key. And how the balancer itself knows a key between reloads and across instances: its subject.

The fingerprint is a keyed hash (HMAC-SHA256) cut to 6 hex digits. A plain hash of a key would let anyone who sees
it check a guess offline, and keys are not always long random strings (a short proxy token, a key whose prefix
and most characters are known from a leak): with a secret only the balancer holds, a fingerprint tells which key
it is to whoever configured the keys, and nothing to anyone else.

A key's subject (`key:<provider>#<identity>`) names its use in the current windows, its open requests, its
rate-limit readings and a pool key's health. It follows the key, not its place in the file: removing key #1 must
not hand its counters to the key that becomes #1. The identity is a digest of the provider's type, base_url, way of
authenticating and the key, the same on every instance with the same settings, and never a digest a guess can be
checked against cheaply:
- with `settings.key_fingerprint_secret`: an HMAC under that secret;
- without it and without shared state: an HMAC under a random secret of this process (the subject never leaves it);
- without it, with shared state (the subjects are in the server's key names): scrypt, so that checking one guess
  costs tens of milliseconds; set the secret to make it unguessable whatever the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

FINGERPRINT_HEX = 6
IDENTITY_HEX = 16
_PROCESS_SECRET = secrets.token_bytes(32)
_SCRYPT_SALT = b"claude-code-provider-balancer key identity"


def key_label(index: int) -> str:
    """`#1` for the first key of the pool."""
    return f"#{index + 1}"


def key_subject(provider: str, identity: str) -> str:
    """How usage windows, headroom, a pool key's health and shared state know a key: `key:<provider>#<identity>`."""
    return f"key:{provider}#{identity}"


@functools.lru_cache(maxsize=1024)
def key_identity(provider_parts: tuple[str, ...], value: str, secret: str | None, shared: bool) -> str:
    """The identity of the key `value` of the provider `provider_parts` describes (see the module's doc)."""
    material = "\0".join((*provider_parts, value)).encode("utf-8", "surrogatepass")
    if secret:
        key = b"key identity\0" + secret.encode("utf-8", "surrogatepass")
    elif shared:
        return hashlib.scrypt(material, salt=_SCRYPT_SALT, n=2**14, r=8, p=1, dklen=IDENTITY_HEX // 2).hex()
    else:
        key = _PROCESS_SECRET
    return hmac.new(key, material, hashlib.sha256).hexdigest()[:IDENTITY_HEX]


class Fingerprints:
    def __init__(self, secret: str | None = None):
        self._secret = (secret or secrets.token_hex(32)).encode("utf-8", "surrogatepass")

    def of(self, value: str) -> str:
        digest = hmac.new(self._secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return digest[:FINGERPRINT_HEX]
