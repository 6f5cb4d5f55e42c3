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
# One thing orjson alone would get wrong in each: in the last message (the text of a tool result), in the input of
# an earlier tool call, and at the top level.
TROUBLES = {
    "lone surrogate": (b'"cut \\ud83d"', b'"temperature": 0.5'),
    "integer beyond 64 bits": (b'"fine"', b'"temperature": 0.5'),
    "max_tokens beyond 64 bits": (b'"fine"', b'"max_tokens": ' + BIG.encode() + b', "temperature": 0.5'),
    "NaN": (b'"fine"', b'"temperature": NaN'),
}


def body(trouble: str, model_first: bool) -> bytes:
    """Claude Code's shape (the model first) or the SDK's (the model after the conversation)."""
    text, top = TROUBLES[trouble]
    number = {"integer beyond 64 bits": BIG.encode(), "NaN": b"NaN"}.get(trouble, b"1")
    messages = (b'"messages": [{"role": "user", "content": "count"}, {"role": "assistant", "content": [{"type": '
                b'"tool_use", "id": "t1", "name": "count", "input": {"n": ' + number + b'}}]}, {"role": "user", '
                b'"content": [{"type": "tool_result", "tool_use_id": "t1", "content": ' + text + b'}]}]')
    if b"max_tokens" not in top:
        top += b', "max_tokens": 64'
    if model_first:
        return b'{"model": "claude-sonnet-4", ' + top + b", " + messages + b"}"
    return b"{" + top + b",\n " + messages + b',\n "model" : "claude-sonnet-4"}'


CASES = [(trouble, first) for trouble in TROUBLES for first in (True, False)]


@pytest.mark.parametrize(("trouble", "model_first"), CASES)
def test_an_anthropic_provider_gets_the_clients_bytes_but_the_models_value(balancer, unique, trouble, model_first):
    sent = body(trouble, model_first)
    with FakeProvider() as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url, big_model="provider-big")])
        response = httpx.post(balancer.url + "/v1/messages", content=sent, headers=HEADERS, timeout=30)
        assert response.status_code == 200, response.text
    assert fake.requests[0].body == sent.replace(b'"claude-sonnet-4"', b'"provider-big"')


@pytest.mark.parametrize("trouble", list(TROUBLES))
def test_an_openai_provider_gets_the_values_as_the_client_wrote_them(balancer, unique, trouble):
    completion = {"id": "c", "object": "chat.completion", "model": "gpt-big", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
    with FakeProvider(openai_json(completion)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        response = httpx.post(balancer.url + "/v1/messages", content=body(trouble, True), headers=HEADERS,
                              timeout=30)
        assert response.status_code == 200, response.text
    sent = fake.requests[0].body
    sent_json = json.loads(sent)
    arguments = sent_json["messages"][1]["tool_calls"][0]["function"]["arguments"]
    if trouble == "lone surrogate":
        assert sent_json["messages"][2]["content"] == "cut \ud83d"
    elif trouble == "NaN":
        assert b'"temperature":NaN' in sent and "NaN" in arguments  # not null
    elif trouble == "integer beyond 64 bits":
        assert BIG in arguments  # not 1.2345678901234568e+29
    else:
        assert b'"max_tokens":' + BIG.encode() in sent  # not refused as not an integer
