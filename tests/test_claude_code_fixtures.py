"""Claude Code's own requests (tests/fixtures/, captured from the CLI) replayed through the running balancer to an
Anthropic-type provider and to OpenAI-type providers answering as LiteLLM, vLLM and Ollama do: what each provider
received, and what the client got, read with the official SDK's stream accumulator."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Received
from helpers import STREAM_EVENT, anthropic_provider, assert_stream_grammar, openai_provider, parse_sse

FIXTURES = Path(__file__).parent / "fixtures"
REQUESTS = sorted(p.name for p in FIXTURES.glob("claude-code-*.request.json"))
SERVERS = ("anthropic", "litellm", "vllm", "ollama")
EXPECTED = json.loads((FIXTURES / "answers.expected.json").read_text())
CLIENT_KEY = "client-own-key"
# Headers the balancer never forwards as the client sent them (it sets its own or recomputes them).
NOT_FORWARDED = {"host", "content-length", "connection", "accept-encoding", "x-api-key", "authorization"}
# Every key a Chat Completions request may carry; nothing Anthropic-only may reach an OpenAI-type provider.
OPENAI_KEYS = {"model", "messages", "tools", "tool_choice", "stream", "stream_options", "max_tokens",
               "max_completion_tokens", "temperature", "top_p", "stop", "user", "reasoning_effort", "reasoning",
               "thinking", "parallel_tool_calls", "response_format"}


def fixture_request(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class FixtureAnswer(Behavior):
    """Answers with the server's fixture: its stream for `stream: true`, its JSON otherwise. An Anthropic answer
    names the model it was asked for, as Anthropic does."""

    server: str

    def run(self, handler, request, fake):
        body = request.json()
        if self.server == "anthropic":
            data = (FIXTURES / "anthropic.message.json").read_text()
            text = (FIXTURES / "anthropic.stream.sse").read_text() if body.get("stream") else data
            answer = text.replace(json.loads(data)["model"], body["model"]).encode()
        else:
            answer = (FIXTURES / (f"{self.server}.stream.sse" if body.get("stream") else f"{self.server}.message.json")
                      ).read_bytes()
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream" if body.get("stream") else "application/json")
        handler.send_header("content-length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)


def replay(balancer: BalancerProcess, fixture: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    """The request as Claude Code sent it: its path and query, its headers (with the client's key), its body."""
    headers = [(k, CLIENT_KEY if k == "x-api-key" else v) for k, v in fixture["headers"]
               if k not in ("host", "content-length")]
    return httpx.post(balancer.url + fixture["path"], headers=headers, content=json.dumps(body).encode(), timeout=30)


_TAKES_JSON_BUFS = "json_bufs" in inspect.signature(accumulate_event).parameters


def accumulated(raw: bytes) -> Any:
    """The message the SDK's own accumulator builds from the client's stream."""
    snapshot = None
    extra: dict[str, Any] = {"json_bufs": {}} if _TAKES_JSON_BUFS else {}
    for name, data in parse_sse(raw):
        if name == "ping":  # the SDK's stream skips it too
            continue
        snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot, **extra)
    assert snapshot is not None
    return snapshot


def assert_expected_answer(message: Any, server: str, requested_model: str) -> None:
    """Thinking, text and the tool call of the fixture answer, in that order, with its stop reason and usage."""
    expected = EXPECTED["content"]
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool = message.content
    assert thinking.thinking == expected["thinking"] and thinking.signature
    assert text.text == expected["text"]
    assert (tool.name, tool.input) == (expected["tool_use"]["name"], expected["tool_use"]["input"])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", tool.id)  # what Anthropic accepts when the conversation moves there
    assert message.stop_reason == EXPECTED["stop_reason"]
    assert message.model == requested_model
    usage = message.usage
    figures = {k: getattr(usage, k) or 0 for k in EXPECTED["usage"][server]}
    assert figures == EXPECTED["usage"][server]


def mapped_model(requested: str) -> str:
    return "small" if "haiku" in requested else "big"


def assert_faithful_anthropic_request(received: Received, fixture: dict[str, Any], body: dict[str, Any]) -> None:
    """Everything as Claude Code sent it but the model (mapped) and the credential (the provider's)."""
    assert received.path == fixture["path"]  # ?beta=true kept
    sent = received.json()
    assert sent["model"] == "provider-" + mapped_model(body["model"])
    assert {**sent, "model": body["model"]} == body
    for name, value in fixture["headers"]:
        if name not in NOT_FORWARDED:
            assert received.headers.get(name) == value, name
    assert CLIENT_KEY not in json.dumps(received.headers)


def assert_valid_chat_completions(received: Received, body: dict[str, Any]) -> None:
    """A Chat Completions request that says what Claude Code asked: its system prompt, every turn in OpenAI's order
    (each tool result answering a tool call just made), every tool as a function, nothing Anthropic-only."""
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"].startswith("Bearer key-of-")
    assert not {k for k in received.headers if k.startswith(("anthropic-", "x-api-key"))}
    sent = received.json()
    assert set(sent) <= OPENAI_KEYS, set(sent) - OPENAI_KEYS
    assert sent["model"] == "gpt-" + mapped_model(body["model"])
    assert sent.get("stream", False) is body["stream"]
    if body["stream"]:
        assert sent["stream_options"] == {"include_usage": True}
    messages = sent["messages"]
    assert messages[0]["role"] == "system" and body["system"][-1]["text"].strip()[:200] in messages[0]["content"]
    open_calls: set[str] = set()
    for message in messages:
        assert message["role"] in ("system", "user", "assistant", "tool"), message["role"]
        if message["role"] == "assistant":
            open_calls = {call["id"] for call in message.get("tool_calls") or []}
            for call in message.get("tool_calls") or []:
                assert call["type"] == "function" and isinstance(json.loads(call["function"]["arguments"]), dict)
        elif message["role"] == "tool":
            assert message["tool_call_id"] in open_calls
            open_calls.discard(message["tool_call_id"])
    assert not open_calls, "a tool call without its result"
    tools = body.get("tools", [])
    assert [t["function"]["name"] for t in sent.get("tools", [])] == [t["name"] for t in tools]
    for tool in sent.get("tools", []):
        assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"
    results = [b for b in body["messages"][-1]["content"] if isinstance(b, dict) and b["type"] == "tool_result"]
    for result in results:  # Claude Code's tool results are the last turn's: they come back as tool messages
        shown = result["content"] if isinstance(result["content"], str) else result["content"][0]["text"]
        assert any(shown in text_of(m["content"]) for m in messages if m["role"] == "tool"), shown


def text_of(content: Any) -> str:
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def provider_entry(server: str, name: str, url: str) -> dict[str, Any]:
    if server == "anthropic":
        return anthropic_provider(name, url, big_model="provider-big", small_model="provider-small")
    return openai_provider(name, url)


def test_the_fixtures_are_claude_codes_own_requests():
    """What the replays stand for: Claude Code 2.1.x's headers and body fields, about 80 KB or more, 24+ tools."""
    kinds = {name: fixture_request(name) for name in REQUESTS}
    assert len(kinds) >= 4
    for fixture in kinds.values():
        headers = dict(fixture["headers"])
        assert fixture["path"] == "/v1/messages?beta=true"
        assert headers["user-agent"].startswith("claude-cli/2.") and headers["x-app"] == "cli"
        assert headers["anthropic-version"] == "2023-06-01" and "claude-code-20250219" in headers["anthropic-beta"]
        assert any(k.startswith("x-stainless-") for k in headers)
        assert isinstance(json.loads(fixture["body"]["metadata"]["user_id"]), dict)
    title = kinds["claude-code-title.request.json"]["body"]
    assert title["output_config"]["format"]["type"] == "json_schema" and title["thinking"] == {"type": "disabled"}
    turn = kinds["claude-code-tool-result.request.json"]["body"]
    assert turn["thinking"] == {"type": "adaptive"} and turn["output_config"]["effort"]
    assert turn["context_management"]["edits"] and len(turn["tools"]) >= 24
    assert len(json.dumps(turn)) >= 80_000
    assert any(m["role"] == "system" for m in turn["messages"])  # mid-conversation system messages
    assert any(b.get("cache_control") for b in turn["system"])
    assert kinds["claude-code-budget-tool-result.request.json"]["body"]["thinking"]["type"] == "enabled"


def billing_fields(body: dict[str, Any]) -> dict[str, str]:
    """The fields of the billing header Claude Code writes as its first system block
    (`x-anthropic-billing-header: cc_version=...; cc_entrypoint=...;`)."""
    text = body["system"][0]["text"]
    prefix = "x-anthropic-billing-header:"
    assert text.startswith(prefix), text[:80]
    pairs = (field.strip().partition("=") for field in text[len(prefix):].split(";") if field.strip())
    return {name: value for name, _, value in pairs}


def test_only_the_subagents_request_is_marked_as_a_subagents():
    """Claude Code marks a subagent's request in the billing header of its first system block (and with an agent-id
    header); the main agent's requests carry neither. Everything else a router might look at is the same as the
    main agent's: the headers, the session, the model."""
    assert "claude-code-subagent.request.json" in REQUESTS  # and so replayed like the others
    subagent = fixture_request("claude-code-subagent.request.json")
    main_agent = {name: fixture_request(name) for name in REQUESTS if name != "claude-code-subagent.request.json"}
    assert billing_fields(subagent["body"])["cc_is_subagent"] == "true"
    assert dict(subagent["headers"])["x-claude-code-agent-id"]
    for name, fixture in main_agent.items():
        assert "cc_is_subagent" not in billing_fields(fixture["body"]), name
        assert "x-claude-code-agent-id" not in dict(fixture["headers"]), name
    first_turn = fixture_request("claude-code-first-turn.request.json")
    assert {k: v for k, v in subagent["headers"] if k != "x-claude-code-agent-id"} == dict(first_turn["headers"])
    assert subagent["body"]["metadata"] == first_turn["body"]["metadata"]
    assert subagent["body"]["model"] == first_turn["body"]["model"]
    assert billing_fields(subagent["body"])["cc_entrypoint"] == billing_fields(first_turn["body"])["cc_entrypoint"]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("request_name", REQUESTS)
def test_a_claude_code_stream_replayed_through_the_balancer(balancer, unique, server, request_name):
    fixture = fixture_request(request_name)
    body = fixture["body"]
    with FakeProvider(FixtureAnswer(server)) as fake:
        name = f"{server}-{unique}"
        balancer.use([provider_entry(server, name, fake.url)])
        response = replay(balancer, fixture, body)
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-provider"] == name
        (received,) = fake.message_requests if server == "anthropic" else fake.requests
    if server == "anthropic":
        assert_faithful_anthropic_request(received, fixture, body)
        # Passed through as Anthropic sent it, its signature untouched.
        assert parse_sse(response.content)[1:] == parse_sse((FIXTURES / "anthropic.stream.sse").read_bytes())[1:]
    else:
        assert_valid_chat_completions(received, body)
        assert_stream_grammar(parse_sse(response.content))
    assert_expected_answer(accumulated(response.content), server, body["model"])


@pytest.mark.parametrize("server", SERVERS)
def test_a_claude_code_request_not_streamed_replayed_through_the_balancer(balancer, unique, server):
    fixture = fixture_request("claude-code-tool-result.request.json")
    body = {**fixture["body"], "stream": False}
    with FakeProvider(FixtureAnswer(server)) as fake:
        name = f"{server}-{unique}"
        balancer.use([provider_entry(server, name, fake.url)])
        response = replay(balancer, fixture, body)
        assert response.status_code == 200, response.text
        (received,) = fake.requests
    if server == "anthropic":
        assert_faithful_anthropic_request(received, fixture, body)
    else:
        assert_valid_chat_completions(received, body)
    assert_expected_answer(Message.model_validate(response.json()), server, body["model"])
