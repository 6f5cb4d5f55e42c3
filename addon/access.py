"""Who may use the balancer: client keys for the API, admin keys for the admin endpoints, and a loud warning
when it listens beyond this machine with nobody's key required. A client whose key is accepted is known by its
name from then on (`client_of(flow)`): quotas, logs and metrics use the name, never the key."""

from __future__ import annotations

import hmac
import ipaddress
import logging

from mitmproxy import ctx, http

from .attempt_marker import is_attempt_flow
from .flow_hygiene import client_headers
from .log_text import loggable
from .providers import Providers
from .responses import error_response

log = logging.getLogger("balancer")

ADMIN_PATHS = frozenset({"/providers", "/providers/reload", "/metrics", "/usage", "/routes/explain"})
# flow.metadata's field for the name of the client whose key the flow presented (never the key).
CLIENT_FIELD = "balancer_client"


def client_of(flow: http.HTTPFlow) -> str | None:
    name = flow.metadata.get(CLIENT_FIELD)
    return name if isinstance(name, str) else None


def presented_key(headers: http.Headers) -> str | None:
    """The key a client sent: `x-api-key`, or `Authorization: Bearer` (what Claude Code sends for
    ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN)."""
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_matches(presented: str | None, keys: list[str]) -> bool:
    return matching_key(presented, keys) is not None


def matching_key(presented: str | None, keys: list[str]) -> int | None:
    """The position of the key presented among `keys`, or None. Constant time per key, and every key is compared
    (no early exit that would time which one matched)."""
    if not presented or not keys:
        return None
    # A header that is not UTF-8 reaches here with surrogate escapes: it matches no key, and must not raise.
    candidate = presented.encode("utf-8", "surrogateescape")
    found = -1
    for position, key in enumerate(keys):
        if hmac.compare_digest(candidate, key.encode()):
            found = position
    return found if found >= 0 else None


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessControl:
    def __init__(self, providers: Providers):
        self.providers = providers

    def running(self) -> None:
        host = ctx.options.listen_host if "listen_host" in ctx.options else ""
        if not is_loopback(host) and not self.providers.settings.client_keys:
            where = host or "every network interface"
            log.warning(
                "!!! The balancer listens on %s and settings.client_keys is empty: anyone who can reach this "
                "port can spend your providers' credits. Set client_keys, or listen on 127.0.0.1. !!!", where
            )

    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        settings = self.providers.settings
        path = flow.request.path.split("?", 1)[0]
        client_keys = settings.client_key_values
        if path in ADMIN_PATHS:
            keys, what = settings.admin_keys or client_keys, "an admin key"
        elif path.startswith("/v1/"):
            keys, what = client_keys, "a client key"
        else:
            return
        presented = presented_key(client_headers(flow))
        position = matching_key(presented, keys)
        if keys is client_keys and position is not None:
            flow.metadata[CLIENT_FIELD] = settings.client_keys[position].name
        if keys and position is None:
            log.info("refused %s %s from %s: no valid %s", loggable(flow.request.method), loggable(path),
                     flow.client_conn.peername[0] if flow.client_conn.peername else "?", what.split(" ", 1)[1])
            problem = "the key sent is not one of its keys" if presented else "no key was sent"
            flow.response = error_response(
                401, "authentication_error",
                f"this balancer needs {what} (x-api-key or Authorization: Bearer): {problem}",
            )
