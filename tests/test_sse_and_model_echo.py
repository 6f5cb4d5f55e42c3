"""Unit tests for addon/sse.py (SSESplitter) and addon/model_echo.py (the requested model in answers)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest

from addon.model_echo import StreamModelEcho, echo_model_in_body, echo_model_in_json, echo_model_in_stream
from addon.sse import SSEEvent, SSESplitter, format_event, parse_event


def split_all(stream: bytes, cuts: list[int]) -> list[bytes]:
    """`stream` cut at the given offsets (sorted, may repeat, giving empty chunks)."""
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def feed_chunks(chunks: list[bytes]) -> tuple[list[SSEEvent], bytes]:
    splitter = SSESplitter()
    events = [event for chunk in chunks for event in splitter.feed(chunk)]
    return events, splitter.pending()


def as_tuples(events: list[SSEEvent]) -> list[tuple[str | None, str, bytes]]:
    return [(e.event, e.data, e.raw) for e in events]


# --- SSESplitter -------------------------------------------------------------------------------------


def test_lf_events() -> None:
    events, pending = feed_chunks([b"event: ping\ndata: {\"type\": \"ping\"}\n\nevent: done\ndata: 1\n\n"])
    assert as_tuples(events) == [
        ("ping", '{"type": "ping"}', b'event: ping\ndata: {"type": "ping"}\n\n'),
        ("done", "1", b"event: done\ndata: 1\n\n"),
    ]
    assert events[0].json() == {"type": "ping"}
    assert pending == b""


def test_crlf_events() -> None:
    events, pending = feed_chunks([b"event: a\r\ndata: one\r\n\r\nevent: b\r\ndata: two\r\n\r\n"])
    assert as_tuples(events) == [
        ("a", "one", b"event: a\r\ndata: one\r\n\r\n"),
        ("b", "two", b"event: b\r\ndata: two\r\n\r\n"),
    ]
    assert pending == b""


def test_cr_only_events() -> None:
    events, _ = feed_chunks([b"event: a\rdata: one\r\r"])
    assert [(e.event, e.data) for e in events] == [("a", "one")]


def test_comment_lines_are_ignored() -> None:
    events, _ = feed_chunks([b": keep-alive\n\nevent: x\n: inline comment\ndata: payload\n\n"])
    assert [(e.event, e.data) for e in events] == [(None, ""), ("x", "payload")]


def test_data_without_space_and_with_extra_space() -> None:
    events, _ = feed_chunks([b"event:tight\ndata:{\"a\":1}\n\ndata:  two spaces\n\n"])
    assert events[0].event == "tight"
    assert events[0].json() == {"a": 1}
    assert events[1].data == " two spaces"  # only the first space is removed


def test_multi_line_data_is_joined_with_newlines() -> None:
    events, _ = feed_chunks([b"event: m\ndata: first\ndata:second\ndata: third\n\n"])
    assert (events[0].event, events[0].data) == ("m", "first\nsecond\nthird")


def test_data_field_without_colon_gives_empty_line() -> None:
    events, _ = feed_chunks([b"data\ndata: x\n\n"])
    assert events[0].data == "\nx"


def test_unknown_fields_are_ignored() -> None:
    events, _ = feed_chunks([b"id: 7\nretry: 100\nevent: e\ndata: d\n\n"])
    assert (events[0].event, events[0].data) == ("e", "d")


def test_incomplete_event_waits_in_pending() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"event: a\ndata: x\n") == []
    assert splitter.pending() == b"event: a\ndata: x\n"
    events = splitter.feed(b"\nevent: b\ndata: partial")
    assert [(e.event, e.data) for e in events] == [("a", "x")]
    assert splitter.pending() == b"event: b\ndata: partial"


def test_empty_chunks_are_harmless() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"") == []
    assert splitter.feed(b"data: 1\n\n")[0].data == "1"
    assert splitter.feed(b"") == []


# A stream exercising everything: LF and CRLF events, a comment, `data:` without a space, multi-line
# data, and multi-byte UTF-8 ("é" is 2 bytes, "€" 3 bytes, "🌍" 4 bytes) inside events.
MIXED_STREAM = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"model":"m","content":[]}}\n\n'
    ": ping comment\n\n"
    "event: content_block_delta\r\n"
    'data: {"type":"content_block_delta","delta":{"text":"café 🌍"}}\r\n\r\n'
    "event:tight\n"
    "data:€ no space\n\n"
    "event: multi\n"
    "data: line é one\n"
    "data: line two 🌍\n\n"
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n\n'
).encode()


def test_mixed_stream_whole() -> None:
    events, pending = feed_chunks([MIXED_STREAM])
    assert [(e.event, e.data) for e in events] == [
        ("message_start", '{"type":"message_start","message":{"model":"m","content":[]}}'),
        (None, ""),
        ("content_block_delta", '{"type":"content_block_delta","delta":{"text":"café 🌍"}}'),
        ("tight", "€ no space"),
        ("multi", "line é one\nline two 🌍"),
        ("message_stop", '{"type":"message_stop"}'),
    ]
    assert b"".join(e.raw for e in events) == MIXED_STREAM
    assert pending == b""


def test_split_at_every_byte_offset_gives_the_same_events() -> None:
    expected = as_tuples(feed_chunks([MIXED_STREAM])[0])
    for cut in range(len(MIXED_STREAM) + 1):
        events, pending = feed_chunks(split_all(MIXED_STREAM, [cut]))
        assert as_tuples(events) == expected, f"split at byte {cut}"
        assert pending == b""


def test_byte_by_byte_gives_the_same_events() -> None:
    expected = as_tuples(feed_chunks([MIXED_STREAM])[0])
    events, pending = feed_chunks([MIXED_STREAM[i : i + 1] for i in range(len(MIXED_STREAM))])
    assert as_tuples(events) == expected
    assert pending == b""


def test_split_inside_a_multibyte_character() -> None:
    stream = "data: é🌍\n\n".encode()
    start = stream.index("🌍".encode())
    for cut in range(start + 1, start + 4):  # each cut lands inside the 4-byte emoji
        events, _ = feed_chunks(split_all(stream, [cut]))
        assert [e.data for e in events] == ["é🌍"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separators_inside_data_are_kept(separator: str) -> None:
    payload = json.dumps({"text": f"a{separator}b"}, ensure_ascii=False)
    events, _ = feed_chunks([f"event: content_block_delta\ndata: {payload}\n\n".encode()])
    assert events[0].data == payload


def test_parse_and_format_round_trip() -> None:
    raw = format_event("message_start", {"type": "message_start", "message": {"model": "é"}})
    assert raw == 'event: message_start\ndata: {"type":"message_start","message":{"model":"é"}}\n\n'.encode()
    event = parse_event(raw)
    assert event.event == "message_start"
    assert event.json() == {"type": "message_start", "message": {"model": "é"}}


# --- StreamModelEcho ---------------------------------------------------------------------------------

PROVIDER_MODEL = "provider-big-model-v2"
REQUESTED_MODEL = "claude-sonnet-4-5-20250929"


def sample_stream(model: str) -> bytes:
    """A short Anthropic stream in the wire format Anthropic uses (compact JSON, LF line endings)."""
    message_start = {
        "type": "message_start",
        "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    }
    text_block = {"type": "text", "text": ""}
    text_delta = {"type": "text_delta", "text": "Héllo 🌍"}
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    events = [
        ("message_start", message_start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": text_block}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text_delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(format_event(name, data) for name, data in events)


UPSTREAM = sample_stream(PROVIDER_MODEL)
EXPECTED = sample_stream(REQUESTED_MODEL)


def echo(chunks: list[bytes], model: str = REQUESTED_MODEL) -> bytes:
    echoer = StreamModelEcho(model)
    return b"".join(echoer.feed(chunk) for chunk in chunks) + echoer.flush()


def test_sample_differs_only_in_the_model() -> None:
    assert UPSTREAM.replace(PROVIDER_MODEL.encode(), REQUESTED_MODEL.encode()) == EXPECTED
    assert UPSTREAM.count(PROVIDER_MODEL.encode()) == 1


def test_stream_echo_whole_stream() -> None:
    assert echo([UPSTREAM]) == EXPECTED


def test_stream_echo_every_two_chunk_split() -> None:
    for cut in range(len(UPSTREAM) + 1):
        assert echo(split_all(UPSTREAM, [cut])) == EXPECTED, f"split at byte {cut}"


def shortened(stream: bytes, keep: tuple[str, ...]) -> bytes:
    return b"".join(e.raw for e in SSESplitter().feed(stream) if e.event in keep)


@pytest.mark.slow
def test_stream_echo_every_three_chunk_split() -> None:
    # A shorter stream (every pair of cuts grows with the square of the length), still with multi-byte text.
    keep = ("message_start", "content_block_delta", "message_stop")
    upstream, expected = shortened(UPSTREAM, keep), shortened(EXPECTED, keep)
    assert "🌍".encode() in upstream
    assert upstream.replace(PROVIDER_MODEL.encode(), REQUESTED_MODEL.encode()) == expected
    size = len(upstream)
    for first in range(size + 1):
        for second in range(first, size + 1):
            assert echo(split_all(upstream, [first, second])) == expected, f"split at bytes {first}, {second}"


def test_stream_echo_byte_by_byte() -> None:
    assert echo([UPSTREAM[i : i + 1] for i in range(len(UPSTREAM))]) == EXPECTED


def test_stream_echo_everything_after_message_start_passes_straight_through() -> None:
    echoer = StreamModelEcho(REQUESTED_MODEL)
    end_of_start = UPSTREAM.index(b"\n\n") + 2
    head = echoer.feed(UPSTREAM[: end_of_start + 5])
    assert head == EXPECTED[: EXPECTED.index(b"\n\n") + 2] + UPSTREAM[end_of_start : end_of_start + 5]
    # Once message_start is seen, later chunks are returned as they are, even an incomplete event.
    assert echoer.feed(b"event: half") == b"event: half"
    assert echoer.flush() == b""


def test_stream_echo_same_model_keeps_bytes() -> None:
    assert echo([UPSTREAM], PROVIDER_MODEL) == UPSTREAM


def test_stream_echo_crlf_stream_keeps_all_other_events() -> None:
    crlf = UPSTREAM.replace(b"\n", b"\r\n")
    out = echo([crlf])
    start_end = crlf.index(b"\r\n\r\n") + 4
    assert out.endswith(crlf[start_end:])
    rewritten = parse_event(out[: len(out) - len(crlf) + start_end])
    assert rewritten.event == "message_start"
    assert rewritten.json()["message"]["model"] == REQUESTED_MODEL


def test_stream_echo_without_message_start_changes_nothing() -> None:
    stream = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\nunterminated"
    for cut in range(len(stream) + 1):
        assert echo(split_all(stream, [cut])) == stream


def test_stream_echo_malformed_message_start_passes_through() -> None:
    stream = b"event: message_start\ndata: not json\n\nevent: message_stop\ndata: {}\n\n"
    assert echo([stream]) == stream


def test_stream_echo_gives_up_after_search_limit() -> None:
    echoer = StreamModelEcho(REQUESTED_MODEL)
    big = b"data: " + b"x" * (70 * 1024)  # no event boundary: held back until the limit is passed
    assert echoer.feed(big) == big
    assert echoer.feed(UPSTREAM) == UPSTREAM  # no longer looking: message_start is left alone


def test_echo_model_in_stream_async() -> None:
    async def source() -> AsyncIterator[bytes]:
        for chunk in split_all(UPSTREAM, [10, 200, 201]):
            yield chunk

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in echo_model_in_stream(source(), REQUESTED_MODEL)])

    assert asyncio.run(collect()) == EXPECTED


# --- echo_model_in_json ------------------------------------------------------------------------------


def test_echo_model_in_json_rewrites_message_model() -> None:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": PROVIDER_MODEL,
        "content": [{"type": "text", "text": "Grüße 🌍"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    out = echo_model_in_json(json.dumps(message).encode(), REQUESTED_MODEL)
    assert json.loads(out) == {**message, "model": REQUESTED_MODEL}
    assert list(json.loads(out)) == list(message)
    assert "Grüße 🌍".encode() in out


def test_echo_model_in_json_same_model_keeps_bytes() -> None:
    body = json.dumps({"type": "message", "model": REQUESTED_MODEL}, indent=4).encode()
    assert echo_model_in_json(body, REQUESTED_MODEL) is body


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        b'{"input_tokens": 42}',  # count_tokens answer: no model
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        b"[1, 2, 3]",
        b'"model"',
        b"\xff\xfe\x00garbage",
    ],
)
def test_echo_model_in_json_leaves_other_bodies_alone(body: bytes) -> None:
    assert echo_model_in_json(body, REQUESTED_MODEL) is body


def test_echo_model_in_body_async() -> None:
    body = json.dumps({"type": "message", "model": PROVIDER_MODEL}).encode()

    async def source() -> AsyncIterator[bytes]:
        yield body[:7]
        yield body[7:]

    async def collect() -> list[bytes]:
        return [chunk async for chunk in echo_model_in_body(source(), REQUESTED_MODEL)]

    (out,) = asyncio.run(collect())
    assert json.loads(out) == {"type": "message", "model": REQUESTED_MODEL}
