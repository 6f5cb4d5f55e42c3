"""One pass over a streamed answer: its source makes each event once (a provider's own stream split once, or the
OpenAI translation), the guard checks it once, and the observers that read it (model echo, usage watch) see that
same event. Both provider types share the commit point, the reading of a provider's error and the end."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon import stream_guard
from addon.anthropic_adapter import AnthropicAdapter
from addon.anthropic_events import Event
from addon.config import ProviderConfig
from addon.exchange import Answer, Exchange, ProviderAdapter
from addon.model_echo import StreamModelEcho
from addon.openai_adapter import OpenAIAdapter
from addon.openai_request import ToolNames
from addon.openai_stream import StreamTranslator
from addon.relay_handoff import watched_answer
from addon.sse import SSESplitter
from addon.stream_events import Observers
from addon.stream_guard import (
    CommittedStream,
    Leftover,
    StreamFailure,
    drain_then_close,
    guarded,
    hold_until_content,
    read_to_end,
)
from addon.usage_watch import UsageWatch
from fakes import FakeProvider, Raw, RawStream
from helpers import anthropic_provider, error_event, sse, stream_events

REPO = Path(__file__).resolve().parent.parent
REQUESTED = "claude-sonnet-4"
PROVIDER_MODEL = "provider-big"
STREAM = stream_events(model=PROVIDER_MODEL, pieces=["one", "two", "three"])  # usage: in 12, out 3
ECHOED = [event.replace(PROVIDER_MODEL.encode(), REQUESTED.encode()) for event in STREAM]
ANTHROPIC = ProviderConfig(name="a", base_url="http://127.0.0.1:9", auth_value="k", big_model=PROVIDER_MODEL)
OPENAI = ProviderConfig(name="o", type="openai", base_url="http://127.0.0.1:9/v1", auth_value="k",
                        big_model=PROVIDER_MODEL)


def openai_data(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def openai_delta(content: str) -> bytes:
    return openai_data({"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]})


OPENAI_STREAM = [
    openai_delta("one"), openai_delta("two"),
    openai_data({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    openai_data({"id": "c1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 7}}),
    b"data: [DONE]\n\n",
]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


async def chunks_of(parts: Iterable[bytes], then: BaseException | None = None,
                    read: list[bytes] | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        if read is not None:
            read.append(part)
        yield part
    if then is not None:
        raise then


def exchange(failures: list[tuple[str, str, str]] | None = None) -> Exchange:
    """A streamed request; a failure after the commit point goes into `failures` (provider, reason, class)."""
    def failed(provider: ProviderConfig, reason: str, kind: str) -> None:
        if failures is not None:
            failures.append((provider.name, reason, kind))

    body = {"model": REQUESTED, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[],
                    body=json.dumps(body).encode(), parsed=body, requested_model=REQUESTED, stream=True,
                    idle_timeout=30, on_committed_failure=failed)


async def open_and_read(adapter: ProviderAdapter, provider: ProviderConfig, parts: list[bytes],
                        failures: list[tuple[str, str, str]] | None = None) -> tuple[Answer, UsageWatch, bytes]:
    """An answer opened by the adapter as in production, and read as the relay hand-off reads it."""
    call = adapter.prepare(provider, exchange(failures))
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks_of(parts),
                              request=call.request)
    answer = await call.open_answer(response, time.monotonic() + 10)
    watch, body = watched_answer(answer)
    out = b"".join([chunk async for chunk in body])
    return answer, watch, out


def last_event(out: bytes) -> bytes:
    return out.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]


# -- one pass: the guard's events are the ones the observers read ------------------------------------------------

@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_a_providers_stream_is_echoed_and_its_usage_read_from_the_guards_own_events(size: int) -> None:
    whole = b"".join(STREAM)
    answer, watch, out = asyncio.run(open_and_read(AnthropicAdapter(), ANTHROPIC,
                                                   [whole[i : i + size] for i in range(0, len(whole), size)]))
    first, rest = out.split(b"\n\n", 1)
    assert first.startswith(b"event: message_start\ndata: ")
    assert json.loads(first.split(b"data: ", 1)[1]) == json.loads(ECHOED[0].split(b"data: ", 1)[1])
    assert rest == b"".join(STREAM[1:])  # every other event byte for byte
    assert answer.watch is watch  # the adapter's watch, shown the events: the relay hand-off splits nothing
    assert watch.usage == {"input_tokens": 12, "output_tokens": 3} and watch.stop_reason == "end_turn"
    assert watch.first_byte_at is not None


def test_a_translated_stream_shows_its_events_and_their_usage_to_the_adapters_watch() -> None:
    answer, watch, out = asyncio.run(open_and_read(OpenAIAdapter(), OPENAI, OPENAI_STREAM))
    assert answer.watch is watch
    assert watch.usage["input_tokens"] == 10 and watch.usage["output_tokens"] == 7
    assert watch.stop_reason == "end_turn"
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


class Recorder:
    """An observer that keeps what it is shown, and may rewrite one kind of event."""

    def __init__(self, *names: str, rewrite: dict[str, Event] | None = None) -> None:
        self.names = frozenset(names)
        self.seen: list[Event] = []
        self._rewrite = rewrite or {}

    def see(self, event: Event) -> Event:
        self.seen.append(event)
        return self._rewrite.get(event.name or "", event)


def test_observers_see_only_their_events_in_order_and_a_rewrite_is_what_passes() -> None:
    replaced = Event.made("content_block_stop", {"type": "content_block_stop", "index": 0, "x": 1})
    first = Recorder("content_block_delta", "content_block_stop", rewrite={"content_block_stop": replaced})
    second = Recorder("content_block_stop", "message_stop")
    stream = CommittedStream(SSESplitter(), lambda *failure: None, observers=Observers(first, second))
    out = stream.feed(b"".join(STREAM[3:]))
    assert [e.name for e in first.seen] == ["content_block_delta"] * 3 + ["content_block_stop"]
    assert [e.name for e in second.seen] == ["content_block_stop", "message_stop"]
    assert second.seen[0] is replaced  # the second observer is shown what the first passed on
    assert replaced.raw in out and STREAM[6] not in out


def test_every_observer_reads_the_same_parsed_data() -> None:
    one, two = Recorder("content_block_delta"), Recorder("content_block_delta")
    stream = CommittedStream(SSESplitter(), lambda *failure: None, observers=Observers(one, two))
    stream.feed(b"".join(STREAM[3:]))
    assert all(a is b and a.data is b.data for a, b in zip(one.seen, two.seen, strict=True))
    assert one.seen[0].data == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                                                    "text": "one"}}


def test_an_event_the_translator_writes_carries_its_data() -> None:
    translator = StreamTranslator(REQUESTED, ToolNames(), message_id="msg_1")
    events = translator.events(b"".join(OPENAI_STREAM))
    assert [e.name for e in events][:3] == ["message_start", "content_block_start", "content_block_delta"]
    for event in events:
        payload = event.raw.split(b"data: ", 1)[1].rstrip(b"\n")
        assert event.data == json.loads(payload) and event.problem is None


# -- the same answer as when each part read the bytes itself ---------------------------------------------------

def read_by_parts(parts: list[bytes]) -> tuple[bytes, dict[str, int], str | None]:
    """The stream through the guard alone, then the model echo and a usage watch that split the bytes again."""
    async def run() -> bytes:
        chunks = chunks_of(parts)
        opening = await hold_until_content(chunks, time.monotonic() + 10)
        echo = StreamModelEcho(REQUESTED)
        out = [echo.feed(chunk) async for chunk in guarded(opening, chunks, lambda *f: None, 30)]
        return b"".join(out) + echo.flush()

    out = asyncio.run(run())
    watch = UsageWatch(is_sse=True)
    watch.observe(out)
    return out, watch.usage, watch.stop_reason


extra_events = st.lists(st.sampled_from([
    b": keep-alive\n\n", b'event: ping\ndata: {"type": "ping"}\n\n', b"event: ping\ndata: not json\n\n",
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "message_start message_delta"}}),
    b'event: content_block_delta\r\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "crlf"}}\r\n\r\n',
]), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=extra_events, where=st.integers(3, 7), cuts=st.lists(st.integers(1, 4000), max_size=12),
       crlf=st.booleans())
def test_the_one_pass_gives_what_each_part_reading_the_bytes_gave(extra, where, cuts, crlf) -> None:
    events = [*STREAM[:where], *extra, *STREAM[where:]]
    whole = b"".join(events)
    if crlf:
        whole = whole.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parts = split_at(whole, [c % len(whole) for c in cuts])
    _, watch, out = asyncio.run(open_and_read(AnthropicAdapter(), ANTHROPIC, parts))
    expected, usage, stop_reason = read_by_parts(parts)
    assert out == expected
    assert (watch.usage, watch.stop_reason) == (usage, stop_reason) == ({"input_tokens": 12, "output_tokens": 3},
                                                                         "end_turn")


# -- one reading of a provider's error, one end, for both provider types ---------------------------------------

def hold_failure(adapter: ProviderAdapter, provider: ProviderConfig, parts: list[bytes]) -> StreamFailure:
    with pytest.raises(StreamFailure) as caught:
        asyncio.run(open_and_read(adapter, provider, parts))
    return caught.value


@pytest.mark.parametrize(("adapter", "provider", "opening", "error", "name"), [
    (AnthropicAdapter(), ANTHROPIC, STREAM[:3], error_event("overloaded_error", "Overloaded"), "error event"),
    (OpenAIAdapter(), OPENAI, [], openai_data({"error": {"message": "Overloaded", "type": "overloaded_error"}}),
     "error"),
], ids=["anthropic", "openai"])
def test_a_providers_error_is_read_alike_before_and_after_the_commit_point(adapter, provider, opening, error, name):
    failure = hold_failure(adapter, provider, [*opening, error])
    assert (failure.reason, failure.kind) == (f"{name} before content: overloaded_error: Overloaded", "overloaded")

    failures: list[tuple[str, str, str]] = []
    content = STREAM[:4] if isinstance(adapter, AnthropicAdapter) else [openai_delta("one")]
    _, _, out = asyncio.run(open_and_read(adapter, provider, [*content, error], failures))
    assert out.endswith(b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
                        b'"message": "Overloaded"}}\n\n')
    assert failures == [(provider.name, f"{name} mid-stream: overloaded_error: Overloaded", "overloaded")]


def test_an_error_type_not_in_anthropics_form_is_api_error_before_the_commit_point_too() -> None:
    odd = sse("error", {"type": "error", "error": {"type": "Not A Type!\nreq 1 forged", "message": "m"}})
    failure = hold_failure(AnthropicAdapter(), ANTHROPIC, [*STREAM[:3], odd])
    assert failure.reason == "error event before content: api_error: m"


@pytest.mark.parametrize(("adapter", "provider", "parts"), [
    (AnthropicAdapter(), ANTHROPIC, STREAM),
    (OpenAIAdapter(), OPENAI, OPENAI_STREAM),
], ids=["anthropic", "openai"])
def test_the_answer_ends_at_message_stop_and_nothing_the_provider_sends_later_is_passed_on(adapter, provider, parts):
    """The client's stream ends at `message_stop`; what the provider sends after it is left for the answer's close,
    which reads it to the body's end in the background and drops it (so that its connection can serve again), and
    closes the response after that."""
    later = [b"data: junk after the end\n\n", error_event()]
    read: list[bytes] = []
    closed: list[int] = []

    async def run() -> tuple[bytes, int, int]:
        call = adapter.prepare(provider, exchange())
        response = httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=chunks_of([*parts, *later], read=read), request=call.request)
        answer = await call.open_answer(response, time.monotonic() + 10)
        out = b"".join([chunk async for chunk in answer.body])
        read_by_the_end = len(read)

        async def close() -> None:
            closed.append(len(read))

        await drain_then_close(answer.leftover, close)()  # returns at once: the reading goes on meanwhile
        read_when_closing = len(read)
        await asyncio.gather(*stream_guard._draining)
        return out, read_by_the_end, read_when_closing

    out, read_by_the_end, read_when_closing = asyncio.run(run())
    assert last_event(out).startswith(b"event: message_stop\n")
    assert b"junk" not in out and b"Overloaded" not in out
    assert read_by_the_end == read_when_closing < len(parts) + len(later)  # the client's stream did not wait
    assert read == [*parts, *later] and closed == [len(read)]  # read to the end, then closed


def test_bodies_still_being_read_are_closed_at_shutdown() -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    async def run() -> int:
        leftover = Leftover()
        leftover.rest = silent([])  # a provider that holds its body open
        await drain_then_close(leftover, close)()
        await asyncio.sleep(0)  # the reading has begun
        draining = len(stream_guard._draining)
        await stream_guard.stop_draining()
        return draining

    assert asyncio.run(run()) == 1
    assert closed == ["closed"] and not stream_guard._draining


def test_an_answer_without_a_complete_stream_is_closed_at_once() -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    async def run() -> None:
        await drain_then_close(None, close)()
        await drain_then_close(Leftover(), close)()  # the stream never completed: nothing to read

    asyncio.run(run())
    assert closed == ["closed", "closed"]


async def endless(read: list[bytes], piece: bytes = b"x" * 1000) -> AsyncIterator[bytes]:
    while True:
        read.append(piece)
        yield piece


async def silent(read: list[bytes]) -> AsyncIterator[bytes]:
    read.append(b"one")
    yield b"one"
    await asyncio.Event().wait()
    yield b"never"


def test_what_follows_message_stop_is_read_no_further_than_a_limit() -> None:
    read: list[bytes] = []
    asyncio.run(read_to_end(endless(read), wait=60, limit=10_000))
    assert len(read) == 11  # the piece past the limit ends the reading


def test_what_follows_message_stop_is_waited_for_no_longer_than_a_while() -> None:
    read: list[bytes] = []

    async def run() -> None:
        await asyncio.wait_for(read_to_end(silent(read), wait=0.05), 30)  # the provider's silence: not an error

    asyncio.run(run())
    assert read == [b"one"]


@pytest.mark.parametrize(("adapter", "provider", "parts"), [
    (AnthropicAdapter(), ANTHROPIC, STREAM[:5]),
    (OpenAIAdapter(), OPENAI, OPENAI_STREAM[:2]),
], ids=["anthropic", "openai"])
def test_a_stream_that_breaks_off_after_the_commit_point_ends_alike(adapter, provider, parts):
    failures: list[tuple[str, str, str]] = []

    async def run() -> bytes:
        call = adapter.prepare(provider, exchange(failures))
        response = httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=chunks_of(parts, then=httpx.ReadError("peer vanished")),
                                  request=call.request)
        answer = await call.open_answer(response, time.monotonic() + 10)
        return b"".join([chunk async for chunk in answer.body])

    out = asyncio.run(run())
    ((name, reason, kind),) = failures
    assert (name, kind) == (provider.name, "stream_error") and reason.startswith("the provider's stream broke off: ")
    error = json.loads(last_event(out).split(b"data: ", 1)[1])
    assert error == {"type": "error", "error": {"type": "api_error", "message": reason}}


# -- the splitter's path for a chunk that is one whole event ----------------------------------------------------

event_bytes = st.lists(st.sampled_from([b"data: x", b"event: e", b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b":c", b" ",
                                        b"{}", b"\xe2\x82"]), max_size=12).map(lambda pieces: b"".join(pieces))


@settings(max_examples=400, deadline=None)
@given(events=st.lists(event_bytes, max_size=8), seed=st.integers(0, 2**32))
def test_chunks_that_are_whole_events_split_as_the_same_bytes_in_one_piece(events, seed) -> None:
    rng = random.Random(seed)
    pieces = [event + (b"\n\n" if rng.random() < 0.8 else b"\n\n\n") for event in events]
    one = SSESplitter()
    expected = one.feed_raw(b"".join(pieces))
    split = SSESplitter()
    assert [raw for piece in pieces for raw in split.feed_raw(piece)] == expected
    assert split.pending() == one.pending()


openai_payloads = st.sampled_from([
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hé"}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": " "}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    {"error": {"message": "Overloaded", "type": "overloaded_error"}},
])


@st.composite
def openai_pieces(draw: st.DrawFn) -> list[bytes]:
    """A provider's stream as the chunks it arrives in: mostly one `data:` event each, in every framing."""
    pieces = []
    for _ in range(draw(st.integers(0, 8))):
        data = json.dumps(draw(openai_payloads), ensure_ascii=False).encode()
        framing = draw(st.sampled_from(["event"] * 6 + ["nospace", "crlf", "cr", "noblank", "split", "comment",
                                                         "unended", "done"]))
        if framing == "event":
            pieces.append(b"data: " + data + b"\n\n")
        elif framing == "nospace":
            pieces.append(b"data:" + data + b"\n\n")
        elif framing == "crlf":
            pieces.append(b"data: " + data + b"\r\n\r\n")
        elif framing == "cr":  # a CR ends a line too
            pieces.append(b"data: " + data + b"\rdata: " + data + b"\n\n")
        elif framing == "noblank":
            pieces.append(b"data: " + data + b"\n")
        elif framing == "split":  # one payload over two data lines, each in its own chunk
            pieces += [b"data: " + data[:5] + b"\n", b"data: " + data[5:] + b"\n\n"]
        elif framing == "comment":
            pieces.append(b": keep-alive\n\n")
        elif framing == "unended":  # a line the next chunk goes on with
            pieces.append(b": x")
        else:
            pieces.append(b"data: [DONE]\n\n")
    return pieces


@settings(max_examples=300, deadline=None)
@given(pieces=openai_pieces())
def test_a_translation_is_the_same_for_chunks_that_are_whole_events_as_for_any_other_chunking(pieces) -> None:
    def translated(chunks: list[bytes]) -> bytes:
        translator = StreamTranslator(REQUESTED, ToolNames(), message_id="msg_1")
        return b"".join(translator.feed(chunk) for chunk in chunks) + translator.finish()

    whole = b"".join(pieces)
    expected = translated([whole[i : i + 5] for i in range(0, len(whole), 5)])
    assert translated(pieces) == expected
    assert translated([whole]) == expected


# -- through mitmdump: what the log learns from the one pass ---------------------------------------------------

def wait_for(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("provider_type", ["anthropic", "openai"])
def test_the_request_line_has_the_usage_of_a_stream_of_either_provider_type(balancer, client, unique, provider_type):
    name = f"{provider_type[0]}-{unique}"
    if provider_type == "anthropic":
        behavior: Any = RawStream(STREAM)
        config = anthropic_provider(name, "", big_model=PROVIDER_MODEL)
        tokens = "tokens in 12 out 3"
    else:
        behavior = Raw(b"".join(OPENAI_STREAM), piece=9)
        config = {"name": name, "type": "openai", "base_url": "", "auth_value": "k", "big_model": PROVIDER_MODEL}
        tokens = "tokens in 10 out 7"
    with FakeProvider(behavior) as fake:
        config["base_url"] = fake.url + ("/v1" if provider_type == "openai" else "")
        balancer.use([config])
        with client.messages.stream(model=REQUESTED, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]) as s:
            final = s.get_final_message()
    assert final.model == REQUESTED and final.stop_reason == "end_turn"
    wait_for(lambda: any(f"-> {name}/" in line for line in balancer.log_lines), "the request line")
    (line,) = [line for line in balancer.log_lines if f"-> {name}/" in line]
    assert f"{tokens} | end_turn" in line and " ttfb " in line


# -- the benchmark script still measures the pipeline ------------------------------------------------------------

def test_the_stream_benchmark_runs_and_reports_cpu_per_event() -> None:
    script = REPO / "scripts" / "bench_stream.py"
    done = subprocess.run([sys.executable, str(script), "--events", "60", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["anthropic", "anthropic-packed", "openai"]
    assert all("µs CPU per event" in line for line in lines)
