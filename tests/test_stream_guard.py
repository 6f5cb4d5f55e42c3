"""The stream guard (stream_guard.py): holding a stream until its first content (the commit point), the end
watch of a committed stream, and `guarded`, which ends a broken stream with an error event. Chunk sources are
async generators; no network, no sleeps."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest

from addon.health import OVERLOADED, STREAM_ERROR, TIMEOUT
from addon.sse import SSESplitter
from addon.stream_guard import CommittedStream, StreamFailure, guarded, hold_until_content
from helpers import sse

MESSAGE_START = sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "role": "assistant",
                                                                        "content": [], "model": "claude-x"}})
BLOCK_START = sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
PING = sse("ping", {"type": "ping"})
DELTA = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "Hello, w\u00f6rld"}})
DELTA2 = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": " and more"}})
BLOCK_STOP = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_DELTA = sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                      "usage": {"output_tokens": 5}})
MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})
OVERLOADED_EVENT = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
API_ERROR_EVENT = sse("error", {"type": "error", "error": {"type": "api_error", "message": "Internal error"}})

OPENING = MESSAGE_START + BLOCK_START + PING
FULL_STREAM = OPENING + DELTA + DELTA2 + BLOCK_STOP + MESSAGE_DELTA + MESSAGE_STOP


async def chunks_of(parts: Iterable[bytes], then: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if then is not None:
        raise then


def split_at(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    cuts = [0, *sorted(set(offsets)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def expected_held(parts: list[bytes], commit_end: int) -> bytes:
    """The chunks up to and including the one in which byte `commit_end - 1` (the event's end) arrives."""
    out = b""
    for part in parts:
        out += part
        if len(out) >= commit_end:
            return out
    raise AssertionError("the commit event never completes")


def hold(parts: list[bytes], timeout: float = 5.0, then: BaseException | None = None) -> bytes:
    """Every byte read before the commit point was seen: the opening, the events after it, an unfinished one."""
    opening = asyncio.run(hold_until_content(chunks_of(parts, then), time.monotonic() + timeout))
    return opening.held + b"".join(opening.after) + opening.splitter.pending()


def hold_failure(parts: list[bytes], then: BaseException | None = None) -> StreamFailure:
    with pytest.raises(StreamFailure) as caught:
        hold(parts, then=then)
    return caught.value


def test_hold_returns_everything_up_to_the_first_content_delta() -> None:
    parts = [MESSAGE_START, BLOCK_START, PING, DELTA, DELTA2, MESSAGE_STOP]
    assert hold(parts) == OPENING + DELTA


def test_hold_returns_the_whole_chunk_holding_the_delta() -> None:
    parts = [OPENING, DELTA + DELTA2 + BLOCK_STOP]
    assert hold(parts) == OPENING + DELTA + DELTA2 + BLOCK_STOP


def test_hold_with_a_split_at_every_offset() -> None:
    commit_end = len(OPENING + DELTA)
    for cut in range(1, len(FULL_STREAM)):
        parts = split_at(FULL_STREAM, [cut])
        assert hold(parts) == expected_held(parts, commit_end), f"split at byte {cut}"


def test_hold_with_two_splits_around_the_delta() -> None:
    start, end = len(OPENING) - 10, len(OPENING + DELTA) + 10
    for first in range(start, end, 3):
        for second in range(first + 1, end + 5, 4):
            parts = split_at(FULL_STREAM, [first, second])
            assert hold(parts) == expected_held(parts, len(OPENING + DELTA)), f"splits at {first}, {second}"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, 10_000])
def test_hold_with_chunks_of_every_size(size: int) -> None:
    parts = [FULL_STREAM[i : i + size] for i in range(0, len(FULL_STREAM), size)]
    commit_end = len(OPENING + DELTA)
    held = hold(parts)
    assert held == expected_held(parts, commit_end)
    assert held.startswith(OPENING + DELTA)


@pytest.mark.parametrize("seed", range(20))
def test_hold_with_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    parts = split_at(FULL_STREAM, rng.sample(range(1, len(FULL_STREAM)), rng.randint(1, 40)))
    assert hold(parts) == expected_held(parts, len(OPENING + DELTA))


def test_hold_handles_crlf_line_ends() -> None:
    crlf = FULL_STREAM.replace(b"\n", b"\r\n")
    parts = split_at(crlf, range(3, len(crlf), 11))
    held = hold(parts)
    assert held.startswith((OPENING + DELTA).replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("commit", [MESSAGE_DELTA, MESSAGE_STOP], ids=["message_delta", "message_stop"])
def test_hold_commits_on_message_delta_or_stop_without_content(commit: bytes) -> None:
    parts = [MESSAGE_START, commit, MESSAGE_STOP]
    assert hold(parts) == MESSAGE_START + commit


def test_hold_commits_on_message_delta_for_an_empty_answer() -> None:
    stream = MESSAGE_START + MESSAGE_DELTA + MESSAGE_STOP
    parts = split_at(stream, [len(MESSAGE_START) + 5])
    assert hold(parts) == expected_held(parts, len(MESSAGE_START + MESSAGE_DELTA))


@pytest.mark.parametrize("cut", [0, 1, 7, 20, 40])
def test_hold_overloaded_error_before_content(cut: int) -> None:
    stream = MESSAGE_START + OVERLOADED_EVENT
    parts = split_at(stream, [len(MESSAGE_START) + cut] if cut else [])
    failure = hold_failure(parts)
    assert failure.kind == OVERLOADED == "overloaded"
    assert "overloaded_error" in failure.reason
    assert "Overloaded" in failure.reason


def test_hold_overloaded_error_as_first_event() -> None:
    failure = hold_failure([OVERLOADED_EVENT])
    assert failure.kind == "overloaded"


def test_hold_other_error_event_before_content() -> None:
    failure = hold_failure([OPENING, API_ERROR_EVENT])
    assert failure.kind == STREAM_ERROR == "stream_error"
    assert "api_error" in failure.reason


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"error": "just a string"}', b"{}"])
def test_hold_malformed_error_event_is_a_stream_error(data: bytes) -> None:
    failure = hold_failure([MESSAGE_START, b"event: error\ndata: " + data + b"\n\n"])
    assert failure.kind == "stream_error"


def test_hold_error_event_after_content_is_not_looked_at() -> None:
    parts = [OPENING, DELTA + OVERLOADED_EVENT]
    assert hold(parts) == OPENING + DELTA + OVERLOADED_EVENT


@pytest.mark.parametrize(
    "parts", [[], [MESSAGE_START], [OPENING], [OPENING, DELTA[:-2]]], ids=["empty", "start", "opening", "unfinished"]
)
def test_hold_stream_ending_before_content(parts: list[bytes]) -> None:
    failure = hold_failure(parts)
    assert failure.kind == "stream_error"
    assert "ended" in failure.reason


def test_hold_stream_breaking_before_content() -> None:
    failure = hold_failure([MESSAGE_START], then=httpx.ReadError("connection lost"))
    assert failure.kind == "stream_error"
    assert "broke" in failure.reason


def test_hold_times_out_when_the_provider_goes_silent() -> None:
    async def silent() -> AsyncIterator[bytes]:
        yield MESSAGE_START
        await asyncio.Event().wait()  # never set: the provider says nothing more
        yield DELTA  # pragma: no cover

    async def run() -> StreamFailure:
        started = time.monotonic()
        with pytest.raises(StreamFailure) as caught:
            await hold_until_content(silent(), started + 0.05)
        assert time.monotonic() - started < 5  # bounded: the deadline, not the never-firing event, ended it
        return caught.value

    failure = asyncio.run(run())
    assert failure.kind == TIMEOUT == "timeout"
    assert "deadline" in failure.reason


def test_hold_with_a_deadline_already_past() -> None:
    async def run() -> StreamFailure:
        with pytest.raises(StreamFailure) as caught:
            await hold_until_content(chunks_of([FULL_STREAM]), time.monotonic() - 1)
        return caught.value

    assert asyncio.run(run()).kind == "timeout"


# --- CommittedStream ---------------------------------------------------------------------------------


def committed_all(parts: Iterable[bytes]) -> tuple[CommittedStream, bytes, list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []
    stream = CommittedStream(SSESplitter(), lambda reason, kind: calls.append((reason, kind)))
    out = b"".join(stream.feed(part) for part in parts)
    return stream, out, calls


def test_committed_stream_sees_no_end_in_an_opening() -> None:
    stream, out, calls = committed_all([OPENING, DELTA, DELTA2, BLOCK_STOP, MESSAGE_DELTA])
    assert not stream.complete and not stream.failed and calls == []
    assert out == OPENING + DELTA + DELTA2 + BLOCK_STOP + MESSAGE_DELTA


def test_committed_stream_message_stop_split_anywhere() -> None:
    stream = DELTA + MESSAGE_STOP
    for cut in range(1, len(stream)):
        watch, out, _ = committed_all(split_at(stream, [cut]))
        assert watch.complete, f"split at byte {cut}"
        assert not watch.failed and out == stream


def test_committed_stream_message_stop_byte_by_byte() -> None:
    stream = DELTA2 + MESSAGE_DELTA + MESSAGE_STOP
    watch, out, _ = committed_all(stream[i : i + 1] for i in range(len(stream)))
    assert watch.complete and out == stream


def test_committed_stream_message_stop_without_space() -> None:
    stream = DELTA + b'event:message_stop\ndata: {"type":"message_stop"}\n\n'
    assert committed_all(split_at(stream, [len(DELTA) + 9]))[0].complete


def test_committed_stream_overloaded_error_split_anywhere() -> None:
    stream = DELTA + OVERLOADED_EVENT
    for cut in range(1, len(stream)):
        watch, _out, calls = committed_all(split_at(stream, [cut]))
        assert watch.failed and not watch.complete, f"split at byte {cut}"
        assert [kind for _, kind in calls] == ["overloaded"]


def test_committed_stream_error_byte_by_byte() -> None:
    stream = DELTA + API_ERROR_EVENT
    watch, _, calls = committed_all(stream[i : i + 1] for i in range(len(stream)))
    assert watch.failed
    assert [kind for _, kind in calls] == ["stream_error"]


@pytest.mark.parametrize("size", [2, 3, 5, 9])
def test_committed_stream_mark_split_over_several_small_chunks(size: int) -> None:
    stream = DELTA + MESSAGE_STOP
    watch, out, _ = committed_all(stream[i : i + size] for i in range(0, len(stream), size))
    assert watch.complete and out == stream


# --- guarded -----------------------------------------------------------------------------------------


class Failures:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, reason: str, kind: str) -> None:
        self.calls.append((reason, kind))


def run_guarded(held: bytes, rest: list[bytes], then: BaseException | None = None,
                idle_timeout: float = 300.0) -> tuple[list[bytes], Failures]:
    failures = Failures()

    async def collect() -> list[bytes]:
        opening = await hold_until_content(chunks_of([held]), time.monotonic() + 5)
        return [chunk async for chunk in guarded(opening, chunks_of(rest, then), failures, idle_timeout)]

    return asyncio.run(collect()), failures


def appended_error(out: bytes, prefix: bytes) -> dict:
    assert out.startswith(prefix)
    tail = out[len(prefix):]
    assert tail.startswith(b"event: error\ndata: ")
    assert tail.endswith(b"\n\n")
    return json.loads(tail[len(b"event: error\ndata: "):-2])


def test_guarded_clean_stream_passes_through_unchanged() -> None:
    held = OPENING + DELTA
    rest = [DELTA2, BLOCK_STOP, MESSAGE_DELTA[:10], MESSAGE_DELTA[10:] + MESSAGE_STOP[:5], MESSAGE_STOP[5:]]
    out, failures = run_guarded(held, rest)
    assert out == [held, DELTA2, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP]  # byte for byte, in whole events
    assert failures.calls == []


def test_guarded_clean_stream_entirely_held() -> None:
    out, failures = run_guarded(FULL_STREAM, [])
    assert b"".join(out) == FULL_STREAM
    assert failures.calls == []


def test_guarded_end_without_message_stop_appends_an_error() -> None:
    held = OPENING + DELTA
    rest = [DELTA2, BLOCK_STOP]
    out, failures = run_guarded(held, rest)
    assert out[: len(rest) + 1] == [held, *rest]
    error = appended_error(b"".join(out), held + b"".join(rest))
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "message_stop" in reason
    assert error["error"]["message"] == reason


def test_guarded_read_error_midway_appends_an_error() -> None:
    held = OPENING + DELTA
    rest = [DELTA2]
    out, failures = run_guarded(held, rest, then=httpx.ReadError("peer vanished"))
    error = appended_error(b"".join(out), held + DELTA2)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "broke off" in reason
    assert error["error"]["message"] == reason


def test_guarded_remote_protocol_error_midway_appends_an_error() -> None:
    out, failures = run_guarded(OPENING + DELTA, [], then=httpx.RemoteProtocolError("incomplete chunked read"))
    appended_error(b"".join(out), OPENING + DELTA)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "closed" in reason or "broke" in reason


def test_guarded_idle_timeout_appends_an_error() -> None:
    held = OPENING + DELTA
    out, failures = run_guarded(held, [DELTA2], then=httpx.ReadTimeout("read timed out"), idle_timeout=42)
    error = appended_error(b"".join(out), held + DELTA2)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "idle" in reason
    assert "42s" in reason
    assert error["error"]["message"] == reason


@pytest.mark.parametrize("cut", [0, 3, 15, 30])
def test_guarded_provider_overloaded_error_midstream_adds_nothing(cut: int) -> None:
    held = OPENING + DELTA
    rest = split_at(DELTA2 + OVERLOADED_EVENT, [len(DELTA2) + cut] if cut else [])
    out, failures = run_guarded(held, rest)
    error = appended_error(b"".join(out), held + DELTA2)  # the provider's own error ends the stream
    assert error == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert failures.calls == [("error event mid-stream: overloaded_error: Overloaded", "overloaded")]


def test_guarded_provider_other_error_midstream_adds_nothing() -> None:
    held = OPENING + DELTA
    out, failures = run_guarded(held, [API_ERROR_EVENT])
    error = appended_error(b"".join(out), held)
    assert error == {"type": "error", "error": {"type": "api_error", "message": "Internal error"}}
    assert failures.calls == [("error event mid-stream: api_error: Internal error", "stream_error")]


def test_guarded_clean_stream_calls_nothing() -> None:
    out, failures = run_guarded(OPENING + DELTA, [DELTA2, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP])
    assert b"".join(out) == FULL_STREAM
    assert failures.calls == []


def test_guarded_text_mentioning_an_error_event_is_not_a_failure() -> None:
    text = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "the server sends event: error then"}})
    _out, failures = run_guarded(OPENING + DELTA, [text, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP])
    assert failures.calls == []


def test_guarded_text_mentioning_message_stop_does_not_hide_a_truncation() -> None:
    text = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "it ends with event: message_stop"}})
    out, failures = run_guarded(OPENING + DELTA, [text])
    assert [kind for _, kind in failures.calls] == ["stream_error"]
    appended_error(b"".join(out), OPENING + DELTA + text)


def test_guarded_break_after_message_stop_is_not_a_failure() -> None:
    out, failures = run_guarded(OPENING + DELTA, [MESSAGE_DELTA, MESSAGE_STOP],
                                then=httpx.RemoteProtocolError("peer closed connection"))
    assert b"".join(out) == OPENING + DELTA + MESSAGE_DELTA + MESSAGE_STOP
    assert failures.calls == []
