"""The stream guard's event checks (stream_guard.py) and the end of a translated OpenAI stream: what reaches the
client before and after the commit point when a provider sends events a client cannot parse, or its own error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from addon.anthropic_events import PING, check_event
from addon.error_text import REASON_CHARS
from addon.errors import MAX_MESSAGE_CHARS
from addon.openai_request import ToolNames
from addon.openai_stream import StreamTranslator
from addon.redact import Redactor
from addon.sse import SSESplitter
from addon.stream_guard import CommittedStream, StreamFailure, hold_until_content
from fakes import python_traceback
from helpers import error_event, raw_event, stream_events

KEY = "sk-ant-api03-EchoedProviderKey-0123456789abcdef"
CLEANED = "ValueError: invalid x-api-key [redacted] for [path]"
EVENTS = stream_events(pieces=["one", "two"])  # message_start, block start, ping, 2 deltas, stop, delta, stop
OPENING, FIRST, REST = EVENTS[:3], EVENTS[3], EVENTS[4:]
INVALID = raw_event("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"text": "cu')


class Stream:
    """A CommittedStream fed event by event, with its failures and output kept."""

    def __init__(self, redact: Redactor | None = None) -> None:
        self.failures: list[tuple[str, str]] = []
        self.stream = CommittedStream(SSESplitter(), lambda r, k: self.failures.append((r, k)), redact or str)
        self.out = b""

    def feed(self, *events: bytes) -> Stream:
        for event in events:
            self.out += self.stream.feed(event)
        return self

    def end(self) -> Stream:
        self.out += self.stream.end()
        return self

    def error(self) -> dict:
        _head, _, last = self.out.rstrip(b"\n").rpartition(b"\n\n")
        event = check_event(last + b"\n\n")
        assert event.name == "error", self.out[-300:]
        assert event.data is not None
        return event.data["error"]


def test_an_invalid_event_ends_the_stream_and_nothing_of_it_or_after_it_passes() -> None:
    s = Stream().feed(FIRST, INVALID, *REST).end()
    assert s.out.startswith(FIRST)
    assert b'"cu' not in s.out and b"two" not in s.out
    assert s.error() == {"type": "api_error", "message": "the provider sent an invalid event mid-stream: "
                                                         "content_block_delta event whose data is not JSON"}
    assert s.failures == [(s.error()["message"], "stream_error")]
    assert s.stream.failed and not s.stream.complete


@pytest.mark.parametrize("data", ["", " "], ids=["empty", "space"])
def test_events_without_data_and_comments_pass(data: str) -> None:
    keepalive = b": keep-alive\n\n" + f"event: ping\ndata:{data}\n\n".encode()
    s = Stream().feed(FIRST, keepalive, *REST).end()
    assert s.out == FIRST + keepalive + b"".join(REST)
    assert s.failures == []


def test_a_ping_that_is_not_json_is_replaced_before_and_after_the_commit_point() -> None:
    ping = raw_event("ping", "keep-alive")
    opening = hold([b"".join([ping, *OPENING, FIRST, ping, *REST])])  # one chunk: the rest comes in `after`
    assert opening.held == PING + b"".join(OPENING) + FIRST
    assert opening.after == [ping, *REST]
    s = Stream()
    s.out = s.stream.take(opening.after)
    assert s.out == PING + b"".join(REST)
    assert s.failures == []


def test_the_providers_error_reaches_the_client_redacted_without_frames_and_bounded() -> None:
    s = Stream(Redactor([KEY])).feed(FIRST, error_event("api_error", python_traceback(KEY)), *REST)
    assert s.error() == {"type": "api_error", "message": CLEANED}
    assert s.failures == [(f"error event mid-stream: api_error: {CLEANED}", "stream_error")]
    assert KEY.encode() not in s.out and b"two" not in s.out  # nothing after the error


def test_a_long_provider_error_is_cut_and_its_reason_shorter() -> None:
    s = Stream().feed(FIRST, error_event("overloaded_error", "Overloaded " + "x" * 30_000))
    assert len(s.error()["message"]) == MAX_MESSAGE_CHARS
    ((reason, kind),) = s.failures
    assert len(reason) == REASON_CHARS and kind == "overloaded"


@pytest.mark.parametrize("error", [{"type": "Not A Type!", "message": "m"}, {"type": "x" * 100, "message": "m"},
                                   {"type": 3, "message": "m"}, "just a string", None])
def test_an_odd_error_type_becomes_api_error(error) -> None:
    s = Stream().feed(FIRST, b"event: error\ndata: " + json.dumps({"type": "error", "error": error}).encode() + b"\n\n")
    assert s.error()["type"] == "api_error"
    assert s.error()["message"]  # never empty


def test_our_own_error_is_redacted_and_bounded() -> None:
    s = Stream(Redactor([KEY]))
    out = s.stream.fail(f"the provider's stream broke off: {KEY} " + "y" * 5000)
    assert KEY.encode() not in out
    (event,) = SSESplitter().feed(out)
    assert len(json.loads(event.data)["error"]["message"]) == MAX_MESSAGE_CHARS
    assert len(s.failures[0][0]) == REASON_CHARS


def test_nothing_after_message_stop_is_passed_on() -> None:
    s = Stream().feed(FIRST, *REST, INVALID, error_event()).end()
    assert s.out == FIRST + b"".join(REST)
    assert s.stream.complete and s.failures == []


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    s = Stream().feed(FIRST, *REST[:-1], REST[-1].rstrip(b"\n")).end()
    assert s.out == FIRST + b"".join(REST)
    assert s.stream.complete and s.failures == []


def test_a_last_event_cut_short_is_dropped_and_the_end_is_an_error() -> None:
    s = Stream().feed(FIRST, REST[0][:40]).end()
    assert s.error()["message"] == "the provider's stream ended before message_stop"
    assert s.out == FIRST + b"event: error\ndata: " + json.dumps({"type": "error", "error": s.error()}).encode() \
        + b"\n\n"


# -- before the commit point ---------------------------------------------------------------------------------------

async def chunks_of(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def hold(parts: list[bytes]):
    return asyncio.run(hold_until_content(chunks_of(parts), time.monotonic() + 5))


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_an_invalid_event_before_content_is_a_failure(position: int) -> None:
    events = [*OPENING, FIRST]
    events[position] = raw_event("x", "{not json")
    with pytest.raises(StreamFailure) as caught:
        hold(events)
    assert caught.value.kind == "stream_error"
    assert caught.value.reason == "invalid event before content: x event whose data is not JSON"


def test_comments_before_content_are_no_failure() -> None:
    opening = hold([b": hello\n\n", *OPENING, FIRST, *REST])
    assert opening.held == b": hello\n\n" + b"".join(OPENING) + FIRST
    assert opening.after == []


def test_an_error_before_content_gives_a_short_reason_without_paths() -> None:
    with pytest.raises(StreamFailure) as caught:
        hold([*OPENING, error_event("api_error", python_traceback(KEY))])
    assert caught.value.reason == f"error event before content: api_error: {CLEANED.replace('[redacted]', KEY)}"


# -- the end of a translated OpenAI stream -------------------------------------------------------------------------

def test_a_translated_error_message_is_redacted_without_frames_and_bounded() -> None:
    translator = StreamTranslator("claude-sonnet-4", ToolNames(), redact=Redactor([KEY]))
    content = b'data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n'
    error = b"data: " + json.dumps({"error": {"message": python_traceback(KEY)}}).encode() + b"\n\n"
    out = translator.feed(content) + translator.feed(error)
    last = SSESplitter().feed(out)[-1]
    assert last.event == "error"
    assert json.loads(last.data) == {"type": "error", "error": {"type": "api_error", "message": CLEANED}}


def test_a_translated_error_with_nothing_left_says_so() -> None:
    translator = StreamTranslator("claude-sonnet-4", ToolNames())
    message = 'Traceback (most recent call last):\n  File "/a/b.py", line 1, in f'
    last = SSESplitter().feed(translator.feed(f"data: {json.dumps({'error': {'message': message}})}\n\n".encode()))[-1]
    assert json.loads(last.data)["error"]["message"] == "the provider reported an error mid-stream"
