"""Property tests (hypothesis): the pure translation code (request to OpenAI, token count, session key, error
and message translation) fed valid-ish and garbage input."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import strategies as st

from addon.affinity import session_key
from addon.errors import MAX_MESSAGE_CHARS
from addon.openai_errors import to_anthropic_error
from addon.openai_request import OpenAIOptions, ToolNames, to_openai_request
from addon.openai_response import OpenAIResponseError, to_anthropic_message
from addon.token_count import count_input_tokens
from fuzzing import (
    anthropic_bodies,
    json_leaves,
    json_objects,
    json_values,
    maybe,
    mutated,
    odd_text,
    openai_options,
    quick_and_deep,
    strict_json,
    texts,
    tool_ids,
    tool_names,
    usage,
    weighted,
)
from helpers import STOP_REASONS

# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


OPENAI_TOP_LEVEL = {
    "model", "messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
    "parallel_tool_calls", "user", "stream", "stream_options", "reasoning_effort", "reasoning", "thinking",
}


VALID_OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def assert_openai_request(out: dict, names: ToolNames, body: dict, options: OpenAIOptions) -> None:
    assert set(out) <= OPENAI_TOP_LEVEL, set(out) - OPENAI_TOP_LEVEL
    json.dumps(out)  # JSON-serializable (with ensure_ascii, as the standard library does by default)
    if strict_json(body):
        json.dumps(out, allow_nan=False)
    assert out["model"] == "gpt-x"
    if "max_tokens" in out:
        assert isinstance(out["max_tokens"], int)
        if options.max_tokens_cap is not None:
            assert out["max_tokens"] <= options.max_tokens_cap
    assert len(out.get("stop", [])) <= 4
    offered = set()
    for tool in out.get("tools", []):
        name = tool["function"]["name"]
        assert tool["type"] == "function" and VALID_OPENAI_NAME.match(name), tool
        assert isinstance(tool["function"]["parameters"], dict)
        offered.add(name)
    choice = out.get("tool_choice")
    if isinstance(choice, dict):
        assert choice["function"]["name"] in offered
    # The conversation: roles OpenAI knows; every tool call answered right after its assistant message, and no
    # tool message without its call; no two consecutive user or assistant messages.
    previous_role = None
    pending: list[str] | None = None
    for item in out["messages"]:
        role = item["role"]
        assert role in ("system", "user", "assistant", "tool"), item
        if role == "tool":
            assert pending is not None and item["tool_call_id"] in pending, (item, pending)
            pending.remove(item["tool_call_id"])
            assert isinstance(item["content"], str)
        else:
            assert not pending, f"unanswered tool calls {pending} before a {role} message"
            assert not (role == previous_role and role in ("user", "assistant")), f"two {role} messages in a row"
            pending = None
        if role == "assistant":
            assert item["content"] is None or isinstance(item["content"], str)
            calls = item.get("tool_calls") or []
            assert item["content"] or calls, "an empty assistant message"
            pending = [call["id"] for call in calls]
            for call in calls:
                assert isinstance(call["function"]["arguments"], str)
                json.loads(call["function"]["arguments"])
        if role == "user":
            assert item["content"], "an empty user message"
            assert isinstance(item["content"], (str, list))
        previous_role = role
    assert not pending, f"unanswered tool calls {pending} at the end"


@quick_and_deep(400, body=anthropic_bodies, options=openai_options)
def test_to_openai_request_never_raises(body, options):
    out, names = to_openai_request(body, "gpt-x", options)
    assert_openai_request(out, names, body, options)
    # tool renames are reversible
    for original, short in names.to_openai.items():
        assert names.original(short) == original


@quick_and_deep(300, body=anthropic_bodies)
def test_count_input_tokens_is_a_non_negative_int(body):
    tokens = count_input_tokens(body)
    assert isinstance(tokens, int) and not isinstance(tokens, bool)
    assert tokens >= 0


header_pairs = st.lists(
    st.tuples(st.sampled_from(["x-api-key", "Authorization", "X-API-KEY", "content-type", "anthropic-version"]),
              odd_text),
    max_size=3,
)


@quick_and_deep(300, body=st.one_of(anthropic_bodies, st.none(), json_values), headers=header_pairs)
def test_session_key_never_raises(body, headers):
    key = session_key(body, headers)
    assert key is None or (isinstance(key, str) and key.split(":", 1)[0] in ("session", "user", "client"))


def _error_json(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")


OVERFLOW_TEMPLATES = [
    "This model's maximum context length is {limit} tokens. However, your messages resulted in {prompt} tokens.",
    "This model's maximum context length is {limit} tokens. However, you requested {total} tokens ({prompt} in the "
    "messages, {completion} in the completion). Please reduce the length of the messages or completion.",
    "prompt is too long: {prompt} tokens > {limit} maximum",
    "Input length {prompt} exceeds the maximum context length of {limit} tokens",
    "context window of {limit} tokens exceeded: request has {prompt} input tokens",
    "max_tokens is too large: {completion}. This model's maximum context length is {limit} tokens",
    "The input ({prompt} tokens) is longer than the model's context length ({limit} tokens).",
    "too many tokens",
]


token_numbers = st.one_of(st.integers(0, 10**7).map(str), st.integers(0, 10**7).map("{:,}".format), odd_text)


overflow_messages = st.builds(
    lambda template, limit, prompt, completion: template.format(limit=limit, prompt=prompt, completion=completion,
                                                                total=f"{prompt}+{completion}"),
    st.sampled_from(OVERFLOW_TEMPLATES), token_numbers, token_numbers, token_numbers,
)


error_bodies = st.one_of(
    st.binary(max_size=200),
    overflow_messages.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(lambda m, c: _error_json(error={"message": m, "type": "invalid_request_error", "code": c}),
              overflow_messages, st.sampled_from([None, "context_length_exceeded", 400, "400"])),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda m, t, c: _error_json(error={"message": m, "type": t, "code": c}),
              maybe(texts), maybe(odd_text), maybe(st.one_of(odd_text, st.integers(0, 1000)))),
    st.builds(lambda m, c: _error_json(object="error", message=m, code=c), maybe(texts), maybe(st.integers(0, 600))),
    st.builds(lambda m: _error_json(error=m), maybe(texts)),
    st.builds(lambda d: _error_json(detail=d), maybe(st.one_of(
        texts, st.lists(st.fixed_dictionaries({"loc": maybe(st.lists(json_leaves, max_size=3)), "msg": maybe(texts)}),
                        max_size=3)))),
    st.builds(lambda m: _error_json(message=m), maybe(texts)),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), texts),
    st.sampled_from([
        b"", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"\xff\xfe", b"[]", b"[[]]", b"null", b'"x"',
        b'{"error": {"code": 429, "message": "Provider returned error", "metadata": {"raw": "overloaded"}}}',
        b"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        b'{"error": {"message": "input length 100 tokens plus max_tokens 9000 exceeds the context limit of 8192 '
        b'tokens (100 in the messages, 9000 in the completion)"}}',
    ]),
)


statuses = st.one_of(st.integers(100, 599), st.sampled_from([200, 400, 401, 402, 403, 404, 408, 413, 422, 429,
                                                             500, 502, 503, 504, 529]))


@quick_and_deep(400, status=statuses, body=error_bodies)
def test_to_anthropic_error_always_gives_an_anthropic_error(status, body):
    client_status, out = to_anthropic_error(status, body)
    assert isinstance(client_status, int) and 400 <= client_status <= 599
    data = json.loads(out)
    assert set(data) == {"type", "error"} and data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] in {
        "invalid_request_error", "authentication_error", "billing_error", "permission_error", "not_found_error",
        "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error",
    }
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert len(data["error"]["message"]) <= MAX_MESSAGE_CHARS


tool_call = st.fixed_dictionaries(
    {"id": maybe(tool_ids), "type": st.just("function"),
     "function": maybe(st.fixed_dictionaries(
         {"name": maybe(tool_names),
          "arguments": maybe(st.one_of(
              st.builds(json.dumps, json_objects), st.builds(lambda o: json.dumps(json.dumps(o)), json_objects),
              odd_text, json_objects))},
     ))},
)


openai_message = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": maybe(st.one_of(texts, st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                          "text": maybe(texts)}), max_size=3))),
        "reasoning_content": maybe(texts),
        "reasoning": maybe(texts),
        "reasoning_details": maybe(st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["reasoning.text", "reasoning.summary"]), "text": maybe(texts),
             "summary": maybe(texts)}), max_size=2)),
        "tool_calls": maybe(st.lists(tool_call, max_size=3)),
        "function_call": maybe(st.fixed_dictionaries({"name": maybe(tool_names), "arguments": maybe(odd_text)})),
        "refusal": maybe(texts),
    },
)


completion = st.fixed_dictionaries(
    {"choices": maybe(st.lists(st.fixed_dictionaries(
        {"index": st.just(0), "message": maybe(openai_message),
         "finish_reason": maybe(st.sampled_from(["stop", "length", "tool_calls", "content_filter", "eos", "error"]))},
        optional={"stop_reason": maybe(odd_text)},
    ), max_size=2))},
    optional={"id": maybe(odd_text), "usage": maybe(usage), "object": st.just("chat.completion"),
              "error": maybe(st.one_of(odd_text, json_objects))},
)


@quick_and_deep(400, body=weighted((3, completion), (2, mutated(completion)), (1, json_objects)),
                names=st.sampled_from([ToolNames(),
                                       ToolNames(to_openai={"a b": "a_b_1"}, to_anthropic={"a_b_1": "a b"})]))
def test_to_anthropic_message_raises_only_response_errors(body, names):
    try:
        message = to_anthropic_message(body, "claude-sonnet-4-5", names)
    except OpenAIResponseError:
        return
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-sonnet-4-5"
    assert message["stop_reason"] in STOP_REASONS
    assert re.fullmatch(r"msg_[A-Za-z0-9_-]*", message["id"])
    for block in message["content"]:
        assert block["type"] in ("thinking", "text", "tool_use")
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict) and re.fullmatch(r"[A-Za-z0-9_-]+", block["id"])
        if block["type"] == "text":
            assert isinstance(block["text"], str) and block["text"]
    assert all(isinstance(v, int) and v >= 0 for v in message["usage"].values())
    json.dumps(message)
    if message["stop_reason"] == "tool_use":
        assert any(block["type"] == "tool_use" for block in message["content"])
