"""What a user inspecting flows (mitmweb, mitmdump -w) sees: the request as the provider got it, and why."""

from __future__ import annotations

import json

import anthropic
from mitmproxy import io

from balancer_proc import BalancerProcess, anthropic_provider
from fakes import FakeProvider, Status


def test_saved_flows_show_the_provider_request_attempts_and_no_credential(tmp_path):
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
        flows = [flow for flow in io.FlowReader(f).stream() if flow.request.path.startswith("/v1/messages")]
    assert len(flows) == 2
    first, second = flows

    assert first.request.url == f"{good.url}/v1/messages"
    assert first.request.headers["x-api-key"] == "[redacted]"
    assert json.loads(first.request.content)["model"] == "provider-big"
    assert first.comment == "served by b after a: HTTP 529 overloaded_error: fake 529"
    attempts = first.metadata["balancer"]["attempts"]
    assert [(a["provider"], a["failed"]) for a in attempts] == [("a", True), ("b", False)]
    assert first.response.headers["x-balancer-provider"] == "b"
    assert json.loads(first.response.content)["model"] == "claude-sonnet-4"

    # The second request went straight to b while a cools down, and was streamed.
    assert second.comment == "served by b"
    assert second.metadata["balancer"]["stream"] is True
    assert second.request.url == f"{good.url}/v1/messages"

    raw = flows_file.read_bytes()
    for secret in (b"key-of-a", b"key-of-b"):
        assert secret not in raw
    assert "/relay/" not in "\n".join(balancer.log_lines)


def test_an_openai_flow_shows_the_translated_request_as_sent(tmp_path):
    from fakes import openai_json
    from test_openai_e2e import openai_provider

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
        (flow,) = [fl for fl in io.FlowReader(f).stream() if fl.request.path.endswith("/chat/completions")]
    assert flow.request.url == f"{fake.url}/v1/chat/completions"
    assert flow.request.headers["authorization"] == "[redacted]"
    sent = json.loads(flow.request.content)
    assert sent["model"] == "gpt-big"
    assert sent["messages"] == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "x"}]
    assert json.loads(flow.response.content)["content"] == [{"type": "text", "text": "hi"}]
