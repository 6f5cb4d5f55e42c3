"""Property tests (hypothesis): the OpenAI stream translator and the SSE splitter, with their input split
anywhere."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import strategies as st

from addon.openai_request import ToolNames
from addon.openai_stream import StreamTranslator
from addon.sse import SSESplitter
from fuzzing import json_values, maybe, odd_text, quick_and_deep, tool_ids, tool_names, usage, weighted
from helpers import (
    assert_stream_grammar,
    parse_sse,
)

# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


# Pieces of tool-call arguments as providers split them: partial JSON, escapes, double-encoded JSON.
ARGUMENT_PIECES = ['{"a"', ': 1', "}", '{"p": "x\\', '"}', "[1", "]", '"{\\"a\\": 1}"', "", " ", "{}", "nul", "l",
                   '{"s": "}"}']
_TOOL_ID = re.compile(r'"toolu_[0-9a-f]{24}"')


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


stream_delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": maybe(st.one_of(odd_text, st.sampled_from([" ", "\n", "Hello", ""]))),
        "reasoning_content": maybe(odd_text),
        "reasoning": maybe(odd_text),
        "refusal": maybe(odd_text),
        "tool_calls": maybe(st.lists(st.fixed_dictionaries(
            {},
            optional={
                "index": maybe(st.integers(0, 2)), "id": maybe(tool_ids), "type": st.just("function"),
                "function": maybe(st.fixed_dictionaries({}, optional={
                    "name": maybe(tool_names),
                    "arguments": maybe(st.sampled_from(ARGUMENT_PIECES) | odd_text),
                })),
            },
        ), max_size=2)),
        "function_call": maybe(st.fixed_dictionaries({}, optional={"name": tool_names, "arguments": odd_text})),
    },
)


normal_chunk = st.fixed_dictionaries(
    {"choices": maybe(st.lists(st.fixed_dictionaries(
        {"index": maybe(st.sampled_from([0, 0, 0, 1])), "delta": maybe(stream_delta)},
        optional={"finish_reason": maybe(st.sampled_from([None, None, "stop", "length", "tool_calls", "error"])),
                  "stop_reason": maybe(odd_text)},
    ), max_size=2))},
    optional={"id": maybe(st.sampled_from(["chatcmpl-1", "chatcmpl-1", "x y"])), "usage": maybe(usage),
              "object": st.just("chat.completion.chunk")},
)


stream_chunk = weighted(
    (20, normal_chunk),
    (1, st.fixed_dictionaries({"error": maybe(st.fixed_dictionaries(
        {"message": maybe(odd_text), "type": maybe(odd_text), "code": maybe(odd_text)}))})),
    (1, json_values),
)


@st.composite
def openai_stream_bytes(draw: st.DrawFn) -> bytes:
    """A provider's stream: JSON chunks in `data: ...` framing, with the framings real servers use, and junk."""
    out = []
    eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["data"] * 12 + ["nospace", "bare", "comment", "multiline", "done", "junk",
                                                     "event"]))
        payload = json.dumps(draw(stream_chunk), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        if kind == "data":
            out.append(b"data: " + payload + eol + eol)
        elif kind == "nospace":
            out.append(b"data:" + payload + eol)
        elif kind == "bare":
            out.append(payload + eol)
        elif kind == "comment":
            out.append(b": keep-alive" + eol + eol)
        elif kind == "multiline":
            half = len(payload) // 2
            out.append(b"data: " + payload[:half] + eol + b"data: " + payload[half:] + eol + eol)
        elif kind == "done":
            out.append(b"data: [DONE]" + eol + eol)
        elif kind == "event":
            out.append(b"event: " + draw(st.sampled_from([b"error", b"message", b"x"])) + eol)
        else:
            out.append(draw(st.binary(max_size=30)))
    if draw(st.booleans()):
        out.append(b"data: [DONE]" + eol + eol)
    return b"".join(out)


def translate_all(pieces: list[bytes], names: ToolNames) -> tuple[bytes, list[bytes]]:
    translator = StreamTranslator("claude-sonnet-4-5", names, message_id="msg_fuzz")
    outputs = []
    for piece in pieces:
        was_done = translator.done
        output = translator.feed(piece)
        if was_done:
            assert output == b"", "output after the stream had ended"
        outputs.append(output)
    outputs.append(translator.finish())
    assert translator.done
    assert translator.feed(b"data: [DONE]\n\n") == b"" and translator.finish() == b""
    return b"".join(outputs), outputs


def _normalized(events: list[tuple[str, Any]]) -> str:
    return _TOOL_ID.sub('"toolu_RANDOM"', json.dumps(events))


stream_names = st.sampled_from([ToolNames(), ToolNames(to_openai={"a b": "a_b_1"}, to_anthropic={"a_b_1": "a b"})])


@quick_and_deep(300, stream=openai_stream_bytes(), cuts=st.lists(st.integers(0, 10**6), max_size=8),
                names=stream_names)
def test_stream_translator_json_chunks_split_anywhere(stream, cuts, names):
    whole, _ = translate_all([stream], names)
    split, outputs = translate_all(_split(stream, cuts), names)
    events = parse_sse(split)
    assert_stream_grammar(events, finished=True)
    for output in outputs:  # every piece of output is whole events
        parse_sse(output)
    assert _normalized(parse_sse(whole)) == _normalized(events), "the output depends on how the input was split"


@quick_and_deep(200, stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10**6), max_size=6),
                names=stream_names)
def test_stream_translator_random_bytes(stream, cuts, names):
    output, outputs = translate_all(_split(stream, cuts), names)
    assert_stream_grammar(parse_sse(output), finished=True)
    for piece in outputs:
        parse_sse(piece)


sse_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r", b"data: x", b"event: e",
                              b":c", b"data:", b"\xe2\x82", b"\xac", b"\xff", b"id: 1", b" ", b"{}"]),
             max_size=30).map(b"".join),
)


@quick_and_deep(300, data=sse_bytes, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_sse_splitter_gives_the_same_events_however_the_bytes_are_split(data, cuts):
    whole = SSESplitter()
    expected = whole.feed(data)
    split = SSESplitter()
    events = [event for piece in _split(data, cuts) for event in split.feed(piece)]
    assert [(e.event, e.data, e.raw) for e in events] == [(e.event, e.data, e.raw) for e in expected]
    assert split.pending() == whole.pending()
