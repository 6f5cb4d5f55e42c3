"""Long silences through the real mitmdump: a model that thinks silently after its headers is waited for (up to
first_content_timeout), a committed stream that goes quiet gets ping events between whole events, and a dead
stream is still ended by stream_idle_timeout with a well-formed error."""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from addon.sse import SSESplitter
from fakes import Behavior, FakeProvider, Hang, Message
from helpers import (
    FIRST_DELTA,
    MESSAGES,
    STREAM_EVENT,
    anthropic_provider,
    assert_stream_grammar,
    openai_provider,
    openai_sse,
    parse_sse,
    served_by,
    stream_events,
)

REQUEST = {"model": "claude-sonnet-4", "max_tokens": 64, "stream": True, "messages": MESSAGES}
# Short enough that the silences below are well past it, long enough for a busy machine to send headers.
HEADER_WAIT = 0.5


@dataclass
class Paced(Behavior):
    """A stream (HTTP 200, SSE): writes `before`, stays silent until `gate` is set (or `silence` seconds pass),
    then writes `after`. `released` says whether the gate ended the silence."""

    before: list[bytes]
    after: list[bytes]
    silence: float = 30.0
    gate: threading.Event = field(default_factory=threading.Event)
    released: bool | None = None

    def run(self, handler, request, fake):
        handler.start_stream(200)
        for part in self.before:
            handler.write_chunk(part)
        self.released = self.gate.wait(self.silence)
        try:
            for part in self.after:
                handler.write_chunk(part)
            handler.end_stream()
        except OSError:  # the balancer gave up on this stream (its idle timeout)
            handler.close_connection = True


def openai_chunk(**delta: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-s", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


OPENAI_STREAM = [
    openai_sse(openai_chunk(role="assistant", content="")),
    openai_sse(openai_chunk(content="Hello")),
    openai_sse(openai_chunk(content=" world"),
               {"id": "chatcmpl-s", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]"),
]
ANTHROPIC_STREAM = stream_events(pieces=["Hello", " world"])


def provider_entry(kind: str, name: str, url: str) -> dict[str, Any]:
    return anthropic_provider(name, url) if kind == "anthropic" else openai_provider(name, url)


def split_mid_event(kind: str) -> tuple[list[bytes], list[bytes]]:
    """A whole stream cut in two after its first content, in the middle of the event that follows."""
    if kind == "anthropic":
        events = ANTHROPIC_STREAM
        cut = FIRST_DELTA + 1
    else:
        events = OPENAI_STREAM
        cut = 2
    half = len(events[cut]) // 2
    return [*events[:cut], events[cut][:half]], [events[cut][half:], *events[cut + 1:]]


# -- a model that thinks silently after its headers ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_silence_after_the_headers_longer_than_request_timeout_is_not_failed_over(balancer, client, unique, kind):
    # Headers (and, from an Anthropic provider, the opening events), then nothing for three header waits.
    before = ANTHROPIC_STREAM[:FIRST_DELTA] if kind == "anthropic" else []
    after = ANTHROPIC_STREAM[FIRST_DELTA:] if kind == "anthropic" else OPENAI_STREAM
    paced = Paced(before, after, silence=3 * HEADER_WAIT)
    with FakeProvider(paced) as thinker, FakeProvider(Message("backup")) as backup:
        balancer.use([provider_entry(kind, f"think-{unique}", thinker.url),
                      anthropic_provider(f"backup-{unique}", backup.url)],
                     request_timeout=HEADER_WAIT, first_content_timeout=60, stream_keepalive=0)
        assert served_by(client, stream=True) == (f"think-{unique}", "Hello world")
        assert backup.message_requests == []


def test_no_headers_within_request_timeout_still_fails_over(balancer, client, unique):
    hang = Hang()
    with FakeProvider(hang) as silent, FakeProvider(Message("backup")) as backup:
        try:
            balancer.use([anthropic_provider(f"silent-{unique}", silent.url),
                          anthropic_provider(f"backup-{unique}", backup.url)],
                         request_timeout=HEADER_WAIT, first_content_timeout=60)
            assert served_by(client, stream=True) == (f"backup-{unique}", "backup")
            assert balancer.provider_status(f"silent-{unique}")["failures_by_class"] == {"timeout": 1}
        finally:
            hang.release.set()


def test_silence_past_first_content_timeout_fails_over(balancer, client, unique):
    thinker = Paced(ANTHROPIC_STREAM[:FIRST_DELTA], ANTHROPIC_STREAM[FIRST_DELTA:])
    with FakeProvider(thinker) as slow, FakeProvider(Message("backup")) as backup:
        try:
            balancer.use([anthropic_provider(f"slow-{unique}", slow.url),
                          anthropic_provider(f"backup-{unique}", backup.url)],
                         request_timeout=HEADER_WAIT, first_content_timeout=2 * HEADER_WAIT)
            assert served_by(client, stream=True) == (f"backup-{unique}", "backup")
            assert "no content before the deadline" in balancer.provider_status(f"slow-{unique}")["last_error"]
        finally:
            thinker.gate.set()


# -- a committed stream that goes quiet --------------------------------------------------------------------------

def read_stream(url: str, on_event: Any = None, timeout: float = 60.0) -> bytes:
    """The raw SSE bytes of one streamed request; `on_event(name, seen_so_far)` is called for each event."""
    raw = bytearray()
    splitter = SSESplitter()
    names: list[str] = []
    with httpx.stream("POST", url + "/v1/messages", json=REQUEST, timeout=timeout,
                      headers={"x-api-key": "client-own-key", "anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            raw += chunk
            for event in splitter.feed(chunk):
                names.append(event.event or "")
                if on_event is not None:
                    on_event(names)
    return bytes(raw)


def accumulated_text(events: list[tuple[str, Any]]) -> str:
    """The text of the message the official SDK's stream accumulator builds from the events (it skips pings)."""
    extra: dict[str, Any] = {"json_bufs": {}} if "json_bufs" in inspect.signature(accumulate_event).parameters else {}
    snapshot = None
    for name, data in events:
        if name not in ("ping", "error"):
            snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot, **extra)
    assert snapshot is not None
    return "".join(block.text for block in snapshot.content if block.type == "text")


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_quiet_committed_stream_gets_pings_between_whole_events(balancer, unique, kind):
    before, after = split_mid_event(kind)
    paced = Paced(before, after, silence=20)

    def release_on_ping_after_content(names: list[str]) -> None:
        if names[-1] == "ping" and "content_block_delta" in names:
            paced.gate.set()

    with FakeProvider(paced) as quiet:
        balancer.use([provider_entry(kind, f"quiet-{unique}", quiet.url)], stream_keepalive=0.1,
                     stream_idle_timeout=60)
        raw = read_stream(balancer.url, release_on_ping_after_content)
    assert paced.released, "no ping reached the client while the provider was silent"
    events = parse_sse(raw)  # every event whole: no ping landed inside the event the provider had half sent
    assert_stream_grammar(events)
    names = [name for name, _ in events]
    assert names[-1] == "message_stop"
    assert "ping" in names[names.index("content_block_delta"):]
    assert accumulated_text(events) == "Hello world"


def test_stream_keepalive_zero_sends_no_pings(balancer, unique):
    before, after = split_mid_event("openai")  # the OpenAI translation sends no ping of its own
    paced = Paced(before, after, silence=3 * HEADER_WAIT)
    with FakeProvider(paced) as quiet:
        balancer.use([provider_entry("openai", f"quiet-{unique}", quiet.url)], stream_keepalive=0)
        events = parse_sse(read_stream(balancer.url))
    assert "ping" not in [name for name, _ in events]
    assert accumulated_text(events) == "Hello world"


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_dead_stream_is_still_ended_by_stream_idle_timeout_despite_pings(balancer, unique, kind):
    before, after = split_mid_event(kind)
    dead = Paced(before, after, silence=60)
    with FakeProvider(dead) as provider:
        try:
            balancer.use([provider_entry(kind, f"dead-{unique}", provider.url)], stream_keepalive=0.1,
                         stream_idle_timeout=4 * HEADER_WAIT)
            events = parse_sse(read_stream(balancer.url))
        finally:
            dead.gate.set()
    assert_stream_grammar(events)
    names = [name for name, _ in events]
    assert "ping" in names[names.index("content_block_delta"):]
    assert names[-1] == "error"
    assert "idle" in events[-1][1]["error"]["message"]  # the balancer ended it: the provider never spoke again


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_no_ping_follows_the_answers_end_while_the_provider_keeps_the_connection_open(balancer, unique, kind):
    # The whole answer, then the provider holds the stream open a while before it ends it.
    events = ANTHROPIC_STREAM if kind == "anthropic" else OPENAI_STREAM
    with FakeProvider(Paced(events, [], silence=10 * 0.1)) as lingering:
        balancer.use([provider_entry(kind, f"linger-{unique}", lingering.url)], stream_keepalive=0.1)
        events_out = parse_sse(read_stream(balancer.url))
    assert_stream_grammar(events_out)
    names = [name for name, _ in events_out]
    assert names[-2:] == ["message_delta", "message_stop"]
