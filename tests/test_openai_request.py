"""to_openai_request: an Anthropic Messages body as an OpenAI Chat Completions body."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from addon.openai_request import (
    INTERRUPTED_TOOL_RESULT,
    OpenAIOptions,
    ToolNames,
    openai_tool_name,
    to_openai_request,
)

MODEL = "gpt-4.1"
ALLOWED_KEYS = {
    "model",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "stream",
    "stream_options",
    "reasoning_effort",
    "reasoning",
    "thinking",
}
LONG_NAME = "mcp__plugin_github_enterprise_server__search_repositories_by_topic_and_language"


def convert(body: dict, **options: Any) -> dict:
    out, _ = to_openai_request({"max_tokens": 1024, **body}, MODEL, OpenAIOptions(**options))
    return out


def messages(*anthropic_messages: dict, **options: Any) -> list[dict]:
    return convert({"messages": list(anthropic_messages)}, **options)["messages"]


def user(content: Any) -> dict:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict:
    return {"role": "assistant", "content": content}


def tool_use(call_id: str, name: str = "Read", arguments: dict | None = None) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments or {"file_path": "/a"}}


def tool_result(call_id: str, content: Any = "ok", **extra: Any) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


def text(value: str, **extra: Any) -> dict:
    return {"type": "text", "text": value, **extra}


def custom_tool(name: str, **extra: Any) -> dict:
    return {"name": name, "description": f"{name} tool", "input_schema": {"type": "object", "properties": {}}, **extra}


CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ],
    "messages": [
        user(
            [text("<system-reminder>ctx</system-reminder>"), text("fix the bug", cache_control={"type": "ephemeral"})]
        ),
        assistant([{"type": "thinking", "thinking": "look first", "signature": "sig"}, tool_use("toolu_1")]),
        user([tool_result("toolu_1", [text("file body", cache_control={"type": "ephemeral"})])]),
        {"role": "system", "content": "The user changed the file."},
        user("thanks"),
    ],
    "tools": [
        {**custom_tool("Read"), "cache_control": {"type": "ephemeral"}},
        {"type": "custom", **custom_tool(LONG_NAME)},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
    "container": "container_1",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
    "cache_control": {"type": "ephemeral"},
    "top_k": 40,
    "temperature": 1,
    "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "a-b-c", "session_id": "s-1"})},
    "service_tier": "auto",
    "betas": ["interleaved-thinking-2025-05-14"],
}


# -- the allow-list ---------------------------------------------------------------------------------------------


def test_a_claude_code_request_keeps_only_allowed_fields() -> None:
    out, names = to_openai_request(CLAUDE_CODE_BODY, MODEL, OpenAIOptions())
    assert set(out) <= ALLOWED_KEYS
    dumped = json.dumps(out)
    for leaked in (
        "cache_control",
        "context_management",
        "container",
        "mcp_servers",
        "top_k",
        "output_config",
        "metadata",
        "budget_tokens",
        "adaptive",
        "service_tier",
        "betas",
        "signature",
        "web_search",
    ):
        assert leaked not in dumped, leaked
    assert out["model"] == MODEL and out["max_tokens"] == 32000 and out["temperature"] == 1
    assert out["reasoning_effort"] == "high"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "system", "user"]
    assert names.original(openai_tool_name(LONG_NAME)) == LONG_NAME


def test_the_anthropic_thinking_object_never_leaks_even_in_deepseek_mode() -> None:
    out = convert(
        {"thinking": {"type": "enabled", "budget_tokens": 5000}, "messages": [user("hi")]}, reasoning="deepseek"
    )
    assert out["thinking"] == {"type": "enabled"}


# -- system -----------------------------------------------------------------------------------------------------


def test_a_system_string_becomes_the_first_system_message() -> None:
    assert convert({"system": "Be nice.", "messages": [user("hi")]})["messages"][0] == {
        "role": "system",
        "content": "Be nice.",
    }


def test_system_blocks_are_joined_and_cache_control_stripped() -> None:
    system = [text("One.", cache_control={"type": "ephemeral"}), text(""), text("Two.")]
    assert convert({"system": system, "messages": [user("hi")]})["messages"][0] == {
        "role": "system",
        "content": "One.\n\nTwo.",
    }


def test_claude_codes_billing_block_is_not_sent_to_an_openai_type_provider() -> None:
    # Different on every run: at the head of the prompt it would defeat the provider's prefix cache.
    system = [text("x-anthropic-billing-header: cc_version=2.1.197.6e2; cc_entrypoint=cli;"),
              text("You are Claude Code."), text("Mention x-anthropic-billing-header: in a sentence is kept.")]
    assert convert({"system": system, "messages": [user("hi")]})["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nMention x-anthropic-billing-header: in a sentence is kept.",
    }


def test_empty_system_sends_no_system_message() -> None:
    assert convert({"system": [], "messages": [user("hi")]})["messages"] == [{"role": "user", "content": "hi"}]


def test_mid_conversation_system_message_stays_a_system_message_by_default() -> None:
    out = messages(user("a"), assistant("b"), {"role": "system", "content": [text("note")]}, user("c"))
    assert out == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "note"},
        {"role": "user", "content": "c"},
    ]


def test_mid_conversation_system_message_merged_into_the_next_user_turn() -> None:
    out = messages(
        user("a"), assistant("b"), {"role": "system", "content": "note"}, user("c"), merge_system_messages=True
    )
    assert out[-1] == {"role": "user", "content": "note\n\nc"}
    assert all(m["role"] != "system" for m in out)


def test_merged_system_message_goes_after_the_tool_results_of_the_next_turn() -> None:
    out = messages(
        user("a"),
        assistant([tool_use("t1")]),
        {"role": "system", "content": "note"},
        user([tool_result("t1", "done"), text("next")]),
        merge_system_messages=True,
    )
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]
    assert out[-1]["content"] == "note\n\nnext"


def test_trailing_system_message_with_merging_becomes_user_text() -> None:
    out = messages(user("a"), {"role": "system", "content": "note"}, merge_system_messages=True)
    assert out == [{"role": "user", "content": "a\n\nnote"}]


# -- content blocks ---------------------------------------------------------------------------------------------


def test_text_only_content_is_flattened_and_empty_text_dropped() -> None:
    assert messages(user([text("one"), text(""), text("two")])) == [{"role": "user", "content": "one\n\ntwo"}]


def test_images_in_base64_or_by_url_become_image_urls() -> None:
    out = messages(
        user(
            [
                text("look"),
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ]
        )
    )
    assert out[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]


def test_documents_become_files_or_text() -> None:
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        "title": "spec.pdf",
    }
    plain = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "body"},
        "title": "notes",
    }
    content_doc = {"type": "document", "source": {"type": "content", "content": [text("inner")]}}
    url_doc = {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
    out = messages(user([pdf, plain, content_doc, url_doc]))
    assert out[0]["content"] == [
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "text", "text": "notes\n\nbody"},
        {"type": "text", "text": "inner"},
        {"type": "text", "text": "[document: https://x/a.pdf]"},
    ]


def test_assistant_tool_use_becomes_tool_calls_with_null_content() -> None:
    out = messages(
        user("go"), assistant([tool_use("toolu_1", "Bash", {"command": "ls é"})]), user([tool_result("toolu_1")])
    )
    assert out[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls é"}'}}
        ],
    }


def test_assistant_turn_is_one_message_with_text_joined_and_calls_in_order() -> None:
    out = messages(
        user("go"),
        assistant([text("First."), tool_use("a"), text("Second."), tool_use("b", "Grep")]),
        user([tool_result("a"), tool_result("b")]),
    )
    assert out[1]["content"] == "First.\n\nSecond."
    assert [c["id"] for c in out[1]["tool_calls"]] == ["a", "b"]


def test_tool_results_come_first_in_block_order_then_one_user_message() -> None:
    out = messages(
        user("go"),
        assistant([tool_use("a"), tool_use("b")]),
        user([text("before"), tool_result("b", "B"), text("between"), tool_result("a", "A")]),
    )
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "user", "content": "before\n\nbetween"},
    ]


def test_error_results_images_in_results_and_empty_results() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    out = messages(
        user("go"),
        assistant([tool_use("a"), tool_use("b"), tool_use("c")]),
        user(
            [
                tool_result("a", "command not found", is_error=True),
                tool_result("b", [text("screenshot:"), image]),
                tool_result("c", ""),
                text("what now?"),
            ]
        ),
    )
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "Error: command not found"},
        {"role": "tool", "tool_call_id": "b", "content": "screenshot:"},
        {"role": "tool", "tool_call_id": "c", "content": ""},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what now?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        },
    ]


def test_unanswered_tool_call_gets_a_synthesized_result() -> None:
    out = messages(user("go"), assistant([tool_use("a"), tool_use("b")]), user([tool_result("b", "B"), text("stop")]))
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": INTERRUPTED_TOOL_RESULT},
        {"role": "user", "content": "stop"},
    ]


def test_tool_call_at_the_end_of_the_conversation_is_answered_too() -> None:
    out = messages(user("go"), assistant([tool_use("a")]))
    assert out[-1] == {"role": "tool", "tool_call_id": "a", "content": INTERRUPTED_TOOL_RESULT}


def test_orphan_tool_result_becomes_user_text() -> None:
    out = messages(user([tool_result("gone", "old output"), text("continue")]))
    assert out == [{"role": "user", "content": "[result of tool call gone]\nold output\n\ncontinue"}]


def test_thinking_dropped_by_default() -> None:
    history = [
        user("q"),
        assistant(
            [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "redacted_thinking", "data": "x"},
                text("A"),
            ]
        ),
    ]
    assert messages(*history)[1] == {"role": "assistant", "content": "A"}


def test_deepseek_mode_sends_reasoning_content_on_assistant_messages() -> None:
    history = [
        user("q"),
        assistant([{"type": "thinking", "thinking": "hmm", "signature": "s"}, tool_use("a")]),
        user([tool_result("a")]),
        assistant("done"),
        user("next"),
    ]
    out = messages(*history, reasoning="deepseek")
    assert out[1]["reasoning_content"] == "hmm" and out[1]["tool_calls"]
    assert out[3] == {"role": "assistant", "content": "done", "reasoning_content": ""}


def test_consecutive_same_role_turns_are_merged() -> None:
    out = messages(user("a"), user([text("b")]), assistant("c"), assistant("d"))
    assert out == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c\n\nd"}]


def test_empty_messages_are_skipped_and_their_neighbours_merged() -> None:
    out = messages(user("a"), assistant([{"type": "thinking", "thinking": "x", "signature": "s"}]), user([]), user("b"))
    assert out == [{"role": "user", "content": "a\n\nb"}]


def test_merging_text_with_parts_keeps_both() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}
    out = messages(user("a"), assistant([]), user([image]))
    assert out == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "https://x/i.png"}}],
        }
    ]


def test_malformed_entries_are_ignored() -> None:
    out = messages(user("a"), "junk", {"role": "tool", "content": "x"}, {"content": "no role"}, user([None, text("b")]))
    assert out == [{"role": "user", "content": "a\n\nb"}]


# -- tools ------------------------------------------------------------------------------------------------------


def test_function_tools_take_only_name_description_and_schema() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tools = [
        {
            "type": "custom",
            "name": "Search",
            "description": "Find",
            "input_schema": schema,
            "cache_control": {"type": "ephemeral"},
            "defer_loading": True,
            "eager_input_streaming": True,
        }
    ]
    out = convert({"messages": [user("hi")], "tools": tools})
    assert out["tools"] == [
        {"type": "function", "function": {"name": "Search", "description": "Find", "parameters": schema}}
    ]


def test_server_tools_are_dropped_and_client_tools_expanded() -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "text_editor_20250124", "name": "str_replace_editor"},
    ]
    out = convert({"messages": [user("hi")], "tools": tools})
    functions = [t["function"] for t in out["tools"]]
    assert [f["name"] for f in functions] == ["bash", "str_replace_based_edit_tool", "str_replace_editor"]
    assert functions[0]["parameters"]["properties"]["command"]["type"] == "string"
    assert "undo_edit" not in functions[1]["parameters"]["properties"]["command"]["enum"]
    assert "undo_edit" in functions[2]["parameters"]["properties"]["command"]["enum"]
    assert all("type" not in f["parameters"] or f["parameters"]["type"] == "object" for f in functions)


def test_only_server_tools_means_no_tools_and_no_tool_choice() -> None:
    out = convert(
        {
            "messages": [user("hi")],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        }
    )
    assert "tools" not in out and "tool_choice" not in out and "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "Read"}, {"tool_choice": {"type": "function", "function": {"name": "Read"}}}),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
        ({"type": "tool", "name": "web_search"}, {"tool_choice": "auto"}),  # a dropped server tool
        (None, {}),
    ],
)
def test_tool_choice_becomes_openais_and_a_dropped_server_tool_becomes_auto(
    choice: dict | None, expected: dict,
) -> None:
    tools = [custom_tool("Read"), {"type": "web_search_20250305", "name": "web_search"}]
    out = convert({"messages": [user("hi")], "tools": tools, **({"tool_choice": choice} if choice else {})})
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_long_and_invalid_tool_names_are_shortened_and_reversible() -> None:
    dotted = "mcp__my.server__Search"
    body = {
        "messages": [user("go"), assistant([tool_use("t", "mcp__old.removed__tool")]), user([tool_result("t")])],
        "tools": [custom_tool(LONG_NAME), custom_tool(dotted), custom_tool("Read")],
        "tool_choice": {"type": "tool", "name": LONG_NAME},
    }
    out, names = to_openai_request(body, MODEL, OpenAIOptions())
    sent = [t["function"]["name"] for t in out["tools"]]
    assert sent[2] == "Read"
    for original, short in zip([LONG_NAME, dotted], sent[:2], strict=True):
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", short)
        assert names.original(short) == original and names.to_openai[original] == short
    assert out["tool_choice"] == {"type": "function", "function": {"name": sent[0]}}
    history_name = out["messages"][1]["tool_calls"][0]["function"]["name"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", history_name)
    assert names.original(history_name) == "mcp__old.removed__tool"
    assert names.original("Unknown") == "Unknown" and "Read" not in names.to_openai


def test_short_names_are_deterministic_distinct_and_case_preserving() -> None:
    assert openai_tool_name(LONG_NAME) == openai_tool_name(LONG_NAME)
    assert openai_tool_name(LONG_NAME) != openai_tool_name(LONG_NAME + "2")
    assert openai_tool_name("a.B") != openai_tool_name("a.b")
    assert openai_tool_name("a" * 64) == "a" * 64 and len(openai_tool_name("a" * 65)) == 64
    names = ToolNames()
    short = names.add("Tool.With.Case")
    assert names.original(short) == "Tool.With.Case"


# -- scalar fields ----------------------------------------------------------------------------------------------


def test_stop_sequences_capped_at_four() -> None:
    out = convert({"messages": [user("hi")], "stop_sequences": ["a", "b", "", "c", "d", "e"]})
    assert out["stop"] == ["a", "b", "c", "d"]
    assert "stop" not in convert({"messages": [user("hi")], "stop_sequences": []})


def test_temperature_and_top_p_pass_top_k_is_dropped() -> None:
    out = convert({"messages": [user("hi")], "temperature": 0.2, "top_p": 0.9, "top_k": 5})
    assert (out["temperature"], out["top_p"]) == (0.2, 0.9) and "top_k" not in out


@pytest.mark.parametrize(
    ("max_tokens", "cap", "expected"), [(32000, 8192, 8192), (100, 8192, 100), (64000, None, 64000)]
)
def test_max_tokens_is_capped_at_max_tokens_cap(max_tokens: int, cap: int | None, expected: int) -> None:
    assert convert({"messages": [user("hi")], "max_tokens": max_tokens}, max_tokens_cap=cap)["max_tokens"] == expected


def test_user_id_hashed_when_not_a_short_plain_id() -> None:
    claude_code = json.dumps({"device_id": "d" * 64, "session_id": "abc"})
    hashed = convert({"messages": [user("hi")], "metadata": {"user_id": claude_code}})["user"]
    assert re.fullmatch(r"[0-9a-f]{64}", hashed)
    assert hashed == convert({"messages": [user("x")], "metadata": {"user_id": claude_code}})["user"]
    assert convert({"messages": [user("hi")], "metadata": {"user_id": "user-42"}})["user"] == "user-42"
    assert "user" not in convert({"messages": [user("hi")], "metadata": {}})


def test_stream_options_are_sent_only_when_enabled_and_stream_only_when_true() -> None:
    assert convert({"messages": [user("hi")], "stream": True}, stream_options=False) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1024,
        "stream": True,
    }
    assert "stream" not in convert({"messages": [user("hi")], "stream": False})


# -- thinking ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (1025, "medium"), (8192, "medium"), (8193, "high"), (31999, "high")]
)
def test_thinking_budget_becomes_reasoning_effort_by_bucket(budget: int, effort: str) -> None:
    out = convert({"messages": [user("hi")], "thinking": {"type": "enabled", "budget_tokens": budget}})
    assert out["reasoning_effort"] == effort


def test_reasoning_budget_buckets_can_be_set() -> None:
    body = {"messages": [user("hi")], "thinking": {"type": "enabled", "budget_tokens": 3000}}
    assert convert(body, reasoning_budget_buckets=(4000, 16000))["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("effort", "expected"), [("low", "low"), ("medium", "medium"), ("high", "high"), ("max", "high"), (None, "high")]
)
def test_adaptive_thinking_uses_the_effort(effort: str | None, expected: str) -> None:
    body: dict = {"messages": [user("hi")], "thinking": {"type": "adaptive"}}
    if effort:
        body["output_config"] = {"effort": effort}
    assert convert(body)["reasoning_effort"] == expected


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}])
def test_no_thinking_no_reasoning_field(thinking: dict | None) -> None:
    body: dict = {"messages": [user("hi")], "output_config": {"effort": "low"}}
    if thinking:
        body["thinking"] = thinking
    out = convert(body)
    assert not {"reasoning_effort", "reasoning", "thinking"} & set(out)


def test_thinking_becomes_each_dialects_reasoning_field_or_nothing() -> None:
    enabled = {"messages": [user("hi")], "thinking": {"type": "enabled", "budget_tokens": 5000}}
    adaptive = {"messages": [user("hi")], "thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}}
    assert convert(enabled, reasoning="openrouter")["reasoning"] == {"max_tokens": 5000}
    assert convert(adaptive, reasoning="openrouter")["reasoning"] == {"effort": "medium"}
    assert convert(adaptive, reasoning="deepseek")["thinking"] == {"type": "enabled"}
    out = convert(enabled, reasoning="none")
    assert not {"reasoning_effort", "reasoning", "thinking"} & set(out)


def test_names_and_user_ids_with_lone_surrogates_are_hashed_without_error() -> None:
    out, names = to_openai_request(
        {"messages": [user("hi")], "tools": [custom_tool("bad\ud83cname")], "metadata": {"user_id": "x\ud83c"}},
        MODEL,
        OpenAIOptions(),
    )
    short = out["tools"][0]["function"]["name"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", short) and names.original(short) == "bad\ud83cname"
    assert re.fullmatch(r"[0-9a-f]{64}", out["user"])
