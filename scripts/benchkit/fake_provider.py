"""A fast fake provider for the benchmark, run in its own process so it never shares a core's GIL with the client
or the proxy under test.

One server answers every profile; the first path segment picks it, so a provider's `base_url` is
`http://127.0.0.1:<port>/<profile>` (Anthropic style, `POST .../v1/messages`) or
`http://127.0.0.1:<port>/<profile>/v1` (OpenAI style, `POST .../v1/chat/completions`).

Profiles: `ok` (a streamed answer has `STREAM_PIECES` deltas; the opening events, 1 ms, then the deltas one per
turn of the event loop), `burst` (the same events in back-to-back writes), `nagle` (as `ok` with Nagle's algorithm
on), `paced` (50 deltas 1 ms apart), `ticking` (200 deltas 10 ms apart), `slow` (60 deltas 0.5 s apart: a
stream that stays open), `overloaded` (529), `hang` (never answers). A non-streamed request gets a small JSON
message; `"stream": true` gets SSE in chunked encoding, one event per chunk and one chunk per write. Written on
asyncio's Protocol API (no stream objects) so it stays far ahead of the proxies it feeds: `scripts/bench`
measures it alone as the "direct" column.

Run: `python -m benchkit.fake_provider` prints `port <n>` on stdout once listening, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from dataclasses import dataclass

STREAM_PIECES = 20


@dataclass(frozen=True)
class Profile:
    status: int = 200
    pieces: int = STREAM_PIECES
    # A streamed answer is written one event a write, as a real provider sends it: the opening events at once,
    # `first_delay` seconds until the first content delta (the model starting to answer), then `gap` seconds
    # between deltas (0: one event per turn of the event loop).
    first_delay: float = 0.001
    gap: float = 0.0
    burst: bool = False  # the whole answer in back-to-back writes instead (how the fake worked before)
    nodelay: bool = True  # TCP_NODELAY (a plain Python HTTP server leaves Nagle's algorithm on)
    hang: bool = False


PROFILES = {
    "ok": Profile(),
    "burst": Profile(burst=True, first_delay=0),
    "nagle": Profile(nodelay=False),
    "paced": Profile(pieces=50, gap=0.001),
    "slow": Profile(pieces=60, gap=0.5),
    "ticking": Profile(pieces=200, gap=0.01),  # 2 s of deltas 10 ms apart: streams that big requests may stall
    "overloaded": Profile(status=529),
    "hang": Profile(hang=True),
}

MODEL = "claude-sonnet-4"
OPENING_EVENTS = 2  # message_start, content_block_start: what comes before the first content delta


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _anthropic_message() -> dict:
    return {"id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1}}


def anthropic_events(pieces: int) -> list[bytes]:
    """A streamed Anthropic answer of `pieces` text deltas, one SSE event per item."""
    def sse(event: str, data: dict) -> bytes:
        return b"event: %b\ndata: %b\n\n" % (event.encode(), _json(data))

    start = {"type": "message_start",
             "message": {**_anthropic_message(), "content": [], "stop_reason": None,
                         "usage": {"input_tokens": 10, "output_tokens": 0}}}
    events = [sse("message_start", start),
              sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})]
    events += [sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": f"word{i} "}})
               for i in range(pieces)]
    events += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": pieces}}),
               sse("message_stop", {"type": "message_stop"})]
    return events


def openai_events(pieces: int) -> list[bytes]:
    """A streamed Chat Completions answer of `pieces` content deltas, then usage and `[DONE]`."""
    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
        if usage is not None:
            body["usage"] = usage
        return b"data: %b\n\n" % _json(body)

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f"word{i} "}) for i in range(pieces)]
    events += [chunk({}, "stop"), chunk({}, usage={"prompt_tokens": 10, "completion_tokens": pieces,
                                                   "total_tokens": 10 + pieces}),
               b"data: [DONE]\n\n"]
    return events


OPENAI_MESSAGE = _json({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
})
ANTHROPIC_MESSAGE = _json(_anthropic_message())
OVERLOADED = _json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def _head(status: int, reason: str, content_type: bytes, length: int | None) -> bytes:
    size = b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
    return b"HTTP/1.1 %d %b\r\ncontent-type: %b\r\n%b\r\n\r\n" % (status, reason.encode(), content_type, size)


def _chunked(events: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%b\r\n" % (len(e), e) for e in events]


class FakeProviderProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, requests answered in order; bodies read by content-length."""

    def __init__(self, cache: dict) -> None:
        self.cache = cache
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being written; later pipelined requests wait in the buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._drain_requests()

    def _drain_requests(self) -> None:
        while not self.busy and self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self._answer(head.split(b"\r\n", 1)[0], body)

    def _answer(self, request_line: bytes, body: bytes) -> None:
        assert self.transport is not None
        parts = request_line.split(b" ")
        path = parts[1].decode() if len(parts) > 1 else "/"
        segments = path.strip("/").split("/")
        profile = PROFILES.get(segments[0]) if segments else None
        if profile is None or not path.endswith(("/messages", "/chat/completions")):
            self.transport.write(_head(404, "Not Found", b"application/json", 2) + b"{}")
            return
        if profile.hang:
            self.busy = True  # never answer; the peer gives up and closes
            return
        if profile.status != 200:
            self.transport.write(_head(profile.status, "Overloaded", b"application/json", len(OVERLOADED))
                                 + OVERLOADED)
            return
        openai = path.endswith("/chat/completions")
        stream = b'"stream":true' in body or b'"stream": true' in body
        if not stream:
            message = OPENAI_MESSAGE if openai else ANTHROPIC_MESSAGE
            self.transport.write(_head(200, "OK", b"application/json", len(message)) + message)
            return
        key = (openai, profile.pieces)
        if key not in self.cache:
            events = openai_events(profile.pieces) if openai else anthropic_events(profile.pieces)
            self.cache[key] = _chunked(events)
        chunks = self.cache[key]
        head = _head(200, "OK", b"text/event-stream", None)
        if not profile.nodelay:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if profile.burst:
            self.transport.write(head + chunks[0])
            for chunk in chunks[1:]:
                self.transport.write(chunk)
            self.transport.write(b"0\r\n\r\n")
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._eventwise(head, chunks, profile))

    async def _eventwise(self, head: bytes, chunks: list[bytes], profile: Profile) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(head)
        for index, chunk in enumerate(chunks):
            if index >= OPENING_EVENTS:
                await asyncio.sleep(profile.first_delay if index == OPENING_EVENTS else profile.gap)
            if transport.is_closing():
                return
            transport.write(chunk)
        transport.write(b"0\r\n\r\n")
        self.busy = False
        self._drain_requests()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    cache: dict = {}
    server = await loop.create_server(lambda: FakeProviderProtocol(cache), "127.0.0.1", port, backlog=1024)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    # Serve until the parent closes our stdin (it exits, or stops us on purpose).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
