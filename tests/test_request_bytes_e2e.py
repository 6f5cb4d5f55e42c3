"""What a provider receives, through the running balancer, for bodies orjson alone would read or write
differently (a lone surrogate, integers beyond 64 bits, NaN): an Anthropic-type provider gets the client's bytes
with only the model's value changed; an OpenAI-type one gets every value as the client wrote it."""

from __future__ import annotations

import json

import httpx
import pytest

from fakes import FakeProvider, openai_json
from helpers import anthropic_provider, openai_provider

BIG = "123456789012345678901234567890"
HEADERS = {"content-type": "application/json", "x-api-key": "client-key"}
MESSAGES = (b'"messages": [{"role": "user", "content": "tell me"}, {"role": "assistant", "content": [{"type": '
            b'"tool_use", "id": "t1", "name": "count", "input": {"n": ' + BIG.encode() + b', "x": NaN}}]}, '
            b'{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "cut \\ud83d"}]}]')
BODIES = {
    # Claude Code's shape (the model first) and the SDK's (the model after the conversation).
    "model first": b'{"model": "claude-sonnet-4", "max_tokens": ' + BIG.encode() + b', "temperature": NaN, '
                   + MESSAGES + b'}',
    "model last": b'{"max_tokens": ' + BIG.encode() + b',\n "temperature": NaN, ' + MESSAGES
                  + b',\n "model" : "claude-sonnet-4"}',
}


@pytest.mark.parametrize("name", list(BODIES))
def test_an_anthropic_provider_gets_the_clients_bytes_but_the_models_value(balancer, unique, name):
    body = BODIES[name]
    with FakeProvider() as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url, big_model="provider-big")])
        response = httpx.post(balancer.url + "/v1/messages", content=body, headers=HEADERS, timeout=30)
        assert response.status_code == 200, response.text
    assert fake.requests[0].body == body.replace(b'"claude-sonnet-4"', b'"provider-big"')


def test_an_openai_provider_gets_the_values_as_the_client_wrote_them(balancer, unique):
    completion = {"id": "c", "object": "chat.completion", "model": "gpt-big", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
    with FakeProvider(openai_json(completion)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        response = httpx.post(balancer.url + "/v1/messages", content=BODIES["model first"], headers=HEADERS,
                              timeout=30)
        assert response.status_code == 200, response.text
    sent = fake.requests[0].body
    assert b'"temperature":NaN' in sent  # not null
    assert b'"max_tokens":' + BIG.encode() in sent  # not 1.2345678901234568e+29
    sent_json = json.loads(sent)
    call = sent_json["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert BIG in call and "NaN" in call
    assert sent_json["messages"][2]["content"] == "cut \ud83d"
