"""Unit tests for the request a provider receives and how failures are described.

Covers addon/upstream.py (URL, headers, body, failover statuses, transport errors), addon/errors.py
(Anthropic-shaped error bodies) and the pure helpers of addon/failover.py (error_summary, Exhausted).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from addon.config import ProviderConfig
from addon.errors import ERROR_TYPE_BY_STATUS, error_body, error_type_for, sse_error_event
from addon.failover import ERROR_BODY_LIMIT, AttemptRecord, Exhausted, error_summary
from addon.model_field import with_model
from addon.upstream import describe_exception, should_fail_over, upstream_headers, upstream_url
from helpers import free_port


def provider(
    auth_type: str = "api_key", auth_value: str = "provider-key", base_url: str = "https://p.example.com"
) -> ProviderConfig:
    return ProviderConfig(name="p", base_url=base_url, auth_type=auth_type, auth_value=auth_value)


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


# --- upstream_url ------------------------------------------------------------------------------------


def test_upstream_url_keeps_base_path_prefix_and_query() -> None:
    p = provider(base_url="https://host.example.com/api")
    assert upstream_url(p, "/v1/messages?beta=true") == "https://host.example.com/api/v1/messages?beta=true"


def test_upstream_url_with_trailing_slash_in_config() -> None:
    p = provider(base_url="https://host.example.com/api/")
    assert upstream_url(p, "/v1/messages") == "https://host.example.com/api/v1/messages"


def test_upstream_url_of_a_plain_host_appends_the_path() -> None:
    p = provider(base_url="http://127.0.0.1:8123")
    assert upstream_url(p, "/v1/messages/count_tokens") == "http://127.0.0.1:8123/v1/messages/count_tokens"


# --- upstream_headers --------------------------------------------------------------------------------

CLIENT_HEADERS = [
    ("Host", "api.anthropic.com"),
    ("Content-Length", "123"),
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authorization", "Basic cHJveHk6cHc="),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Accept-Encoding", "gzip, br"),
    ("X-Api-Key", "client-key"),
    ("Authorization", "Bearer client-token"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
    ("x-stainless-lang", "js"),
    ("X-Stainless-Retry-Count", "0"),
    ("content-type", "application/json"),
    ("user-agent", "claude-cli/1.0.0"),
]
DROPPED = {"host", "content-length", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
           "transfer-encoding", "upgrade"}
KEPT = [
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
    ("x-stainless-lang", "js"),
    ("X-Stainless-Retry-Count", "0"),
    ("content-type", "application/json"),
    ("user-agent", "claude-cli/1.0.0"),
]


def test_api_key_provider_replaces_client_credentials() -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider("api_key", "provider-key"), stream=False)
    assert header_values(headers, "x-api-key") == ["provider-key"]
    assert header_values(headers, "authorization") == []


def test_auth_token_provider_replaces_client_credentials() -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider("auth_token", "provider-token"), stream=False)
    assert header_values(headers, "authorization") == ["Bearer provider-token"]
    assert header_values(headers, "x-api-key") == []


def test_passthrough_keeps_client_credentials() -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider("passthrough", ""), stream=False)
    assert header_values(headers, "x-api-key") == ["client-key"]
    assert header_values(headers, "authorization") == ["Bearer client-token"]


@pytest.mark.parametrize("auth_type", ["api_key", "auth_token", "passthrough"])
def test_hop_by_hop_host_and_content_length_removed(auth_type: str) -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider(auth_type, "v"), stream=True)
    assert {name.lower() for name, _ in headers}.isdisjoint(DROPPED)


@pytest.mark.parametrize("auth_type", ["api_key", "auth_token", "passthrough"])
def test_anthropic_and_stainless_headers_kept_in_order(auth_type: str) -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider(auth_type, "v"), stream=True)
    kept = [(name, value) for name, value in headers if (name, value) in KEPT]
    assert kept == KEPT  # same spelling, same values, same order


@pytest.mark.parametrize(("stream", "encoding"), [(True, "identity"), (False, "identity")])  # never a compressed answer
def test_accept_encoding_asks_for_an_uncompressed_answer(stream: bool, encoding: str) -> None:
    headers = upstream_headers(CLIENT_HEADERS, provider(), stream=stream)
    assert header_values(headers, "accept-encoding") == [encoding]


def test_credential_removal_is_case_insensitive() -> None:
    client = [("X-API-KEY", "a"), ("x-api-key", "b"), ("AUTHORIZATION", "Bearer c")]
    headers = upstream_headers(client, provider("api_key", "mine"), stream=False)
    assert header_values(headers, "x-api-key") == ["mine"]
    assert header_values(headers, "authorization") == []


def test_no_client_credential_still_gets_provider_credential() -> None:
    headers = upstream_headers([("anthropic-version", "2023-06-01")], provider("api_key", "mine"), stream=True)
    assert headers == [("anthropic-version", "2023-06-01"), ("x-api-key", "mine"), ("accept-encoding", "identity")]


# --- with_model --------------------------------------------------------------------------------------


def test_with_model_returns_identical_bytes_when_model_is_right() -> None:
    body = b'{"model": "claude-sonnet-4-5",  "max_tokens": 10}'
    result = with_model(body, json.loads(body), "claude-sonnet-4-5")
    assert result is body


def test_with_model_changes_only_the_model() -> None:
    parsed = {
        "max_tokens": 1024,
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Grüße, ünïcödé ✓ 🌍 \u2028 end"}],
        "system": [{"type": "text", "text": "é", "cache_control": {"type": "ephemeral"}}],
        "temperature": 0.5,
        "stream": True,
        "metadata": {"user_id": None},
    }
    body = json.dumps(parsed, indent=2).encode()
    result = with_model(body, parsed, "provider/sonnet")

    assert json.loads(result) == {**parsed, "model": "provider/sonnet"}
    # Only the value's bytes change: the indentation and the client's escapes (\u00fc...) stay as they were.
    assert result == body.replace(b'"claude-sonnet-4-5"', b'"provider/sonnet"')
    assert parsed["model"] == "claude-sonnet-4-5"  # the caller's dict is not modified


def test_with_model_adds_a_missing_model() -> None:
    parsed = {"max_tokens": 5}
    result = with_model(b'{"max_tokens": 5}', parsed, "m")
    assert json.loads(result) == {"max_tokens": 5, "model": "m"}


# --- should_fail_over --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 408, 429, 500, 502, 503, 504, 529])
def test_redirects_timeouts_rate_limits_and_5xx_fail_over(status: int) -> None:
    assert should_fail_over(status) is True


@pytest.mark.parametrize("status", [200, 201, 204, 400, 401, 403, 404, 413, 422])
def test_statuses_that_are_answers(status: int) -> None:
    assert should_fail_over(status) is False


# --- describe_exception ------------------------------------------------------------------------------


async def refused_request_error() -> httpx.HTTPError:
    port = free_port()
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            await client.get(f"http://127.0.0.1:{port}/v1/messages")
        except httpx.HTTPError as exc:
            return exc
    raise AssertionError(f"something answered on 127.0.0.1:{port}")


def test_describe_real_connection_refused() -> None:
    exc = asyncio.run(refused_request_error())
    assert isinstance(exc, httpx.ConnectError)
    assert describe_exception(exc) == "connection refused"


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    """`outer` as if raised `from cause`."""
    outer.__cause__ = cause
    return outer


def test_describe_connection_reset_in_chain() -> None:
    exc = chained(httpx.ReadError("read failed"), ConnectionResetError(104, "Connection reset by peer"))
    assert describe_exception(exc) == "connection reset"


def test_describe_exception_names_a_dns_error() -> None:
    exc = chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name or service not known"))
    assert describe_exception(exc) == "DNS error: Name or service not known"


def test_describe_exception_tells_connect_timeouts_from_read_timeouts() -> None:
    assert describe_exception(httpx.ConnectTimeout("")) == "connect timeout"
    assert describe_exception(httpx.ReadTimeout("")) == "timeout"


def test_describe_remote_protocol_error() -> None:
    text = describe_exception(httpx.RemoteProtocolError("Server disconnected without sending a response."))
    assert text == "connection closed: Server disconnected without sending a response."


def test_describe_exception_names_any_other_exception_with_its_type() -> None:
    assert describe_exception(ValueError("odd")) == "ValueError: odd"
    assert describe_exception(RuntimeError()) == "RuntimeError: RuntimeError"


def test_describe_connection_refused_on_every_address() -> None:
    # The chain anyio.connect_tcp + httpcore + httpx build when two addresses both refuse the connection.
    refusals = ExceptionGroup(
        "multiple connection attempts failed",
        [ConnectionRefusedError(111, "Connection refused"), ConnectionRefusedError(111, "Connection refused")],
    )
    os_error = chained(OSError("All connection attempts failed"), refusals)
    exc = chained(httpx.ConnectError("All connection attempts failed"), os_error)
    assert describe_exception(exc) == "connection refused"


# --- errors.py ---------------------------------------------------------------------------------------


def test_error_body_is_anthropic_error_json_bytes() -> None:
    body = error_body("overloaded_error", "Überlastet: all providers failed")
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Überlastet: all providers failed"},
    }
    assert isinstance(body, bytes)


def test_sse_error_event_is_one_error_event_with_the_error_body() -> None:
    event = sse_error_event("api_error", "upstream stream ended early")
    assert event.startswith(b"event: error\ndata: ")
    assert event.endswith(b"\n\n")
    assert event.count(b"\n") == 3  # exactly two lines and the blank line
    data = event.removeprefix(b"event: error\ndata: ").removesuffix(b"\n\n")
    assert data == error_body("api_error", "upstream stream ended early")


def test_sse_error_event_message_with_newline_stays_one_data_line() -> None:
    event = sse_error_event("api_error", "line one\nline two")
    assert event.count(b"\n") == 3
    assert json.loads(event.split(b"\n")[1].removeprefix(b"data: "))["error"]["message"] == "line one\nline two"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "timeout_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        # not in the table: by class
        (409, "invalid_request_error"),
        (422, "invalid_request_error"),
        (501, "api_error"),
        (599, "api_error"),
    ],
)
def test_error_type_for_each_status_from_the_table_else_by_class(status: int, error_type: str) -> None:
    assert error_type_for(status) == error_type


def test_error_type_table_is_used_as_is() -> None:
    assert all(error_type_for(status) == kind for status, kind in ERROR_TYPE_BY_STATUS.items())


# --- failover.py pure helpers ------------------------------------------------------------------------


def summary_of(status: int, content: bytes) -> str:
    return asyncio.run(error_summary(httpx.Response(status, content=content), time.monotonic() + 5))


def test_error_summary_anthropic_error() -> None:
    body = error_body("overloaded_error", "Overloaded")
    assert summary_of(529, body) == "overloaded_error: Overloaded"


def test_error_summary_type_or_message_alone() -> None:
    assert summary_of(500, b'{"error": {"message": "boom"}}') == "boom"
    assert summary_of(500, b'{"error": {"type": "api_error"}}') == "api_error"


def test_error_summary_string_error() -> None:
    assert summary_of(502, b'{"error": "bad gateway"}') == "bad gateway"


@pytest.mark.parametrize(
    "content",
    [b"", b"<html>502 Bad Gateway</html>", b"[1, 2]", b'"just a string"', b'{"detail": "x"}', b'{"error": 5}',
     b"\xff\xfe not utf-8"],
)
def test_error_summary_says_nothing_for_unhelpful_bodies(content: bytes) -> None:
    assert summary_of(503, content) == ""


def test_error_summary_is_truncated() -> None:
    assert summary_of(500, error_body("api_error", "x" * 1000)) == ("api_error: " + "x" * 1000)[:160]


class CountingStream(httpx.AsyncByteStream):
    """An endless error body that remembers how much was read and whether it was closed."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += len(self.chunk)
            yield self.chunk

    async def aclose(self) -> None:
        self.closed = True


def test_error_summary_reads_a_bounded_amount_and_closes() -> None:
    stream = CountingStream(b"x" * 1000)
    result = asyncio.run(error_summary(httpx.Response(503, stream=stream), time.monotonic() + 5))
    assert result == ""
    assert ERROR_BODY_LIMIT <= stream.sent < ERROR_BODY_LIMIT + 1000
    assert stream.closed


def test_exhausted_summary_lists_attempts_and_skips() -> None:
    skipped_provider = provider()
    exhausted = Exhausted(
        attempts=[
            AttemptRecord("alpha", "HTTP 529 overloaded_error: Overloaded", 12.0, failed=True, kind="overloaded"),
            AttemptRecord("beta", "connection refused", 1.0, failed=True),
        ],
        skipped=[(skipped_provider, "cooling down for 30s after HTTP 500")],
    )
    assert exhausted.summary() == (
        "all providers failed: alpha: HTTP 529 overloaded_error: Overloaded; beta: connection refused; "
        "p: cooling down for 30s after HTTP 500"
    )


def test_exhausted_summary_with_nothing_to_try() -> None:
    assert Exhausted(attempts=[]).summary() == "no enabled provider can serve this request"
