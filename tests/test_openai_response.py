"""to_anthropic_message: a non-streamed Chat Completions answer as an Anthropic Message."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.types import Message

from addon.openai_request import ToolNames
from addon.openai_response import (
    INVALID_ARGUMENTS_KEY,
    OpenAIResponseError,
    anthropic_usage,
    parse_arguments,
    to_anthropic_message,
)
from addon.translated_thinking import SIGNATURE_PREFIX

MODEL = "claude-opus-4-1"


def answer(message: dict, finish_reason: str | None = "stop", usage: dict | None = None, **body: Any) -> dict:
    out = {
        "id": "chatcmpl-abc",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        **body,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def call(name: str, arguments: Any, call_id: str | None = "call_1") -> dict:
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        out["id"] = call_id
    return out


def translate(body: dict, names: ToolNames | None = None) -> dict:
    message = to_anthropic_message(body, MODEL, names or ToolNames())
    pydantic.TypeAdapter(Message).validate_python(message)  # the SDK's own model accepts it
    return message


def test_a_text_answer_becomes_a_whole_anthropic_message() -> None:
    message = translate(answer({"content": "Hello!"}, usage={"prompt_tokens": 10, "completion_tokens": 3}))
    assert message == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_model_is_the_requested_one_not_the_providers() -> None:
    assert translate(answer({"content": "x"}, model="deepseek-chat"))["model"] == MODEL


def test_message_id_without_provider_id_is_generated() -> None:
    body = answer({"content": "x"})
    del body["id"]
    assert translate(body)["id"].startswith("msg_")


def test_content_order_thinking_text_tool_use() -> None:
    body = answer(
        {
            "content": "I will read it.",
            "reasoning_content": "Think first.",
            "tool_calls": [call("Read", '{"file_path": "/a"}')],
        },
        "tool_calls",
    )
    content = translate(body)["content"]
    assert [b["type"] for b in content] == ["thinking", "text", "tool_use"]
    assert content[0]["thinking"] == "Think first."
    assert content[0]["signature"].startswith(SIGNATURE_PREFIX) and len(content[0]["signature"]) > len(SIGNATURE_PREFIX)
    assert content[2] == {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"file_path": "/a"}}


@pytest.mark.parametrize(
    "message",
    [
        {"reasoning_content": "R"},
        {"reasoning": "R"},
        {"reasoning_details": [{"type": "reasoning.text", "text": "R"}, {"type": "reasoning.encrypted", "data": "xx"}]},
        {"reasoning": "R", "reasoning_details": [{"type": "reasoning.text", "text": "R"}]},  # OpenRouter sends both
        {"reasoning_details": [{"type": "reasoning.summary", "summary": "R"}]},
    ],
)
def test_reasoning_fields_become_one_thinking_block(message: dict) -> None:
    content = translate(answer({"content": "A", **message}))["content"]
    assert [(b["type"], b.get("thinking", b.get("text"))) for b in content] == [("thinking", "R"), ("text", "A")]


def test_reasoning_never_goes_into_text() -> None:
    content = translate(answer({"content": None, "reasoning_content": "secret plan"}))["content"]
    assert [b["type"] for b in content] == ["thinking"]


def test_content_given_as_parts_becomes_one_text_block() -> None:
    content = translate(answer({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))["content"]
    assert content == [{"type": "text", "text": "ab"}]


def test_refusal_becomes_text_with_refusal_stop_reason() -> None:
    message = translate(answer({"content": None, "refusal": "I can't help with that."}, "content_filter"))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_empty_and_whitespace_text() -> None:
    assert translate(answer({"content": ""}))["content"] == []
    assert translate(answer({"content": "\n"}))["content"] == [{"type": "text", "text": "\n"}]
    with_tool = translate(answer({"content": "\n\n", "tool_calls": [call("Read", "{}")]}))["content"]
    assert [b["type"] for b in with_tool] == ["tool_use"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}),
        ({"already": "object"}, {"already": "object"}),
        ("", {}),
        ("   ", {}),
        (None, {}),
        (json.dumps(json.dumps({"double": "encoded"})), {"double": "encoded"}),
        ('"  "', {}),
        ('{"a": 1', {INVALID_ARGUMENTS_KEY: '{"a": 1'}),
        ("not json", {INVALID_ARGUMENTS_KEY: "not json"}),
        ("[1, 2]", {INVALID_ARGUMENTS_KEY: "[1, 2]"}),
        ("42", {INVALID_ARGUMENTS_KEY: "42"}),
        (json.dumps("not json inside"), {INVALID_ARGUMENTS_KEY: '"not json inside"'}),
        ([1, 2], {INVALID_ARGUMENTS_KEY: "[1, 2]"}),
    ],
)
def test_tool_arguments_become_input_and_unparseable_ones_are_kept_raw(arguments: Any, expected: dict) -> None:
    assert parse_arguments(arguments) == expected
    content = translate(answer({"tool_calls": [call("T", arguments)]}))["content"]
    assert content[0]["input"] == expected


def test_tool_ids_sanitized_or_generated() -> None:
    body = answer(
        {"tool_calls": [call("A", "{}", "call:1/α"), call("B", "{}", None), call("C", "{}", "")]}, "tool_calls"
    )
    ids = [b["id"] for b in translate(body)["content"]]
    assert ids[0] == "call_1__"
    assert ids[1].startswith("toolu_") and ids[2].startswith("toolu_") and ids[1] != ids[2]


def test_tool_names_are_restored() -> None:
    names = ToolNames(
        to_openai={"mcp__a.b__c": "mcp__a_b__c_12345678"}, to_anthropic={"mcp__a_b__c_12345678": "mcp__a.b__c"}
    )
    body = answer({"tool_calls": [call("mcp__a_b__c_12345678", "{}"), call("Read", "{}", "call_2")]}, "tool_calls")
    assert [b["name"] for b in translate(body, names)["content"]] == ["mcp__a.b__c", "Read"]


def test_a_legacy_function_call_becomes_tool_use() -> None:
    body = answer(
        {"content": None, "function_call": {"name": "Bash", "arguments": '{"command": "ls"}'}}, "function_call"
    )
    message = translate(body)
    assert message["content"][0]["name"] == "Bash" and message["content"][0]["input"] == {"command": "ls"}
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish_reason", "has_tools", "expected"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("function_call", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop", True, "tool_use"),  # Ollama / gpt-4o say stop after calling tools
        ("length", True, "tool_use"),  # any finish_reason with tool calls
        (None, True, "tool_use"),
        (None, False, "end_turn"),
        ("something_new", False, "end_turn"),
        ("tool_calls", False, "end_turn"),  # claims tool calls but sent none
    ],
)
def test_finish_reason_becomes_stop_reason_and_tool_calls_mean_tool_use(
    finish_reason: str | None, has_tools: bool, expected: str,
) -> None:
    message: dict = {"content": "x"}
    if has_tools:
        message["tool_calls"] = [call("T", "{}")]
    assert translate(answer(message, finish_reason))["stop_reason"] == expected


def test_stop_sequence_when_the_provider_names_it() -> None:
    body = answer({"content": "x"})
    body["choices"][0]["stop_reason"] = "</answer>"  # vLLM
    message = translate(body)
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "</answer>")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}},
            (200, 50, 800),
        ),
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 50,
                "prompt_cache_hit_tokens": 600,
                "prompt_cache_miss_tokens": 400,
            },
            (400, 50, 600),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None}, (10, 5, 0)),
        ({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}, (0, 1, 5)),
        (None, (0, 0, 0)),
        ({}, (0, 0, 0)),
    ],
)
def test_usage_reports_cached_tokens_apart(usage: dict | None, expected: tuple[int, int, int]) -> None:
    result = anthropic_usage(usage)
    assert (result["input_tokens"], result["output_tokens"], result["cache_read_input_tokens"]) == expected
    assert result["cache_creation_input_tokens"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "upstream failed", "code": 502}},
        {"error": "plain string"},
        {"choices": []},
        {"id": "x"},
        [],
    ],
)
def test_bodies_without_a_completion_raise(body: Any) -> None:
    with pytest.raises(OpenAIResponseError):
        to_anthropic_message(body, MODEL, ToolNames())


@pytest.mark.parametrize(
    "choice",
    [
        {"message": {"tool_calls": -1, "content": "x"}, "finish_reason": ["stop"]},
        {"message": {"tool_calls": [1, {"function": "x"}], "content": "x"}, "finish_reason": {"a": 1}},
        {"message": None, "finish_reason": None},
    ],
)
def test_malformed_answers_still_translate(choice: dict) -> None:
    message = translate({"choices": [choice], "usage": "n/a"})
    assert message["stop_reason"] in {"end_turn", "tool_use"}
