"""OpenAI-type providers through the real mitmdump: golden streams checked by the anthropic SDK, what the
provider receives, errors, a multi-turn tool conversation, and failover across provider types."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from addon.openai_response import to_anthropic_message
from fakes import FakeProvider, Message, Raw, Status, openai_json
from helpers import anthropic_provider, openai_provider, served_by, wait_until
from openai_golden import GOLDEN, LONG_MCP_NAME

MESSAGES = [{"role": "user", "content": "Hi"}]
TOOLS = [
    {"name": LONG_MCP_NAME, "description": "search", "input_schema": {"type": "object", "properties": {}}},
    {"name": "Read", "description": "read a file", "input_schema": {"type": "object",
                                                                     "properties": {"path": {"type": "string"}}}},
]
COMPLETE = [g for g in GOLDEN if g.completion is not None]


def without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def expected_content(golden) -> list[dict]:
    return without_none(to_anthropic_message(golden.completion, "claude-sonnet-4", golden.names)["content"])


@pytest.mark.parametrize("golden", COMPLETE, ids=[g.name for g in COMPLETE])
def test_golden_streams_reach_the_sdk_whole(balancer, client, unique, golden):
    with FakeProvider(Raw(golden.stream, piece=7)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES, tools=TOOLS) as s:
            final = s.get_final_message()
            assert s.response.headers["x-balancer-provider"] == f"o-{unique}"
    assert without_none(final.model_dump()["content"]) == expected_content(golden)
    assert final.model == "claude-sonnet-4"
    if golden.stop_reason:
        assert final.stop_reason == golden.stop_reason
    if golden.usage:
        assert final.usage.input_tokens == golden.usage["input_tokens"]
        assert final.usage.output_tokens == golden.usage["output_tokens"]


@pytest.mark.parametrize("golden", COMPLETE, ids=[g.name for g in COMPLETE])
def test_non_streamed_answers_translate_the_same(balancer, client, unique, golden):
    with FakeProvider(openai_json(golden.completion)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        message = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES, tools=TOOLS)
    assert without_none(message.model_dump()["content"]) == expected_content(golden)


def test_mid_stream_error_after_content_reaches_the_client_as_an_error_event(balancer, client, unique):
    golden = next(g for g in GOLDEN if g.name == "mid_stream_error")
    with FakeProvider(Raw(golden.stream)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        texts = []
        with (
            pytest.raises(anthropic.APIStatusError),
            client.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES) as s,
        ):
            for event in s:
                if event.type == "content_block_delta":
                    texts.append(event.delta.text)
        assert "".join(texts) == "Partial answer"
        wait_until(lambda: balancer.provider_status(f"o-{unique}")["failures_by_class"] == {"stream_error": 1})


def test_what_the_openai_provider_receives(balancer, client, unique):
    completion = {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}]}
    with FakeProvider(openai_json(completion)) as fake:
        balancer.use([openai_provider(f"o-{unique}", fake.url, extra_headers={"HTTP-Referer": "https://x.test"},
                                      max_tokens_cap=100)])
        client.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=32000, messages=MESSAGES,
            system=[{"type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}],
            extra_headers={"anthropic-beta": "context-management-2025-06-27"},
            extra_body={"context_management": {"edits": []}, "top_k": 5},
            metadata={"user_id": json.dumps({"session_id": "abc"})},
        )
    (received,) = fake.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer key-of-o-{unique}"
    assert received.headers["http-referer"] == "https://x.test"
    assert "x-api-key" not in received.headers and "anthropic-beta" not in received.headers
    body = received.json()
    assert body["model"] == "gpt-small"
    assert body["max_tokens"] == 100
    assert body["messages"][0] == {"role": "system", "content": "Be brief"}
    for anthropic_only in ("context_management", "top_k", "system", "metadata", "cache_control"):
        assert anthropic_only not in body
    assert len(body.get("user", "")) <= 64


def test_a_multi_turn_tool_conversation_round_trips(balancer, client, unique):
    first = {"id": "c1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me look.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "Read", "arguments": "{\"path\": \"a.txt\"}"}}]}}]}
    final = {"id": "c2", "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "It says hello."}}]}
    with FakeProvider() as fake:
        fake.then(openai_json(first), openai_json(final))
        balancer.use([openai_provider(f"o-{unique}", fake.url)])
        turn1 = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES, tools=TOOLS)
        assert turn1.stop_reason == "tool_use"
        text, tool_use = turn1.content
        assert (text.text, tool_use.name, tool_use.input) == ("Let me look.", "Read", {"path": "a.txt"})

        turn1_content = [b.model_dump(exclude_none=True) for b in turn1.content]
        history = [*MESSAGES, {"role": "assistant", "content": turn1_content},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": tool_use.id, "content": "hello"},
                       {"type": "text", "text": "What does it say?"}]}]
        turn2 = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=history, tools=TOOLS)
        assert turn2.content[0].text == "It says hello."

    sent = fake.requests[1].json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["tool_calls"][0]["id"] == tool_use.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"path": "a.txt"}
    assert sent[2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "hello"}
    assert sent[3]["content"] == "What does it say?"


def test_context_overflow_is_worded_for_claude_code(balancer, client, unique):
    error = {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages "
                                  "resulted in 130000 tokens.", "type": "invalid_request_error",
                       "code": "context_length_exceeded"}}
    with FakeProvider(openai_json(error, status=400)) as fake, FakeProvider() as other:
        balancer.use([openai_provider(f"o-{unique}", fake.url), anthropic_provider(f"b-{unique}", other.url)])
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES)
        assert "prompt is too long: 130000 tokens > 128000 maximum" in caught.value.message
        assert caught.value.body["error"]["type"] == "invalid_request_error"
        assert other.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_failover_across_provider_types_in_both_directions(balancer, client, unique, stream):
    text_stream = next(g for g in GOLDEN if g.name == "text_only")
    openai_answer = Raw(text_stream.stream) if stream else openai_json(text_stream.completion)
    with FakeProvider(Status(529)) as anth_bad, FakeProvider(openai_answer) as openai_ok, \
            FakeProvider(openai_json({"error": {"message": "upstream down"}}, status=500)) as openai_bad, \
            FakeProvider(Message("from anthropic")) as anth_ok:
        balancer.use([anthropic_provider(f"a-{unique}", anth_bad.url), openai_provider(f"o-{unique}", openai_ok.url)])
        assert served_by(client, stream) == (f"o-{unique}", expected_content(text_stream)[0]["text"])

        balancer.use([openai_provider(f"p-{unique}", openai_bad.url), anthropic_provider(f"z-{unique}", anth_ok.url)])
        assert served_by(client, stream) == (f"z-{unique}", "from anthropic")
        assert balancer.provider_status(f"p-{unique}")["failures_by_class"] == {"server_error": 1}


def test_openai_error_chunk_before_content_fails_over(balancer, client, unique):
    error_first = b'data: {"error":{"message":"overloaded, try later","type":"server_error"}}\n\n'
    with FakeProvider(Raw(error_first)) as bad, FakeProvider(Message("from b")) as good:
        balancer.use([openai_provider(f"o-{unique}", bad.url), anthropic_provider(f"b-{unique}", good.url)])
        assert served_by(client, stream=True) == (f"b-{unique}", "from b")
        assert balancer.provider_status(f"o-{unique}")["failures"] == 1


def test_thinking_from_an_openai_answer_is_not_replayed_to_anthropic(balancer, client, unique):
    thinking = next(g for g in GOLDEN if g.name == "thinking_then_text")
    with FakeProvider(openai_json(thinking.completion)) as openai_fake, FakeProvider() as anth:
        balancer.use([openai_provider(f"o-{unique}", openai_fake.url)])
        turn1 = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES)
        assert turn1.content[0].type == "thinking"
        balancer.use([anthropic_provider(f"a-{unique}", anth.url)])
        turn1_content = [b.model_dump(exclude_none=True) for b in turn1.content]
        history = [*MESSAGES, {"role": "assistant", "content": turn1_content},
                   {"role": "user", "content": "more"}]
        client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=history)
    replayed = anth.requests[0].json()["messages"][1]["content"]
    assert [b["type"] for b in replayed] == ["text"]
