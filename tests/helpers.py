"""What many tests share: waiting with a deadline, loopback ports, provider entries for the providers file, one
request through the SDK that says who served it, Anthropic and OpenAI answers and SSE events to script providers
with, and the checker of Anthropic's stream grammar."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import anthropic
import pydantic
from anthropic.types import Message, MessageParam, RawMessageStreamEvent

from addon.sse import SSESplitter

MESSAGES: list[MessageParam] = [{"role": "user", "content": "Hi"}]


# -- waiting ------------------------------------------------------------------------------------------------------

def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Polls `condition` until it holds; fails the test after `timeout` seconds (generous: machines get busy)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- loopback ports and sockets -----------------------------------------------------------------------------------

def free_port() -> int:
    """A loopback port with nothing listening (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_request(port: int, body: dict[str, Any]) -> socket.socket:
    """A POST /v1/messages sent on a plain socket, left open (the test decides when the client leaves)."""
    sock = socket.create_connection(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%b" % (len(payload), payload))
    return sock


def read_response(sock: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a raw socket (content-length or close-delimited bodies)."""
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# -- provider entries of a providers file -------------------------------------------------------------------------

def anthropic_provider(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "anthropic",
        "base_url": url,
        "auth_type": "api_key",
        "auth_value": f"key-of-{name}",
        **extra,
    }


def openai_provider(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai", "base_url": url + "/v1", "auth_type": "api_key",
            "auth_value": f"key-of-{name}", "big_model": "gpt-big", "small_model": "gpt-small", **extra}


# -- one request through the SDK ----------------------------------------------------------------------------------

def served_by(client: anthropic.Anthropic, stream: bool = False, **extra: Any) -> tuple[str, str]:
    """(provider header, text) of one request, streamed through the SDK's accumulator or not."""
    message: Message
    if stream:
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES, **extra) as s:
            message = s.get_final_message()
            provider = s.response.headers["x-balancer-provider"]
    else:
        raw = client.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES,
                                                       **extra)
        message, provider = raw.parse(), raw.headers["x-balancer-provider"]
    return provider, "".join(block.text for block in message.content if block.type == "text")


# -- Anthropic answers and their SSE events ------------------------------------------------------------------

def anthropic_message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }


def anthropic_stream_events(model: str, pieces: list[str]) -> list[tuple[str, dict[str, Any]]]:
    message = anthropic_message(model, "")
    message["content"] = []
    message["stop_reason"] = None
    message["usage"] = {"input_tokens": 12, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    for piece in pieces:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(pieces)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


# Index of the first content_block_delta in the fake's streams (message_start, content_block_start, ping, delta).
FIRST_DELTA = 3


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(model: str = "m", pieces: list[str] | None = None) -> list[bytes]:
    """A whole Anthropic stream as raw SSE events (`[:FIRST_DELTA]` is the opening before any content)."""
    return [sse(e, d) for e, d in anthropic_stream_events(model, pieces or ["Hello"])]


def error_event(kind: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    return sse("error", {"type": "error", "error": {"type": kind, "message": message}})


def raw_event(event: str, data: str) -> bytes:
    """An SSE event whose data is written as given: not JSON, JSON cut short, ..."""
    return f"event: {event}\ndata: {data}\n\n".encode()


# -- OpenAI streams -----------------------------------------------------------------------------------------------

def openai_sse(*chunks: Any) -> bytes:
    """OpenAI stream bytes: JSON values as `data: {json}` events, strings as they are (e.g. "[DONE]")."""
    return b"".join(
        b"data: " + (c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)).encode() + b"\n\n" for c in chunks
    )


# -- Anthropic's stream grammar -----------------------------------------------------------------------------------

STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
DELTAS_FOR_BLOCK = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}
STREAM_EVENT: pydantic.TypeAdapter[RawMessageStreamEvent] = pydantic.TypeAdapter(RawMessageStreamEvent)


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """The events of a complete SSE byte string, each with its data parsed as JSON (fails otherwise)."""
    splitter = SSESplitter()
    events = splitter.feed(raw)
    assert splitter.pending() == b"", f"output ends with an unfinished event: {splitter.pending()[:200]!r}"
    out = []
    for event in events:
        assert event.event, f"an event without a name: {event.raw[:200]!r}"
        out.append((event.event, json.loads(event.data)))
    return out


def assert_stream_grammar(events: list[tuple[str, Any]], finished: bool = True) -> None:
    """Anthropic's stream grammar, what Claude Code and the SDK rely on; with `finished`, the stream is also
    complete (message_stop or one error event last)."""
    names = [name for name, _ in events]
    for name, data in events:
        assert isinstance(data, dict) and data.get("type") == name, (name, data)
        if name not in ("error", "ping"):
            STREAM_EVENT.validate_python(data)
    terminal = [i for i, name in enumerate(names) if name in ("message_stop", "error")]
    assert len(terminal) <= 1 and (not terminal or terminal[0] == len(names) - 1), f"events after the end: {names}"
    if finished:
        assert terminal, f"the stream did not end: {names}"
    if "error" in names:
        assert "message_delta" not in names, f"an error after message_delta: {names}"
        assert events[-1][1]["error"]["type"] in ("api_error", "overloaded_error")
        assert isinstance(events[-1][1]["error"]["message"], str)
    body = [n for n in names if n != "error"]
    if body:
        assert body[0] == "message_start" and body.count("message_start") == 1, names
    if "message_stop" in names:
        assert names[-2] == "message_delta", names
    open_index, block_type, next_index = None, "", 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None, "two blocks open at once"
            assert data["index"] == next_index, "block indices must be 0, 1, 2... in start order"
            open_index, block_type, next_index = next_index, data["content_block"]["type"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, "a delta for a block that is not open"
            assert data["delta"]["type"] in DELTAS_FOR_BLOCK[block_type], f"{data['delta']['type']} in {block_type}"
            if data["delta"]["type"] == "input_json_delta":
                assert data["delta"]["partial_json"], "empty input_json_delta"
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None, f"{name} with a block open"
        if name == "message_delta":
            assert data["delta"]["stop_reason"] in STOP_REASONS


def metric(process: Any, name: str, headers: dict[str, str] | None = None, **labels: str) -> float | None:
    """One sample of the balancer's /metrics (`process`: a BalancerProcess), found by its name and exact labels;
    None when it is not exported."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(process.url + "/metrics", headers=headers or {}, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
