"""Local fake providers on 127.0.0.1, scriptable to answer, stream slowly, refuse, hang, reset or fail.

A FakeProvider serves Anthropic's `/v1/messages` (and count_tokens). Each request takes the next scripted
behaviour (`fake.then(Status(529), Message())`), or the default one when the script is empty, and is recorded
(`fake.requests`) so that tests can assert what the provider received.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import anthropic_message, anthropic_stream_events, sse


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def python_traceback(echoed_key: str, size: int = 20_000) -> str:
    """A server's Python traceback of at least `size` characters: frames with file paths and source lines (one
    holding the key), ending with an exception line that echoes the key and names a file."""
    frames = ["Traceback (most recent call last):"]
    while sum(len(line) + 1 for line in frames) < size:
        n = len(frames)
        frames += [f'  File "/srv/gateway/.venv/lib/python3.12/site-packages/relay/layer{n}.py", line {n}, in call',
                   f'    return await self.client.post(url, headers={{"x-api-key": "{echoed_key}"}})']
    return "\n".join(frames) + f"\nValueError: invalid x-api-key {echoed_key} for /srv/gateway/keys.py"


class Behavior:
    def run(self, handler: _Handler, request: Received, fake: FakeProvider) -> None:
        raise NotImplementedError


@dataclass
class Message(Behavior):
    """A normal answer: JSON for `stream: false`, an SSE stream for `stream: true`."""

    text: str = "Hello"
    model: str | None = None  # None: echo the model the request named
    headers: dict[str, str] = field(default_factory=dict)  # sent with the answer (rate-limit headers, say)

    def run(self, handler, request, fake):
        body = request.json() if request.body else {}
        model = self.model or body.get("model", "unknown")
        if request.path.startswith("/v1/messages/count_tokens"):
            handler.reply(200, {"input_tokens": 42}, self.headers)
        elif body.get("stream"):
            handler.stream([sse(e, d) for e, d in anthropic_stream_events(model, [self.text])], self.headers)
        else:
            handler.reply(200, anthropic_message(model, self.text), {"request-id": "req_fake", **self.headers})


@dataclass
class Stream(Behavior):
    """A streamed answer in pieces; after `gate_after` events it waits for `gate` (or `gate_timeout`)."""

    pieces: list[str] = field(default_factory=lambda: ["Hel", "lo"])
    gate: threading.Event | None = None
    gate_after: int = 1
    gate_timeout: float = 20.0
    gate_timed_out: bool | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        model = request.json().get("model", "unknown")
        events = [sse(e, d) for e, d in anthropic_stream_events(model, self.pieces)]
        handler.start_stream(200)
        try:
            for i, event in enumerate(events):
                if self.gate is not None and i == self.gate_after:
                    self.gate_timed_out = not self.gate.wait(self.gate_timeout)
                handler.write_chunk(event)
            handler.end_stream()
        finally:
            self.finished.set()


@dataclass
class RawStream(Behavior):
    """Writes the given SSE events (HTTP 200), then ends as told: "end" (cleanly), "drop" (closes the
    connection mid-body) or "stall" (writes nothing more until `release` is set or the other side hangs up;
    `peer_closed` tells which)."""

    events: list[bytes]
    ending: str = "end"
    release: threading.Event = field(default_factory=threading.Event)
    peer_closed: threading.Event = field(default_factory=threading.Event)
    stall_limit: float = 30.0

    def run(self, handler, request, fake):
        handler.start_stream(200)
        for event in self.events:
            handler.write_chunk(event)
        if self.ending == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.ending == "stall":
            if wait_for_peer_close(handler.connection, self.release, self.stall_limit, fake.stopping):
                self.peer_closed.set()
            handler.close_connection = True
            return
        handler.end_stream()


def wait_for_peer_close(conn: socket.socket, release: threading.Event, limit: float, stopping: threading.Event) -> bool:
    """Wait until the peer closes the connection (True), or `release`/`stopping` is set or `limit` passes."""
    deadline = time.monotonic() + limit
    while not release.is_set() and not stopping.is_set() and time.monotonic() < deadline:
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable:
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
    return False


@dataclass
class Silent(Behavior):
    """Reads the request and never answers, for `limit` seconds at most; `peer_closed` is set when the balancer
    closes the connection (a test's proof that the balancer let the provider go)."""

    limit: float = 90.0
    peer_closed: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        if wait_for_peer_close(handler.connection, threading.Event(), self.limit, fake.stopping):
            self.peer_closed.set()
        handler.close_connection = True


@dataclass
class Raw(Behavior):
    """Any body as given (an OpenAI-style stream or JSON), written in `piece`-byte chunks when piece > 0."""

    body: bytes
    content_type: str = "text/event-stream"
    status: int = 200
    piece: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def run(self, handler, request, fake):
        handler.send_response(self.status)
        handler.send_header("content-type", self.content_type)
        handler.send_header("transfer-encoding", "chunked")
        for k, v in self.headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        step = self.piece or len(self.body) or 1
        for start in range(0, len(self.body), step):
            handler.write_chunk(self.body[start : start + step])
        handler.end_stream()


@dataclass
class BrokenBody(Behavior):
    """Status and headers, then part of the body, then either the connection drops ("drop") or nothing more
    comes until the other side gives up ("stall")."""

    status: int = 200
    ending: str = "drop"
    body: bytes = b'{"type": "message", "content": [{"type": "text", "text": "cut sh'

    def run(self, handler, request, fake):
        handler.send_response(self.status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(self.body) + 500))
        handler.end_headers()
        handler.wfile.write(self.body)
        handler.wfile.flush()
        handler.close_connection = True
        if self.ending == "stall":
            wait_for_peer_close(handler.connection, threading.Event(), 30.0, fake.stopping)
        else:
            handler.connection.shutdown(socket.SHUT_RDWR)


def openai_json(body: dict[str, Any], status: int = 200, **headers: str) -> Raw:
    return Raw(json.dumps(body).encode(), content_type="application/json", status=status, headers=headers)


@dataclass
class Status(Behavior):
    """An error status with an Anthropic-shaped (or given) body."""

    status: int
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def run(self, handler, request, fake):
        body = self.body
        if body is None:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 503: "overloaded_error",
                    400: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
                    401: "authentication_error"}.get(self.status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": f"fake {self.status}"}}
        handler.reply(self.status, body, self.headers)


@dataclass
class Hang(Behavior):
    """Reads the request and never answers (until released or the fake stops)."""

    release: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        while not self.release.wait(0.05) and not fake.stopping.is_set():
            pass
        handler.close_connection = True


class Reset(Behavior):
    """Reads the request and resets the connection (RST) without a response."""

    def run(self, handler, request, fake):
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.close_connection = True
        handler.connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Small writes (one SSE event each) go out at once, as a real provider's do.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake.connections += 1

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        behavior = fake.next_behavior(request)
        behavior.run(self, request, fake)

    do_POST = do_GET = _handle

    def reply(self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_stream(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def stream(self, events: list[bytes], headers: dict[str, str] | None = None) -> None:
        self.start_stream(200, headers)
        for event in events:
            self.write_chunk(event)
        self.end_stream()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    fake: FakeProvider


class FakeProvider:
    def __init__(self, default: Behavior | None = None, tls: ssl.SSLContext | None = None):
        self.default = default or Message()
        self.script: deque[Behavior] = deque()
        self.requests: list[Received] = []
        self.connections = 0  # TCP connections accepted
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def then(self, *behaviors: Behavior) -> FakeProvider:
        self.script.extend(behaviors)
        return self

    def next_behavior(self, request: Received) -> Behavior:
        with self._lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else self.default

    @property
    def message_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Blackhole:
    """A loopback port where TCP connects hang (the accept queue is full and never drained), as with a provider
    behind a firewall that drops packets."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(0)
        self.port = self._server.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port))  # takes the only queue slot

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self._filler.close()
        self._server.close()
