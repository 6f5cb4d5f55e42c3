"""Talking to providers: the request a provider receives, how its answer is classified, and the HTTP clients with
their TLS settings."""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import certifi
import httpcore
import httpx

from .config import ProviderConfig
from .http1_transport import Http1Transport
from .network_backend import AsyncioBackend
from .open_files import is_descriptor_exhaustion

# Never forwarded in either direction (RFC 9110 7.6.1 plus what the client library recomputes).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
CLIENT_CREDENTIALS = frozenset({"x-api-key", "authorization"})

# Statuses after which the same request goes to the next provider (the provider is failing, not the request).
FAILOVER_STATUSES = frozenset({408, 429})


_SECRET_NAME_PARTS = ("key", "auth", "token", "secret", "cookie", "password")


def is_secret_header(name: str) -> bool:
    """Headers whose values are never shown (flows in mitmweb, saved flows): credentials and their kin."""
    # Clients choose header names: only short ones are remembered, so the memory stays small whatever they send.
    return _is_secret_name(name) if len(name) <= 64 else _secret_name(name)


@functools.lru_cache(maxsize=512)
def _is_secret_name(name: str) -> bool:
    return _secret_name(name)


def _secret_name(name: str) -> bool:
    lname = name.lower()
    return lname in CLIENT_CREDENTIALS or any(part in lname for part in _SECRET_NAME_PARTS)


def to_wire(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header values as bytes: mitmproxy decodes them as UTF-8 (surrogates for anything else), and a client may
    send non-ASCII values (`x-title: café`), which httpx would refuse to encode from str."""
    return [(k.encode("latin-1", "replace"), v.encode("utf-8", "surrogateescape")) for k, v in headers]


def should_fail_over(status: int) -> bool:
    # A redirect is never handed to the client: its SDK would follow it and send the whole prompt, with whatever
    # headers it holds, to a host the provider named. For the balancer it is a provider that does not serve.
    return status in FAILOVER_STATUSES or status >= 500 or 300 <= status < 400


def upstream_url(provider: ProviderConfig, path_and_query: str) -> str:
    """`https://host/api` + `/v1/messages?beta=true` -> `https://host/api/v1/messages?beta=true`."""
    return provider.base_url + path_and_query


@functools.lru_cache(maxsize=256)  # requests go to a few URLs; clients choose paths, so the memory is bounded
def parsed_url(url: str) -> httpx.URL:
    """`httpx.URL(url)`, remembered: parsing one costs more than the rest of building the request."""
    return httpx.URL(url)


def upstream_headers(
    client_headers: Iterable[tuple[str, str]], provider: ProviderConfig, stream: bool
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones and its credentials, plus the provider's credential."""
    passthrough = provider.auth_type == "passthrough"
    out = []
    for name, value in client_headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname == "accept-encoding":
            continue
        if lname in CLIENT_CREDENTIALS and not passthrough:
            continue
        if lname == "content-encoding":  # the balancer sends the body decoded
            continue
        out.append((name, value))
    if provider.auth_type == "api_key":
        out.append(("x-api-key", provider.credential))
    elif provider.auth_type == "auth_token":
        out.append(("authorization", f"Bearer {provider.credential}"))
    # A stream is relayed event by event: ask for it uncompressed so nothing sits in a decompressor.
    # Uncompressed, streamed or not: a stream is relayed event by event (nothing may sit in a decompressor), and a
    # compressed answer would be inflated without a bound by the HTTP client.
    out.append(("accept-encoding", "identity"))
    extra = {k.lower() for k in provider.extra_headers}
    return [(k, v) for k, v in out if k.lower() not in extra] + list(provider.extra_headers.items())


def answer_headers(response: httpx.Response, redact: Callable[[str], str] = str) -> list[tuple[str, str]]:
    """The provider's response headers worth passing on (the body is relayed decoded and re-chunked), their
    values through `redact` (a provider may echo its key in a header)."""
    return [
        (k, redact(v))
        for k, v in response.headers.multi_items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-encoding", "x-balancer-provider")
    ]


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes, and the members of any exception group among them (anyio raises a group
    of per-address errors when a host has several addresses)."""
    chain: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(chain) < 16:
        current = pending.pop(0)
        chain.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        cause = current.__cause__ or current.__context__
        if cause is not None:
            pending.append(cause)
    return chain


def describe_exception(exc: BaseException) -> str:
    """A short, credential-free reason for a transport failure (httpx wraps the operating system's reason)."""
    if is_descriptor_exhaustion(exc):
        return "out of open files in the balancer"
    chain = _chain(exc)
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {getattr(cause, 'reason', None) or cause}"
        if isinstance(cause, socket.gaierror):
            return f"DNS error: {cause.strerror or cause}"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed: {text}"
    if isinstance(exc, httpx.ConnectError):
        return f"connect error: {text}"
    return f"{type(exc).__name__}: {text}"


def _use_network_backend(client: httpx.AsyncClient) -> None:
    """httpx has no parameter for the network backend: set it on the connection pools of the client's transports
    (the proxy's, when there is one), which hand it to every connection they open. Left as it is if httpx's
    insides ever differ."""
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is not None and isinstance(getattr(pool, "_network_backend", None), httpcore.AsyncNetworkBackend):
            pool._network_backend = AsyncioBackend()


# mitmproxy's options for its own upstream TLS; the provider connections follow them.
TLS_OPTIONS = ("ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir")


def provider_tls(insecure: bool | None, ca_file: str | None, ca_dir: str | None) -> bool | ssl.SSLContext:
    """Certificates are verified (against certifi's roots, like mitmproxy), plus a custom CA file or folder
    when mitmproxy is given one; `ssl_insecure` turns verification off."""
    if insecure:
        return False
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file or ca_dir:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    return context


# Idle provider connections kept (all providers together), and for how long, whichever client holds them.
KEEP_IDLE = 200
KEEPALIVE_EXPIRY = 60.0


class ClientPool:
    """One shared async HTTP client per outgoing proxy setting; connections are pooled across all flows."""

    def __init__(self, verify: bool | str | ssl.SSLContext = True):
        self._verify = verify
        self._tls_options: tuple[Any, ...] | None = None  # mitmproxy's TLS options the clients follow
        self._retired: list[httpx.AsyncClient] = []
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._plain: dict[str | None, Http1Transport] = {}

    def plain_transport(self, proxy: str | None) -> Http1Transport | None:
        """The HTTP/1.1 transport the client for `proxy` sends `http://` requests with (None through a proxy)."""
        if proxy is not None:
            return None
        self.get(proxy)
        return self._plain.get(proxy)

    def get(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=KEEP_IDLE,
                                  keepalive_expiry=KEEPALIVE_EXPIRY)
            # Plain-HTTP providers get the balancer's own HTTP/1.1 client, with the same limits; through a proxy,
            # httpcore's.
            plain = Http1Transport(max_idle=KEEP_IDLE, keepalive_expiry=KEEPALIVE_EXPIRY)
            client = httpx.AsyncClient(
                http2=True,
                verify=self._verify,
                proxy=proxy,
                # Every provider request carries its own timeouts (request_timeout, stream_idle_timeout).
                timeout=httpx.Timeout(60.0),
                limits=limits,
                follow_redirects=False,
                trust_env=False,
                mounts=None if proxy else {"http://": plain},
            )
            _use_network_backend(client)
            self._clients[proxy] = client
            if not proxy:
                self._plain[proxy] = plain
        return client

    async def follow_tls_options(self, options: Any) -> None:
        """mitmproxy's upstream TLS options (`options`: mitmproxy's, with the TLS_OPTIONS) apply to the
        provider connections too; new settings take effect for new connections."""
        key = tuple(getattr(options, name, None) for name in TLS_OPTIONS)
        if key != self._tls_options:
            await self.reconfigure(provider_tls(*key))
            self._tls_options = key  # only once it took effect: a failed set-up (no descriptor free) is tried again

    async def reconfigure(self, verify: bool | str | ssl.SSLContext) -> None:
        """New TLS settings for new connections. Clients in use are retired, not closed: streams still running
        on them finish; they are closed with the pool."""
        if verify != self._verify:
            self._retired.extend(self._clients.values())
            self._clients, self._plain = {}, {}
            self._verify = verify

    async def aclose(self) -> None:
        clients = [*self._clients.values(), *self._retired]
        self._clients, self._retired, self._plain = {}, [], {}
        for client in clients:
            await client.aclose()
