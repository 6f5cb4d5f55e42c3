"""The parts behind the attempts' flows, each on its own: the tee at the provider boundary (against a real local
provider), the flow made from it, the default mode per tool, the run through mitmproxy's hooks, and the balancer's
hooks leaving such a flow alone."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from mitmproxy import http
from mitmproxy.addons import save, view
from mitmproxy.test import taddons, tflow

from addon.attempt_flows import (
    ALL,
    FAILED,
    NONE,
    AttemptLink,
    attempt_flow,
    mode_in_force,
    show,
    shown_body,
)
from addon.attempt_marker import ATTEMPT, is_attempt_flow
from addon.flow_hygiene import FlowHygiene
from addon.flow_record import AttemptSummary
from addon.gateway import Gateway
from addon.head import HeadRequests
from addon.provider_wire import ProviderWire
from addon.providers import Providers
from addon.redact import Redactor
from fakes import FakeProvider, Raw
from helpers import free_port

SECRET = "sk-provider-secret-0123456789"
redact = Redactor([SECRET])


# -- the tee ---------------------------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_the_tee_keeps_the_body_as_it_came_up_to_the_bound_and_passes_every_byte_on():
    body = b"".join(b"data: {\"n\": %d}\n\n" % i for i in range(200))
    with FakeProvider(Raw(body, piece=13)) as fake:
        async with httpx.AsyncClient() as client:
            request = client.build_request("POST", fake.url + "/v1/chat/completions", content=b"{}",
                                           headers={"authorization": f"Bearer {SECRET}"})
            wire = ProviderWire("p", limit=1000)
            wire.sending(request)
            response = await client.send(request, stream=True)
            wire.answered(response)
            read = b"".join([chunk async for chunk in response.aiter_bytes()])
            await response.aclose()
    assert read == body  # the reader got everything, unchanged
    assert wire.status == 200 and (b"content-type", b"text/event-stream") in wire.headers
    assert bytes(wire.body) == body[:1000] and wire.seen == len(body) and wire.cut
    assert wire.server == ("127.0.0.1", fake.port) and wire.local is not None
    assert wire.sent_at is not None and wire.answered_at is not None and wire.ended_at is not None


@pytest.mark.anyio
async def test_the_tee_keeps_only_what_the_reader_read():
    body = b"x" * 50_000
    with FakeProvider(Raw(body, content_type="application/json", piece=1000)) as fake:
        async with httpx.AsyncClient() as client:
            request = client.build_request("GET", fake.url + "/v1/x")
            wire = ProviderWire("p", limit=1_000_000)
            response = await client.send(request, stream=True)
            wire.answered(response)
            async for chunk in response.aiter_raw():
                if len(chunk) and wire.seen >= 5000:
                    break
            await response.aclose()
    assert 5000 <= wire.seen < len(body) and len(wire.body) == wire.seen and not wire.cut


# -- the flow made from it ---------------------------------------------------------------------------------------------

def sent_request(url: str = "http://127.0.0.1:9/v1/messages") -> httpx.Request:
    return httpx.Request("POST", url, content=b'{"model": "m"}',
                         headers={"x-api-key": SECRET, "x-extra": f"has {SECRET} inside", "anthropic-version": "1"})


def summary(outcome: str, failed: bool) -> AttemptSummary:
    return AttemptSummary("p", outcome, 12.5, failed, "transport" if failed else None)


def test_an_attempt_without_an_answer_is_a_flow_with_an_error_and_no_credential():
    wire = ProviderWire("p", limit=100)
    wire.sending(sent_request())
    wire.failed("connection refused")
    link = AttemptLink("client-flow-id", "client-f", 1, 2, served=False)
    flow = attempt_flow(wire, summary("connection refused", True), link, redact)
    assert not flow.live and flow.response is None and flow.error.msg == "connection refused"
    assert flow.request.url == "http://127.0.0.1:9/v1/messages"
    assert flow.request.headers["x-api-key"] == "[redacted]"
    assert flow.request.headers["x-extra"] == "has [redacted] inside"
    assert flow.request.headers["anthropic-version"] == "1"
    assert flow.request.content == b'{"model": "m"}'
    assert flow.comment == "attempt 1 of 2 for req client-f: connection refused"
    assert is_attempt_flow(flow) and flow.metadata[ATTEMPT]["client_flow"] == "client-flow-id"
    assert SECRET not in repr(flow.get_state())


def test_an_answer_keeps_its_status_headers_and_raw_body_and_says_when_it_was_cut():
    wire = ProviderWire("p", limit=10)
    wire.sending(sent_request("https://api.example.test/v1/messages"))
    wire.status, wire.reason, wire.answered_at = 200, "OK", wire.sent_at
    wire.headers = [(b"content-type", b"text/event-stream"), (b"x-echo", SECRET.encode())]
    wire.body, wire.seen = bytearray(b"data: 0123"), 500
    link = AttemptLink("client-flow-id", "client-f", 2, 2, served=True, ended="client gone")
    flow = attempt_flow(wire, summary("200", False), link, redact)
    assert flow.response.status_code == 200 and flow.response.raw_content == b"data: 0123"
    assert flow.response.headers["x-echo"] == "[redacted]"
    assert flow.server_conn.address == ("api.example.test", 443) and flow.server_conn.tls
    assert flow.comment == ("attempt 2 of 2 for req client-f: 200 (served the client, then the request ended: "
                            "client gone); answer body cut at 10 of 500 bytes read")
    assert flow.metadata[ATTEMPT]["answer_bytes"] == {"kept": 10, "read": 500, "cut": True}


def test_a_compressed_body_is_kept_as_it_came_unless_it_holds_a_credential():
    clean = gzip.compress(b'{"error": "overloaded"}')
    assert shown_body(clean, "gzip", redact, 10_000) == (clean, False)
    echoed = gzip.compress(json.dumps({"error": f"bad key {SECRET}"}).encode())
    body, decoded = shown_body(echoed, "gzip", redact, 10_000)
    assert decoded and body == json.dumps({"error": "bad key [redacted]"}).encode()
    cut = echoed[:-8]  # not decodable: kept as it came, with any readable credential replaced
    assert shown_body(cut, "gzip", redact, 10_000) == (cut, False)
    assert shown_body(f"plain {SECRET}".encode(), "", redact, 10_000) == (b"plain [redacted]", False)


def test_a_redacted_compressed_answer_is_encoded_again_as_its_headers_say():
    wire = ProviderWire("p", limit=10_000)
    wire.sending(sent_request())
    wire.status, wire.headers = 529, [(b"content-encoding", b"gzip"), (b"content-type", b"application/json")]
    plain = json.dumps({"error": f"overloaded, key {SECRET}"}).encode()
    wire.body = bytearray(gzip.compress(plain))
    wire.seen = len(wire.body)
    flow = attempt_flow(wire, summary("HTTP 529", True), AttemptLink("c", "c", 1, 1, False), redact)
    assert flow.response.headers["content-encoding"] == "gzip"
    assert flow.response.content == plain.replace(SECRET.encode(), b"[redacted]")
    assert SECRET.encode() not in flow.response.raw_content


# -- which attempts get a flow, per tool ------------------------------------------------------------------------------

def test_the_default_is_all_where_flows_are_kept_or_saved_and_failed_under_a_bare_mitmdump(tmp_path):
    with taddons.context() as tctx:
        assert mode_in_force(None) == FAILED  # mitmdump: no flow list, no -w
        assert mode_in_force(NONE) == NONE and mode_in_force(ALL) == ALL  # the setting wins
        saver = save.Save()
        tctx.master.addons.add(saver)
        tctx.configure(saver, save_stream_file=str(tmp_path / "flows.mitm"))
        assert mode_in_force(None) == ALL  # -w
        tctx.configure(saver, save_stream_file=None)
        assert mode_in_force(None) == FAILED
        tctx.master.addons.add(view.View())  # mitmweb and mitmproxy keep their flows in it
        assert mode_in_force(None) == ALL
        assert mode_in_force(FAILED) == FAILED


# -- through mitmproxy's hooks -----------------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.events.append(("requestheaders", flow.request.host))

    def request(self, flow: http.HTTPFlow) -> None:
        self.events.append(("request", flow.request.host))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.events.append(("responseheaders", flow.request.host))

    def response(self, flow: http.HTTPFlow) -> None:
        self.events.append(("response", flow.request.host))

    def error(self, flow: http.HTTPFlow) -> None:
        self.events.append(("error", flow.request.host))


def attempt(failed: bool) -> http.HTTPFlow:
    wire = ProviderWire("p", limit=100)
    wire.sending(sent_request("http://provider.test:8000/v1/messages"))
    if failed:
        wire.failed("connection refused")
    else:
        wire.status, wire.body, wire.seen = 200, bytearray(b"{}"), 2
    return attempt_flow(wire, summary("x", failed), AttemptLink("c", "c", 1, 1, not failed), redact)


@pytest.mark.anyio
async def test_an_attempt_goes_through_every_hook_once_with_the_providers_address_kept():
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.options.mode = ["reverse:https://api.anthropic.com"]  # load_flow would rewrite the host to this
        view_ = view.View()
        tctx.master.addons.add(view_)
        answered, failed = attempt(False), attempt(True)
        await show(answered)
        await show(failed)
        assert [e for e, _ in recorder.events] == [
            "requestheaders", "request", "responseheaders", "response",
            "requestheaders", "request", "error",
        ]
        assert {host for _, host in recorder.events} == {"provider.test"}
        assert [f.id for f in view_] == [answered.id, failed.id]  # mitmweb's and mitmproxy's flow list


@pytest.mark.anyio
async def test_the_balancers_hooks_leave_an_attempt_flow_alone(tmp_path):
    providers = Providers()
    gateway, hygiene, head = Gateway(providers), FlowHygiene(providers), HeadRequests()
    path = tmp_path / "providers.yaml"
    path.write_text(f"providers:\n  - name: p\n    base_url: http://127.0.0.1:{free_port()}\n"
                    f"    auth_value: {SECRET}\n")
    with taddons.context(providers, gateway, hygiene, head) as tctx:
        tctx.configure(providers, providers=str(path))
        finished: list[Any] = []
        gateway.on_finished.append(finished.append)
        for flow in (attempt(False), attempt(True)):
            flow.request.method = "HEAD"  # HeadRequests would drop a HEAD answer's body
            before = flow.get_state()
            hygiene.requestheaders(flow)
            await gateway.request(flow)
            gateway.responseheaders(flow)
            if flow.response:
                hygiene.response(flow)
                await gateway.response(flow)
                head.response(flow)
            else:
                hygiene.error(flow)
                await gateway.error(flow)
            assert flow.get_state() == before
        assert finished == []  # nothing logged or counted for them


def test_a_client_flow_is_not_an_attempt_flow():
    assert not is_attempt_flow(tflow.tflow())


def test_a_replayed_attempt_goes_out_with_the_key_typed_in_and_is_kept_without_it(tmp_path):
    providers = Providers()
    hygiene = FlowHygiene(providers)
    flow = attempt(False)
    flow.live = True  # mitmweb's Replay: a copy of the flow, sent again
    flow.request.headers["x-api-key"] = "typed-in-to-replay-1234"
    hygiene.requestheaders(flow)
    assert flow.request.headers["x-api-key"] == "typed-in-to-replay-1234"  # what mitmproxy sends
    hygiene.response(flow)
    assert flow.request.headers["x-api-key"] == "[redacted]"  # what mitmweb shows and -w saves
