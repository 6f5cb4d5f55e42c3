"""The provider adapters behind one contract (exchange.ProviderAdapter): whatever the provider's type, the gateway
prepares a call, sends its request, opens its answer and learns the model chosen the same way."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from addon.anthropic_adapter import AnthropicAdapter
from addon.config import ProviderConfig
from addon.exchange import Exchange, ProviderAdapter
from addon.openai_adapter import OpenAIAdapter
from helpers import anthropic_provider

REQUESTED = "claude-sonnet-4"
BODY = {"model": REQUESTED, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

ADAPTERS: dict[str, tuple[ProviderAdapter, ProviderConfig]] = {
    "anthropic": (
        AnthropicAdapter(), ProviderConfig(**anthropic_provider("a", "http://127.0.0.1:9", big_model="a-big"))
    ),
    "openai": (OpenAIAdapter(), ProviderConfig(name="o", type="openai", base_url="http://127.0.0.1:9/v1",
                                               auth_type="api_key", auth_value="key-of-o", big_model="o-big")),
}

# What each type of provider answers to BODY.
ANSWERS = {
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "a-big",
                  "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
                  "usage": {"input_tokens": 3, "output_tokens": 1}},
    "openai": {"id": "chatcmpl-1", "object": "chat.completion", "model": "o-big",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
}


def exchange() -> Exchange:
    return Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[("x-api-key", "client")],
                    body=json.dumps(BODY).encode(), parsed=BODY, requested_model=REQUESTED, stream=False,
                    idle_timeout=10, on_committed_failure=lambda *a: None)


@pytest.mark.parametrize("provider_type", sorted(ADAPTERS))
def test_every_adapter_prepares_a_call_that_says_which_model_it_asks_for(provider_type):
    adapter, provider = ADAPTERS[provider_type]
    call = adapter.prepare(provider, exchange())
    assert call.choice is not None and call.choice.model == provider.big_model
    assert json.loads(call.request.content)["model"] == provider.big_model
    assert str(call.request.url).startswith(provider.base_url)
    assert "client" not in str(call.request.headers.raw)  # the provider's credential, not the client's


@pytest.mark.anyio
@pytest.mark.parametrize("provider_type", sorted(ADAPTERS))
async def test_every_call_opens_its_providers_answer_as_the_anthropic_message_the_client_asked_for(provider_type):
    adapter, provider = ADAPTERS[provider_type]
    call = adapter.prepare(provider, exchange())
    response = httpx.Response(200, headers={"content-type": "application/json"},
                              content=json.dumps(ANSWERS[provider_type]).encode(), request=call.request)
    answer = await call.open_answer(response, time.monotonic() + 10)
    body = b"".join([chunk async for chunk in answer.body])
    message = json.loads(body)
    assert (answer.status, answer.is_sse) == (200, False)
    assert message["type"] == "message" and message["model"] == REQUESTED
    assert message["content"] == [{"type": "text", "text": "hello"}]


def test_the_body_is_searched_for_translated_thinking_once_per_request():
    """Failover from one Anthropic-type provider to another (or a retry) builds the request again: the search of
    the whole body for the balancer's signature is not done again."""
    signed = {"type": "thinking", "thinking": "t", "signature": "openai-translated.abc"}
    body = {**BODY, "messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": [signed, {"type": "text", "text": "a"}]},
                                 {"role": "user", "content": "more"}]}
    ex = Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[("x-api-key", "client")],
                  body=json.dumps(body).encode(), parsed=body, requested_model=REQUESTED, stream=False,
                  idle_timeout=10, on_committed_failure=lambda *a: None)
    adapter, provider = ADAPTERS["anthropic"]
    first = json.loads(adapter.prepare(provider, ex).request.content)
    assert first["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    ex.body = b"{}"  # what the first search found is what a second build goes by
    again = json.loads(adapter.prepare(provider.model_copy(update={"name": "other"}), ex).request.content)
    assert again["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    plain = Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[], body=b'{"a": 1}',
                     parsed=BODY, requested_model=REQUESTED, stream=False, idle_timeout=10,
                     on_committed_failure=lambda *a: None)
    assert plain.may_hold_translated_thinking() is False
