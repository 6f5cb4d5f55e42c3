"""The end of a stream, through the running balancer: a client that leaves before the answer's final usage (or a
stream cut short) is charged the output it was relayed, estimated from its content; and the client's stream ends
at `message_stop` with no ping after it, even while the provider holds its connection open."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, RawStream, wait_for_peer_close
from helpers import (
    anthropic_provider,
    anthropic_stream_events,
    openai_provider,
    openai_sse,
    parse_sse,
    sse,
    wait_until,
)

ADMIN_KEY = "sk-admin-streamend-0000000000"
CLIENT_KEY = "sk-client-streamend-1111111111"
PIECE = "word " * 40  # 200 characters
PIECES = 10  # 2000 characters of text: 500 output tokens estimated
REPORTED_LATE = 5000  # what the message_delta the client never waited for would have said


@dataclass
class UsageAfterAPause(Behavior):
    """The whole text, then nothing until the balancer hangs up (or `limit` passes), then the message_delta with
    the real output count. `hung_up`: the balancer closed the connection during the pause."""

    limit: float = 60.0
    hung_up: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        events = anthropic_stream_events(request.json().get("model", "m"), [PIECE] * PIECES)
        events[0][1]["message"]["usage"] = {"input_tokens": 10, "output_tokens": 1}
        events[-2][1]["usage"] = {"output_tokens": REPORTED_LATE}
        handler.start_stream(200)
        try:
            for name, data in events[:-2]:
                handler.write_chunk(sse(name, data))
            if wait_for_peer_close(handler.connection, threading.Event(), self.limit, fake.stopping):
                self.hung_up.set()
            for name, data in events[-2:]:
                handler.write_chunk(sse(name, data))
            handler.end_stream()
        except OSError:
            pass
        handler.close_connection = True


def log_entries(log_file: Path) -> list[dict[str, Any]]:
    if not log_file.exists():
        return []
    lines = log_file.read_text().splitlines()
    return [entry["request"] for entry in map(json.loads, lines) if isinstance(entry.get("request"), dict)]


def test_a_client_that_leaves_before_the_final_usage_is_charged_the_output_it_was_sent(tmp_path):
    log_file = tmp_path / "balancer.jsonl"
    behavior = UsageAfterAPause()
    with FakeProvider(behavior) as fake:
        process = BalancerProcess(tmp_path)
        process.write_providers([anthropic_provider("a", fake.url)],
                                client_keys=[{"name": "alice", "key": CLIENT_KEY, "tokens_per_day": 1000}],
                                admin_keys=[ADMIN_KEY], log_file=str(log_file))
        with process:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 8000, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}
            with httpx.stream("POST", process.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY},
                              timeout=30) as answer:
                assert answer.status_code == 200
                got = b""
                for chunk in answer.iter_bytes():
                    got += chunk
                    if b"content_block_stop" in got:
                        break  # all the text is here: the client leaves (Esc in Claude Code)
            assert got.count(b"word") == 40 * PIECES
            assert behavior.hung_up.wait(30), "the provider's stream was not closed after the client left"
            wait_until(lambda: log_entries(log_file), what="the request's log entry")
            [entry] = log_entries(log_file)
            used = httpx.get(process.url + "/usage", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
            tokens_per_day = next(q for q in used["clients"][0]["quotas"] if q["quota"] == "tokens_per_day")
            providers = httpx.get(process.url + "/providers", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
            [key] = providers["providers"][0]["keys"]
    assert entry["usage"]["output_tokens"] == 2000 // 4  # the estimate, not message_start's 1
    assert entry["usage_estimated"] is True
    assert tokens_per_day["used"] == 10 + 500
    assert key["tokens_this_minute"] == 10 + 500  # the key's tpm counts the same
    assert "out ~500" in process.log


def test_a_whole_answer_is_charged_what_it_reported_and_not_marked_estimated(tmp_path):
    log_file = tmp_path / "balancer.jsonl"
    with FakeProvider(UsageAfterAPause(limit=0)) as fake:
        process = BalancerProcess(tmp_path)
        process.write_providers([anthropic_provider("a", fake.url)], log_file=str(log_file))
        with process:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 8000, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(process.url + "/v1/messages", json=body, timeout=30)
            assert answer.status_code == 200
            wait_until(lambda: log_entries(log_file), what="the request's log entry")
            [entry] = log_entries(log_file)
    assert entry["usage"]["output_tokens"] == REPORTED_LATE
    assert "usage_estimated" not in entry


def openai_chunk(**delta: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-e", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def lingering_stream(kind: str) -> list[bytes]:
    """A whole answer whose message_delta has no stop reason (Anthropic type), or a whole OpenAI stream."""
    if kind == "anthropic":
        return [sse(name, data) for name, data in lingering_events()]
    return [
        openai_sse(openai_chunk(role="assistant", content="")),
        openai_sse(openai_chunk(content="Hello")),
        openai_sse(openai_chunk(content=" world"),
                   {"id": "chatcmpl-e", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]"),
    ]


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_the_stream_ends_at_message_stop_while_the_provider_holds_its_connection_open(balancer, unique, kind):
    idle_timeout = 120  # far longer than the wait below: only the answer's own end can end the stream in time
    held = RawStream(lingering_stream(kind), ending="stall", stall_limit=idle_timeout)
    name = f"linger-{unique}"
    with FakeProvider(held) as fake:
        try:
            entry = anthropic_provider(name, fake.url) if kind == "anthropic" else openai_provider(name, fake.url)
            balancer.use([entry], stream_keepalive=0.1, stream_idle_timeout=idle_timeout)
            body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}
            deadline = time.monotonic() + 30
            raw, ended = b"", False
            with httpx.stream("POST", balancer.url + "/v1/messages", json=body, timeout=30) as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_raw():
                    raw += chunk
                    if time.monotonic() > deadline:
                        break
                else:
                    ended = True
            assert held.peer_closed.wait(30), "the balancer kept the provider's connection open"
        finally:
            held.release.set()
    assert ended, "the client's stream did not end at message_stop"
    names = [event for event, _ in parse_sse(raw)]
    assert names[-1] == "message_stop"
    assert "ping" not in names[names.index("message_delta"):]
    wait_until(lambda: f"-> {name}" in balancer.log and f"{name}/" in balancer.log, what="the request's log line")
    [line] = [line for line in balancer.log.splitlines() if f"-> {name}/" in line]
    assert " stream 200 " in line
    status = balancer.provider_status(name)
    assert status["healthy"] and status["failures"] == 0, status


@dataclass
class PauseBeforeMessageStop(Behavior):
    """A whole answer whose message_delta has no stop reason, then `pause` seconds of silence before its
    message_stop (ten ping intervals and more)."""

    pause: float

    def run(self, handler, request, fake):
        events = [sse(name, data) for name, data in lingering_events()]
        handler.start_stream(200)
        for event in events[:-1]:
            handler.write_chunk(event)
        fake.stopping.wait(self.pause)
        handler.write_chunk(events[-1])
        handler.end_stream()


def lingering_events() -> list[tuple[str, dict[str, Any]]]:
    events = anthropic_stream_events("m", ["Hello", " world"])
    for name, data in events:
        if name == "message_delta":
            data["delta"]["stop_reason"] = None
    return events


def test_no_ping_follows_message_delta_even_without_a_stop_reason(balancer, unique):
    interval = 0.1
    name = f"pause-{unique}"
    with FakeProvider(PauseBeforeMessageStop(pause=10 * interval)) as fake:
        balancer.use([anthropic_provider(name, fake.url)], stream_keepalive=interval, stream_idle_timeout=60)
        body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(balancer.url + "/v1/messages", json=body, timeout=30)
    names = [event for event, _ in parse_sse(answer.content)]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in names[names.index("content_block_delta"):]


def provider_of(kind: str, name: str, url: str) -> dict[str, Any]:
    return anthropic_provider(name, url) if kind == "anthropic" else openai_provider(name, url)


def stream_names(client: httpx.Client, url: str) -> list[str]:
    """The event names of one streamed request read to its end."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with client.stream("POST", url + "/v1/messages", json=body) as answer:
        assert answer.status_code == 200
        return [event for event, _ in parse_sse(answer.read())]


@dataclass
class EndWithTheLastEvent(Behavior):
    """The events one write each, the last in the same write as the body's end (as a provider's usually come)."""

    events: list[bytes]

    def run(self, handler, request, fake):
        handler.start_stream(200)
        for event in self.events[:-1]:
            handler.write_chunk(event)
        last = self.events[-1]
        handler.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(last), last))
        handler.wfile.flush()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_streams_one_after_another_reuse_the_provider_connection(balancer, unique, kind):
    # The provider's body is read to its end after message_stop, so httpx keeps the connection for the next one.
    with FakeProvider(EndWithTheLastEvent(lingering_stream(kind))) as fake:
        balancer.use([provider_of(kind, f"reuse-{unique}", fake.url)])
        with httpx.Client(timeout=30) as client:
            for _ in range(4):
                assert stream_names(client, balancer.url)[-1] == "message_stop"
        assert len(fake.requests) == 4
        assert fake.connections == 1


@dataclass
class HoldTheEnd(Behavior):
    """The events, then the body's end only once the test says so (a provider under load sends its last, empty
    chunk some time after message_stop)."""

    events: list[bytes]
    release: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        handler.start_stream(200)
        for event in self.events:
            handler.write_chunk(event)
        self.release.wait(30)
        self.release.clear()
        handler.end_stream()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_late_end_of_the_providers_body_neither_holds_the_client_nor_costs_the_connection(balancer, unique, kind):
    """The client's stream ends at message_stop, before the provider has ended its body; the body's end is read
    afterwards, and the connection serves the next stream."""
    behavior = HoldTheEnd(lingering_stream(kind))
    with FakeProvider(behavior) as fake:
        balancer.use([provider_of(kind, f"late-end-{unique}", fake.url)])
        with httpx.Client(timeout=60) as client:
            for _ in range(4):
                # The client's stream ends while the provider still holds its body's end.
                assert stream_names(client, balancer.url)[-1] == "message_stop"
                behavior.release.set()
        assert len(fake.requests) == 4
        # Without reading the end after the client's stream, each stream closes its connection (4); a machine
        # busy enough to let the next request overtake the read may cost one more.
        assert fake.connections <= 2
