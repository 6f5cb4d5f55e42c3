"""StreamTranslator: OpenAI chunks -> Anthropic SSE, validated with the official anthropic SDK's accumulator."""

from __future__ import annotations

import inspect
import json
import random
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from addon.openai_request import ToolNames
from addon.openai_response import INVALID_ARGUMENTS_KEY, to_anthropic_message
from addon.openai_stream import EOF_MESSAGE, StreamTranslator, _JsonProgress
from addon.translated_thinking import SIGNATURE_PREFIX, thinking_signature
from helpers import STREAM_EVENT, assert_stream_grammar, openai_sse, parse_sse
from openai_golden import GOLDEN, Golden

MODEL = "claude-sonnet-4-5"
MESSAGE_ID = "msg_golden"


# -- helpers ----------------------------------------------------------------------------------------------------


def translate(chunks: list[bytes], names: ToolNames | None = None) -> bytes:
    translator = StreamTranslator(MODEL, names or ToolNames(), message_id=MESSAGE_ID)
    out = [translator.feed(chunk) for chunk in chunks]
    out.append(translator.finish())
    return b"".join(out)


def delta(**fields: Any) -> dict:
    return {"id": "chatcmpl-t", "choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str = "stop", **choice: Any) -> dict:
    return {"id": "chatcmpl-t", "choices": [{"index": 0, "delta": {}, "finish_reason": reason, **choice}]}


def tool(index: Any = 0, call_id: str | None = None, name: str | None = None, arguments: Any = None) -> dict:
    call: dict[str, Any] = {} if index is None else {"index": index}
    function: dict[str, Any] = {}
    if call_id is not None:
        call["id"] = call_id
        call["type"] = "function"
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        call["function"] = function
    return delta(tool_calls=[call])


# Newer SDKs (2.x, Python 3.12+) keep partial tool JSON in a buffer the caller passes; 0.x (Python 3.11) does not.
_TAKES_JSON_BUFS = "json_bufs" in inspect.signature(accumulate_event).parameters


def accumulate(events: list[tuple[str, dict]]) -> Any:
    """The SDK's own accumulator over the typed events (raises on an order it does not accept)."""
    snapshot = None
    extra: dict[str, Any] = {"json_bufs": {}} if _TAKES_JSON_BUFS else {}
    for name, data in events:
        if name == "error":
            continue
        event = STREAM_EVENT.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, **extra)
    return snapshot


def content_of(snapshot: Any) -> list[dict]:
    return [] if snapshot is None else [json.loads(json.dumps(block.to_dict())) for block in snapshot.content]


def run(stream: bytes, names: ToolNames | None = None) -> tuple[list[tuple[str, dict]], Any]:
    events = parse_sse(translate([stream], names))
    assert_stream_grammar(events)
    return events, accumulate(events)


# -- golden streams ---------------------------------------------------------------------------------------------

golden = pytest.mark.parametrize("case", GOLDEN, ids=[g.name for g in GOLDEN])


def test_every_case_of_the_note_has_a_golden_stream() -> None:
    assert len({g.name for g in GOLDEN}) == 16


@golden
def test_golden_stream_matches_the_non_streamed_translation(case: Golden) -> None:
    events, snapshot = run(case.stream, case.names)
    if case.error_type is not None:
        assert events[-1][1]["error"]["type"] == case.error_type
        assert content_of(snapshot) == case.partial_content
        return
    expected = to_anthropic_message(case.completion, MODEL, case.names)
    assert content_of(snapshot) == expected["content"]
    assert snapshot.stop_reason == expected["stop_reason"] == case.stop_reason
    assert snapshot.usage.to_dict() == expected["usage"] == case.usage
    assert snapshot.model == MODEL and snapshot.id == MESSAGE_ID and snapshot.role == "assistant"


@golden
def test_golden_stream_split_at_every_byte_gives_identical_output(case: Golden) -> None:
    reference = translate([case.stream], case.names)
    for offset in range(1, len(case.stream)):
        split = translate([case.stream[:offset], case.stream[offset:]], case.names)
        assert split == reference, f"different output when split at byte {offset}"


@golden
def test_golden_stream_in_random_pieces_gives_identical_output(case: Golden) -> None:
    reference = translate([case.stream], case.names)
    rng = random.Random(f"golden-{case.name}")
    stream = case.stream
    for _ in range(150):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(2, min(60, len(stream) - 1))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert translate(pieces, case.names) == reference
    assert translate([bytes([b]) for b in stream], case.names) == reference


@golden
def test_golden_stream_is_complete_at_done_and_finish_adds_only_what_eof_means(case: Golden) -> None:
    translator = StreamTranslator(MODEL, case.names, message_id=MESSAGE_ID)
    translator.feed(case.stream)
    done_before_eof = translator.done
    assert done_before_eof == (case.ends_with_done or case.error_type is not None)
    tail = translator.finish()
    if done_before_eof:
        assert tail == b""
    else:
        assert [name for name, _ in parse_sse(tail)] == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.done


def test_thinking_blocks_carry_the_synthetic_signature() -> None:
    from openai_golden import THINKING_THEN_TEXT

    _, snapshot = run(THINKING_THEN_TEXT.stream)
    thinking = snapshot.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "The user wants a greeting."
    assert thinking.signature == thinking_signature(thinking.thinking)
    assert thinking.signature.startswith(SIGNATURE_PREFIX)


def test_interleaved_calls_never_write_to_a_closed_block() -> None:
    from openai_golden import INTERLEAVED_TOOL_INDICES

    events, snapshot = run(INTERLEAVED_TOOL_INDICES.stream)
    closed: set[int] = set()
    for name, data in events:
        if name == "content_block_stop":
            closed.add(data["index"])
        elif name == "content_block_delta":
            assert data["index"] not in closed
    assert [block.input for block in snapshot.content] == [
        {"file_path": "/src/{x}.py"},
        {"pattern": "def \\w+", "path": "/src"},
    ]


def test_renamed_tool_gets_its_original_name_back() -> None:
    from openai_golden import LONG_MCP_NAME, RENAMED, TEXT_THEN_TWO_TOOLS

    _, snapshot = run(TEXT_THEN_TWO_TOOLS.stream, RENAMED)
    assert snapshot.content[2].name == LONG_MCP_NAME


def test_golden_short_name_is_what_the_request_translation_produces() -> None:
    from addon.openai_request import openai_tool_name
    from openai_golden import LONG_MCP_NAME, LONG_MCP_SHORT

    assert openai_tool_name(LONG_MCP_NAME) == LONG_MCP_SHORT


# -- streaming behaviour ----------------------------------------------------------------------------------------


def test_text_is_forwarded_as_soon_as_its_chunk_is_complete() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    first = translator.feed(openai_sse(delta(role="assistant", content="Hel")))
    assert b"message_start" in first and b'"text":"Hel"' in first
    assert translator.feed(b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}') == b""  # no line end yet
    assert b'"text":"lo"' in translator.feed(b"\n\n")


def test_tool_arguments_stream_live_in_the_sequential_case() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    translator.feed(openai_sse(tool(0, "call_1", "Write", '{"content": "a')))
    out = translator.feed(openai_sse(tool(0, arguments='bc"}')))
    assert b'"partial_json":"bc\\"}"' in out
    second = translator.feed(openai_sse(tool(1, "call_2", "Read", '{"file_path": "/x"')))
    assert b"content_block_stop" in second and b'"id":"call_2"' in second and b"/x" in second


def test_message_start_waits_for_content_so_an_early_error_allows_failover() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    out = translator.feed(openai_sse({"error": {"message": "Service Unavailable", "code": 503}}))
    events = parse_sse(out)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["error"] == {"type": "overloaded_error", "message": "Service Unavailable"}
    assert not translator.started_content and translator.done


def test_started_content_turns_true_with_the_first_block() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    translator.feed(openai_sse(delta(role="assistant", content="")))
    assert not translator.started_content
    translator.feed(openai_sse(delta(reasoning_content="hmm")))
    assert translator.started_content and not translator.done


def test_eof_mid_block_without_finish_reason_is_an_error() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    translator.feed(openai_sse(delta(content="Half an ans")))
    events = parse_sse(translator.finish())
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["error"] == {"type": "api_error", "message": EOF_MESSAGE}
    assert translator.done and translator.feed(openai_sse(delta(content="more"))) == b""


def test_eof_before_anything_is_an_error() -> None:
    events = parse_sse(translate([b": keep-alive\n\n"]))
    assert [name for name, _ in events] == ["error"]


def test_done_without_any_content_is_an_empty_message() -> None:
    events, snapshot = run(openai_sse(delta(role="assistant", content=""), finish("stop"), "[DONE]"))
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert snapshot.content == [] and snapshot.stop_reason == "end_turn"


def test_fail_ends_the_stream_with_an_error_event() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    translator.feed(openai_sse(delta(content="partial")))
    events = parse_sse(translator.fail("connection reset by provider", overloaded=True))
    assert events == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "connection reset by provider"}})
    ]
    assert translator.fail("again") == b"" and translator.finish() == b""


def test_fail_defaults_to_api_error() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    assert parse_sse(translator.fail("boom"))[0][1]["error"]["type"] == "api_error"


def test_finish_reason_error_is_an_error_event() -> None:
    events = parse_sse(translate([openai_sse(delta(content="x"), finish("error"), "[DONE]")]))
    assert events[-1][0] == "error" and "message_stop" not in [n for n, _ in events]


@pytest.mark.parametrize(
    ("chunk", "error_type", "message"),
    [
        ({"error": "model is overloaded, please retry"}, "overloaded_error", "model is overloaded, please retry"),
        (
            {"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500},
            "api_error",
            "CUDA out of memory",
        ),
        ({"error": {"message": "Rate limit exceeded", "code": 429}}, "api_error", "Rate limit exceeded"),
    ],
)
def test_error_chunks_of_every_dialect(chunk: dict, error_type: str, message: str) -> None:
    events = parse_sse(translate([openai_sse(delta(content="x"), chunk)]))
    assert events[-1] == ("error", {"type": "error", "error": {"type": error_type, "message": message}})


def test_nothing_is_read_after_done() -> None:
    _, snapshot = run(openai_sse(delta(content="a"), finish("stop"), "[DONE]", delta(content="late")))
    assert content_of(snapshot) == [{"type": "text", "text": "a"}]


def test_empty_tool_calls_list_is_ignored() -> None:
    _, snapshot = run(openai_sse(delta(content="Hi", tool_calls=[]), finish("stop"), "[DONE]"))
    assert content_of(snapshot) == [{"type": "text", "text": "Hi"}]
    assert snapshot.stop_reason == "end_turn"


def test_text_after_tool_calls_opens_a_new_text_block() -> None:
    stream = openai_sse(
        tool(0, "call_1", "Read", '{"file_path": "/a"}'),
        delta(content="Reading it now."),
        finish("tool_calls"),
        "[DONE]",
    )
    _, snapshot = run(stream)
    assert [b["type"] for b in content_of(snapshot)] == ["tool_use", "text"]
    assert snapshot.content[1].text == "Reading it now."


def test_reasoning_after_text_opens_a_new_thinking_block() -> None:
    stream = openai_sse(
        delta(content="First."), delta(reasoning_content="then think"), delta(content="Then."), finish(), "[DONE]"
    )
    _, snapshot = run(stream)
    assert [b["type"] for b in content_of(snapshot)] == ["text", "thinking", "text"]


def test_whitespace_only_answer_is_kept_when_no_tool_follows() -> None:
    _, snapshot = run(openai_sse(delta(content="\n"), finish(), "[DONE]"))
    expected = to_anthropic_message(
        {"choices": [{"message": {"content": "\n"}, "finish_reason": "stop"}]}, MODEL, ToolNames()
    )
    assert content_of(snapshot) == expected["content"] == [{"type": "text", "text": "\n"}]


def test_whitespace_before_text_is_kept_in_the_text() -> None:
    _, snapshot = run(openai_sse(delta(content="\n\n"), delta(content="Hi"), finish(), "[DONE]"))
    assert content_of(snapshot) == [{"type": "text", "text": "\n\nHi"}]


def test_double_encoded_arguments_are_parsed_like_the_non_streamed_answer() -> None:
    encoded = json.dumps(json.dumps({"command": "ls"}))
    stream = openai_sse(tool(0, "call_1", "Bash", encoded[:7]), tool(0, arguments=encoded[7:]),
                        finish("tool_calls"), "[DONE]")
    _, snapshot = run(stream)
    assert snapshot.content[0].input == {"command": "ls"}


def test_arguments_that_are_not_an_object_get_the_fallback_shape() -> None:
    stream = openai_sse(tool(0, "call_1", "Bash", "ls -la"), finish("tool_calls"), "[DONE]")
    _, snapshot = run(stream)
    non_streamed = to_anthropic_message(
        {
            "choices": [
                {
                    "message": {"tool_calls": [{"id": "call_1", "function": {"name": "Bash", "arguments": "ls -la"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
        MODEL,
        ToolNames(),
    )
    assert snapshot.content[0].input == non_streamed["content"][0]["input"] == {INVALID_ARGUMENTS_KEY: "ls -la"}


def test_empty_arguments_give_an_empty_input() -> None:
    events, snapshot = run(openai_sse(tool(0, "call_1", "Ping", ""), finish("tool_calls"), "[DONE]"))
    assert snapshot.content[0].input == {}
    assert "input_json_delta" not in json.dumps([d for _, d in events])


def test_arguments_sent_as_an_object_are_serialised() -> None:
    _, snapshot = run(openai_sse(tool(0, "call_1", "Bash", {"command": "pwd"}), finish("tool_calls"), "[DONE]"))
    assert snapshot.content[0].input == {"command": "pwd"}


def test_tool_ids_are_sanitized_or_generated() -> None:
    stream = openai_sse(tool(0, "call:1/x", "A", "{}"), tool(1, None, "B", "{}"), finish("tool_calls"), "[DONE]")
    _, snapshot = run(stream)
    assert snapshot.content[0].id == "call_1_x"
    assert snapshot.content[1].id.startswith("toolu_") and len(snapshot.content[1].id) > len("toolu_")


def test_three_interleaved_calls_open_in_order_once_each_predecessor_is_complete() -> None:
    stream = openai_sse(
        tool(0, "c0", "A", ""),
        tool(1, "c1", "B", '{"b": '),
        tool(1, arguments="2}"),  # B complete while A has no arguments yet: B waits
        tool(0, arguments='{"a": 1'),
        tool(2, "c2", "C", '{"c": 3}'),
        tool(0, arguments="}"),
        finish("tool_calls"),
        "[DONE]",
    )
    _, snapshot = run(stream)
    assert [(b.id, b.input) for b in snapshot.content] == [("c0", {"a": 1}), ("c1", {"b": 2}), ("c2", {"c": 3})]


def test_a_new_id_without_a_name_continues_the_call_on_its_index() -> None:
    stream = openai_sse(tool(0, "c0", "Bash", '{"command": '), tool(0, "other", None, '"ls"}'),
                        finish("tool_calls"), "[DONE]")
    _, snapshot = run(stream)
    assert [(b.id, b.input) for b in snapshot.content] == [("c0", {"command": "ls"})]


def test_fragments_without_index_continue_the_last_call() -> None:
    stream = openai_sse(
        tool(None, "c0", "Bash", '{"command": '), tool(None, arguments='"ls"}'), finish("tool_calls"), "[DONE]"
    )
    _, snapshot = run(stream)
    assert snapshot.content[0].input == {"command": "ls"}


def test_legacy_function_call_delta() -> None:
    stream = openai_sse(
        delta(function_call={"name": "Bash", "arguments": '{"command"'}),
        delta(function_call={"arguments": ': "ls"}'}),
        finish("function_call"),
        "[DONE]",
    )
    _, snapshot = run(stream)
    assert snapshot.content[0].name == "Bash" and snapshot.content[0].input == {"command": "ls"}
    assert snapshot.stop_reason == "tool_use"


def test_choices_other_than_the_first_are_ignored() -> None:
    other = {"choices": [{"index": 1, "delta": {"content": "second choice"}, "finish_reason": None}]}
    _, snapshot = run(openai_sse(delta(content="first"), other, finish(), "[DONE]"))
    assert content_of(snapshot) == [{"type": "text", "text": "first"}]


@pytest.mark.parametrize(
    ("finish_reason", "extra", "stop_reason", "stop_sequence"),
    [
        ("length", {}, "max_tokens", None),
        ("content_filter", {}, "refusal", None),
        ("stop", {"stop_reason": "###"}, "stop_sequence", "###"),
        ("stop", {"stop_reason": 151643}, "end_turn", None),
    ],
)
def test_stop_reasons(finish_reason: str, extra: dict, stop_reason: str, stop_sequence: str | None) -> None:
    _, snapshot = run(openai_sse(delta(content="x"), finish(finish_reason, **extra), "[DONE]"))
    assert (snapshot.stop_reason, snapshot.stop_sequence) == (stop_reason, stop_sequence)


def test_usage_known_early_is_in_message_start() -> None:
    chunk = delta(content="x")
    chunk["usage"] = {"prompt_tokens": 40, "completion_tokens": 1}
    events, _ = run(openai_sse(chunk, finish(), "[DONE]"))
    assert events[0][1]["message"]["usage"]["input_tokens"] == 40


# -- input tolerance --------------------------------------------------------------------------------------------


def test_events_separated_by_single_newlines_are_still_read_one_by_one() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    first = translator.feed(b'data: {"choices":[{"index":0,"delta":{"content":"A"}}]}\n')
    assert b'"text":"A"' in first  # not held until a blank line that never comes
    translator.feed(b'data: {"choices":[{"index":0,"delta":{"content":"B"}}]}\n')
    translator.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\ndata: [DONE]\n')
    assert translator.done


def test_a_json_payload_spread_over_several_data_lines() -> None:
    stream = (b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"joined"}}]}\n\n'
              + openai_sse(finish(), "[DONE]"))
    _, snapshot = run(stream)
    assert content_of(snapshot) == [{"type": "text", "text": "joined"}]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r", b"\n"])
def test_line_ends(line_end: bytes) -> None:
    stream = openai_sse(delta(content="ok"), finish(), "[DONE]").replace(b"\n", line_end)
    reference = translate([openai_sse(delta(content="ok"), finish(), "[DONE]")])
    assert translate([stream]) == reference
    assert translate([bytes([b]) for b in stream]) == reference


def test_bare_json_lines_and_unknown_fields_and_garbage_are_tolerated() -> None:
    stream = (
        b"event: chunk\nid: 1\nretry: 10\n"
        + b'{"choices":[{"index":0,"delta":{"content":"ndjson"}}]}\n'
        + b"data: not json at all\n\n"
        + openai_sse(finish(), "[DONE]")
    )
    _, snapshot = run(stream)
    assert content_of(snapshot) == [{"type": "text", "text": "ndjson"}]


def test_split_inside_a_utf8_character() -> None:
    stream = openai_sse(delta(content="é"), finish(), "[DONE]")
    cut = stream.index("é".encode()) + 1
    _, snapshot = run(stream)
    events = parse_sse(translate([stream[:cut], stream[cut:]]))
    assert accumulate(events).content[0].text == snapshot.content[0].text == "é"


def test_a_large_argument_in_one_byte_pieces() -> None:
    content = "x" * 20_000
    stream = openai_sse(tool(0, "c", "Write", json.dumps({"content": content})), finish("tool_calls"), "[DONE]")
    events = parse_sse(translate([bytes([b]) for b in stream]))
    assert_stream_grammar(events)
    assert accumulate(events).content[0].input == {"content": content}


def test_many_small_chunks_are_translated_one_for_one() -> None:
    translator = StreamTranslator(MODEL, ToolNames())
    outputs = [translator.feed(openai_sse(delta(content=f"{i} "))) for i in range(2000)]
    assert all(b"text_delta" in out for out in outputs)
    translator.feed(openai_sse(finish(), "[DONE]"))
    assert translator.done


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "b\\"}{", "c": [1, {"d": "]"}]}',
        '  {"path": "C:\\\\dir\\\\", "n": "\\u00e9"}',
        '"{\\"double\\": \\"encoded\\"}"',
        "[1, [2, [3]]]",
        "{}",
    ],
)
def test_json_progress_is_complete_exactly_at_the_end_wherever_the_text_is_cut(text: str) -> None:
    json.loads(text)  # the cases are valid JSON
    for cut in range(len(text) + 1):
        for size in (1, 3, len(text) or 1):
            progress = _JsonProgress()
            pieces = [text[:cut]] + [text[i : i + size] for i in range(cut, len(text), size)]
            for number, piece in enumerate(pieces):
                progress.feed(piece)
                seen = "".join(pieces[: number + 1])
                assert progress.complete == (seen.rstrip() == text.rstrip()), (text, cut, size, seen)


def test_json_progress_never_completes_a_scalar() -> None:
    progress = _JsonProgress()
    progress.feed("42")
    assert not progress.complete and progress.first == "4"


def test_crlf_split_between_cr_and_lf_inside_a_multi_line_event() -> None:
    first = b'data: {"choices":[{"index":0,\r'
    rest = b'\ndata: "delta":{"content":"joined"}}]}\r\n\r\n' + openai_sse(finish(), "[DONE]")
    events = parse_sse(translate([first, rest]))
    assert_stream_grammar(events)
    assert content_of(accumulate(events)) == [{"type": "text", "text": "joined"}]


def test_whitespace_dropped_before_a_tool_does_not_reappear_in_later_text() -> None:
    stream = openai_sse(
        delta(content="\n\n"), tool(0, "c", "Read", "{}"), delta(content="After."), finish("tool_calls"), "[DONE]"
    )
    _, snapshot = run(stream)
    assert [b["type"] for b in content_of(snapshot)] == ["tool_use", "text"]
    assert snapshot.content[1].text == "After."


def test_a_surrogate_pair_split_between_two_chunks_never_raises() -> None:
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"party \\ud83c"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"\\udf89!"}}]}\n\n' + openai_sse(finish(), "[DONE]")
    )
    events = parse_sse(translate([stream]))
    assert_stream_grammar(events)
    texts = [d["delta"]["text"] for name, d in events if name == "content_block_delta"]
    assert "".join(texts).encode("utf-16", "surrogatepass").decode("utf-16") == "party 🎉!"


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": True},
        {"choices": [{"index": 0, "delta": "text"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": [1], "function": {"name": "A"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "A"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": 1}}]},
        {"choices": [{"index": 0, "delta": {"content": 5, "reasoning_details": "x"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": 3}]},
        {"usage": [1, 2]},
        [1, 2],
    ],
)
def test_malformed_chunks_never_break_the_stream(chunk: Any) -> None:
    events, _ = run(openai_sse(delta(content="ok"), chunk, finish(), "[DONE]"))
    assert events[-1][0] == "message_stop"
