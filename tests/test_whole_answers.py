"""A provider's answer that the balancer read whole (a JSON message, an error) is the flow's response from the
`request` hook on: mitmproxy sends it without a hop through the relay. What the client, the saved flows, /usage
and /metrics show is what a relayed answer shows; a stream still goes through the relay."""

from __future__ import annotations

import json

import anthropic
import httpx
from mitmproxy import io

import helpers
from addon.attempt_marker import ATTEMPT, is_attempt_flow
from balancer_proc import BalancerProcess
from fakes import FakeProvider, Status
from helpers import anthropic_provider

ADMIN_KEY = "sk-admin-whole-7171717171"
CLIENT_KEY = "sk-client-whole-8181818181"
ADMIN = {"x-api-key": ADMIN_KEY}


def test_a_json_answer_is_served_without_the_relay_and_counted_like_a_relayed_one(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeProvider(Status(529)) as bad, FakeProvider() as good:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers(
            [anthropic_provider("a", bad.url), anthropic_provider("b", good.url, big_model="provider-big")],
            client_keys=[{"name": "alice", "key": CLIENT_KEY, "tokens_per_day": 1000}], admin_keys=[ADMIN_KEY],
            attempt_flows="all",
        )
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key=CLIENT_KEY, max_retries=0) as client:
            raw = client.messages.with_raw_response.create(
                model="claude-sonnet-4", max_tokens=8, messages=[{"role": "user", "content": "x"}])
            message = raw.parse()
            usage = httpx.get(balancer.url + "/usage", headers=ADMIN, timeout=10).json()
            tokens_in = helpers.metric(balancer, "balancer_tokens_total", ADMIN, provider="b", direction="in")
            tokens_out = helpers.metric(balancer, "balancer_tokens_total", ADMIN, provider="b", direction="out")
            requests = helpers.metric(balancer, "balancer_requests_total", ADMIN, kind="messages", provider="b",
                                      status="200")
            with client.messages.stream(model="claude-sonnet-4", max_tokens=8,
                                        messages=[{"role": "user", "content": "y"}]) as stream:
                assert stream.get_final_message().content[0].text == "Hello"

    # What the client got: the provider's message, the model it asked for, which provider served it.
    assert raw.headers["x-balancer-provider"] == "b"
    assert int(raw.headers["content-length"]) == len(raw.http_response.content)
    assert message.model == "claude-sonnet-4" and message.content[0].text == "Hello"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 5)
    # Its usage counted, in the metrics and the client's quota, by the time the client had the answer.
    assert (tokens_in, tokens_out, requests) == (12, 5, 1)
    (alice,) = [c for c in usage["clients"] if c["name"] == "alice"]
    assert {q["quota"]: q["used"] for q in alice["quotas"]}["tokens_per_day"] == 12 + 5

    with flows_file.open("rb") as f:
        saved = list(io.FlowReader(f).stream())
    first, second = [flow for flow in saved
                     if not is_attempt_flow(flow) and flow.metadata.get("balancer", {}).get("kind") == "messages"]
    # Never connected anywhere: no hop to the relay (the stream, relayed, has one to 127.0.0.1).
    assert first.server_conn.timestamp_start is None and first.server_conn.peername is None
    assert second.server_conn.peername is not None and second.server_conn.peername[0] == "127.0.0.1"
    # The saved flow shows the client's request and the answer it got, which attempt served it, and no key.
    assert first.request.url == "https://api.anthropic.com/v1/messages"
    assert json.loads(first.request.content)["model"] == "claude-sonnet-4"
    shown_keys = {first.request.headers.get(name) for name in ("x-api-key", "authorization")}
    assert "[redacted]" in shown_keys and shown_keys <= {"[redacted]", None}
    assert first.response.headers["x-balancer-provider"] == "b"
    assert json.loads(first.response.content)["model"] == "claude-sonnet-4"
    assert first.comment == "served by b (attempt 2 of 2) after a: HTTP 529 overloaded_error: fake 529"
    summary = first.metadata["balancer"]
    assert (summary["provider"], summary["status"], summary["usage"]) == (
        "b", 200, {"input_tokens": 12, "output_tokens": 5})
    by_id = {flow.id: flow for flow in saved}
    served = by_id[summary["attempts"][1]["flow"]]
    assert served.metadata[ATTEMPT]["served"] is True
    assert json.loads(served.request.content)["model"] == "provider-big"
    assert json.loads(served.response.content)["model"] == "provider-big"
    raw_file = flows_file.read_bytes()
    for secret in (b"key-of-a", b"key-of-b", CLIENT_KEY.encode(), ADMIN_KEY.encode()):
        assert secret not in raw_file
    assert any("req " in line and "-> b/provider-big 200" in line for line in balancer.log_lines)
