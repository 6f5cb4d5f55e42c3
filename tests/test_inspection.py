"""What a user inspecting flows (mitmweb, mitmdump -w) sees: the client's request and answer, which attempt served
it and why, and each provider attempt's own flow with the request as that provider got it."""

from __future__ import annotations

import json

import anthropic
from mitmproxy import io

from addon.attempt_marker import ATTEMPT, is_attempt_flow
from balancer_proc import BalancerProcess
from fakes import FakeProvider, Status
from helpers import anthropic_provider, openai_provider


def test_saved_flows_show_the_client_request_the_attempts_and_no_credential(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeProvider(Status(529)) as bad, FakeProvider() as good:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([anthropic_provider("a", bad.url),
                                  anthropic_provider("b", good.url, big_model="provider-big")])
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key="client-key", max_retries=0) as client:
            client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=[{"role": "user", "content": "x"}])
            with client.messages.stream(model="claude-sonnet-4", max_tokens=8,
                                        messages=[{"role": "user", "content": "y"}]) as stream:
                stream.get_final_message()

    with flows_file.open("rb") as f:
        saved = list(io.FlowReader(f).stream())
    flows = [flow for flow in saved if not is_attempt_flow(flow)]
    assert len(flows) == 2
    first, second = flows

    # The client's flow shows what the client sent and got (not the hop to the relay, not a provider's request).
    assert first.request.url == "https://api.anthropic.com/v1/messages"
    shown_keys = {first.request.headers.get(name) for name in ("x-api-key", "authorization")}
    assert "[redacted]" in shown_keys and shown_keys <= {"[redacted]", None}
    assert json.loads(first.request.content)["model"] == "claude-sonnet-4"
    assert first.comment == "served by b (attempt 2 of 2) after a: HTTP 529 overloaded_error: fake 529"
    attempts = first.metadata["balancer"]["attempts"]
    assert [(a["provider"], a["failed"]) for a in attempts] == [("a", True), ("b", False)]
    assert first.response.headers["x-balancer-provider"] == "b"
    assert json.loads(first.response.content)["model"] == "claude-sonnet-4"

    # What b received is the flow of the attempt that served the client.
    by_id = {flow.id: flow for flow in saved}
    served = by_id[attempts[1]["flow"]]
    assert served.metadata[ATTEMPT]["client_flow"] == first.id
    assert served.request.url == f"{good.url}/v1/messages"
    assert served.request.headers["x-api-key"] == "[redacted]"
    assert json.loads(served.request.content)["model"] == "provider-big"
    assert json.loads(served.response.content)["model"] == "provider-big"  # before the balancer echoed it back

    # The second request went straight to b while a cools down, and was streamed.
    assert second.comment == "served by b"
    assert second.metadata["balancer"]["stream"] is True
    assert second.request.path == "/v1/messages"
    assert by_id[second.metadata["balancer"]["attempts"][0]["flow"]].request.url == f"{good.url}/v1/messages"

    raw = flows_file.read_bytes()
    for secret in (b"key-of-a", b"key-of-b"):
        assert secret not in raw
    assert "/relay/" not in "\n".join(balancer.log_lines)


def test_an_openai_attempt_flow_shows_the_translated_request_as_sent_and_the_raw_answer(tmp_path):
    from fakes import openai_json

    flows_file = tmp_path / "flows.mitm"
    completion = {"id": "c", "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "hi"}}]}
    with FakeProvider(openai_json(completion)) as fake:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([openai_provider("o", fake.url)])
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key="client-key", max_retries=0) as client:
            client.messages.create(model="claude-sonnet-4", max_tokens=8, system="Be brief",
                                   messages=[{"role": "user", "content": "x"}])
    with flows_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    (flow,) = [fl for fl in flows if fl.request.path.endswith("/chat/completions")]
    assert is_attempt_flow(flow)
    assert flow.request.url == f"{fake.url}/v1/chat/completions"
    assert flow.request.headers["authorization"] == "[redacted]"
    sent = json.loads(flow.request.content)
    assert sent["model"] == "gpt-big"
    assert sent["messages"] == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "x"}]
    assert json.loads(flow.response.content) == completion  # as the provider sent it, before translation
    (client_flow,) = [fl for fl in flows if not is_attempt_flow(fl)]
    assert json.loads(client_flow.response.content)["content"] == [{"type": "text", "text": "hi"}]
