"""flow_hygiene.py's pure functions and its addon, on mitmproxy's own test flows (the process-level tests are in
test_credentials_in_flows.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addon.access import AccessControl
from addon.config import parse_config
from addon.flow_hygiene import FlowHygiene, client_headers, real_fields, shown_fields
from addon.providers import Providers
from addon.redact import Redactor
from addon.upstream import answer_headers

KEY, CLIENT_KEY = "sk-prov-key-12345678", "sk-client-key-87654321"
REDACT = Redactor([KEY, CLIENT_KEY])


def fields(**headers: str) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())


def test_credential_headers_are_shown_redacted_and_kept():
    original = fields(x_api_key="client-a", authorization="Bearer b", x_title="t", cookie="c=1")
    shown, kept = shown_fields(original)
    assert shown == fields(x_api_key="[redacted]", authorization="[redacted]", x_title="t", cookie="[redacted]")
    assert real_fields(shown, kept) == original


def test_values_holding_a_configured_secret_are_redacted_by_value():
    shown, _ = shown_fields(fields(x_echo=KEY, x_plain="nothing", x_part=f"id {KEY[:12]}"), REDACT)
    assert shown == fields(x_echo="[redacted]", x_plain="nothing", x_part="id [redacted]")


def test_real_fields_follow_headers_changed_after_hiding():
    shown, kept = shown_fields(fields(x_api_key="one", authorization="Bearer two"))
    changed = (*shown[1:], (b"x-added", b"[redacted]"), (b"X-Api-Key", b"[redacted]"))
    # The added header that happens to read [redacted] stays so; the renamed-case key still finds its value.
    expected = (*fields(authorization="Bearer two", x_added="[redacted]"), (b"X-Api-Key", b"one"))
    assert real_fields(changed, kept) == expected


@pytest.fixture
def guarded() -> Iterator[tuple[FlowHygiene, AccessControl]]:
    """Flow hygiene and the access check, loaded as in the balancer, with one provider key and one client key."""
    providers = Providers()
    hygiene, access = FlowHygiene(providers), AccessControl(providers)
    with taddons.context(providers, hygiene, access):
        providers.apply(parse_config(
            f"providers:\n  - {{name: p, base_url: 'https://h', auth_value: {KEY}}}\n"
            f"settings:\n  client_keys: [{CLIENT_KEY}]\n", "p.yaml", {}))
        yield hygiene, access


def test_the_flow_never_holds_the_key_but_the_access_check_and_gateway_get_it(guarded):
    hygiene, access = guarded
    flow = tflow.tflow()
    flow.request.path = "/v1/messages"
    flow.request.headers["x-api-key"] = CLIENT_KEY
    flow.request.headers["x-echo"] = KEY
    hygiene.requestheaders(flow)
    assert CLIENT_KEY not in repr(flow.get_state()) and KEY not in repr(flow.get_state())
    assert flow.request.headers["x-api-key"] == "[redacted]"
    assert client_headers(flow)["x-api-key"] == CLIENT_KEY and client_headers(flow)["x-echo"] == KEY
    access.request(flow)
    assert flow.response is None  # the real key was accepted

    flow.response = http.Response.make(200, b"{}", {"x-balancer-provider": "p"})
    flow.request.headers["x-extra"] = f"Bearer {KEY}"  # say, a provider's extra_headers as sent
    hygiene.response(flow)
    assert flow.request.headers["x-extra"] == "Bearer [redacted]"
    assert flow.request.headers["x-echo"] == "[redacted]"
    assert client_headers(flow)["x-api-key"] == "[redacted]"  # the kept values are gone with the flow


def test_a_wrong_key_is_hidden_too_and_refused(guarded):
    hygiene, access = guarded
    flow = tflow.tflow()
    flow.request.path = "/v1/messages"
    flow.request.headers["authorization"] = "Bearer wrong-key-000000"
    hygiene.requestheaders(flow)
    access.request(flow)
    assert flow.response is not None and flow.response.status_code == 401
    hygiene.response(flow)
    assert "wrong-key-000000" not in repr(flow.get_state())


def test_answer_headers_redact_values_that_hold_a_secret():
    response = httpx.Response(200, headers=[("x-echo", KEY), ("x-plain", "ok"), ("content-length", "2")],
                              content=json.dumps({}).encode())
    assert answer_headers(response, REDACT) == [("x-echo", "[redacted]"), ("x-plain", "ok")]
    assert answer_headers(response) == [("x-echo", KEY), ("x-plain", "ok")]
