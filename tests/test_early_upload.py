"""A large request written to a provider before its body is read (addon/early_upload.py, and
http1_transport.EarlyRequest): the provider gets the request only once the balancer has decided to send exactly
that one; any other outcome leaves it an incomplete request on a closed connection, and nothing is decided
differently."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx
import pytest
import yaml
from mitmproxy.test import taddons

from addon.capabilities import DROP, Fix
from addon.early_upload import EARLY_ABOVE, MODEL_CHARACTERS, EarlyUpload, ServedBefore, start_early_upload
from addon.exchange import Exchange
from addon.http1_transport import DECLINED, EARLY, TAKEN, UNUSED, EarlyRequest, Http1Transport
from addon.providers import Providers
from addon.request_body import first_model
from addon.upstream import ClientPool
from fakes import Behavior, FakeProvider, Message, Status
from helpers import anthropic_message, anthropic_provider, metric, wait_until
from test_http1_transport import polled

BIG = "x" * (EARLY_ABOVE + 10_000)
ANSWER = json.dumps(anthropic_message("claude-sonnet-4", "hello")).encode()


# -- a provider that tells complete requests from the ones cut short ---------------------------------------------
@dataclass
class Recorder:
    """A raw HTTP/1.1 provider on 127.0.0.1: every complete request is answered with a message and kept in
    `complete` (connection number, body); a connection that ends (closed or reset) inside a request is kept in
    `cut` (connection number, bytes of the body read, content-length; -1 for what its head did not tell yet). A
    reset may drop bytes that had arrived but were not read yet: only the length is exact then."""

    complete: list[tuple[int, bytes]] = field(default_factory=list)
    cut: list[tuple[int, int, int]] = field(default_factory=list)
    connections: int = 0
    # Set once a connection has all of a body but its last byte (the test then decides what happens next).
    one_short: threading.Event = field(default_factory=threading.Event)
    answer_early: bool = False  # answer 413 to the first request the moment it is one byte short, and close
    url: str = ""

    def serve(self, conn: socket.socket, number: int) -> None:
        buffer, length = b"", -1
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        if buffer:
                            self.cut.append((number, -1, -1))
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    if len(buffer) == length - 1:
                        self.one_short.set()
                        if self.answer_early:
                            self.answer_early = False
                            conn.sendall(b"HTTP/1.1 413 Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                            return
                    data = conn.recv(65536)
                    if not data:
                        self.cut.append((number, len(buffer), length))
                        return
                    buffer += data
                self.complete.append((number, buffer[:length]))
                buffer, length = buffer[length:], -1
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(ANSWER), ANSWER))
        except ConnectionResetError:
            self.cut.append((number, len(buffer) if length >= 0 else -1, length))

    def cut_short(self) -> list[tuple[int, int]]:
        """(connection number, content-length) of each request cut short, checking it was: fewer bytes read."""
        assert all(received < length or length == -1 for _, received, length in self.cut), self.cut
        return [(number, length) for number, _, length in self.cut]


@contextmanager
def recording(**options: object) -> Iterator[Recorder]:
    recorder = Recorder(**options)  # type: ignore[arg-type]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    recorder.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    stopping = threading.Event()
    open_connections: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket, number: int) -> None:
        with conn:
            conn.settimeout(30)
            with suppress(OSError):
                recorder.serve(conn, number)

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            recorder.connections += 1
            open_connections.append(conn)
            thread = threading.Thread(target=handle, args=(conn, recorder.connections), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield recorder
    finally:
        stopping.set()
        acceptor.join(10)
        listener.close()
        for conn in open_connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(10)


# -- the transport ------------------------------------------------------------------------------------------------
def body(text: str = BIG, **extra: object) -> bytes:
    return json.dumps({"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": text}],
                       **extra}).encode()


def transported(scenario: Callable[[httpx.AsyncClient, Http1Transport], Awaitable[object]]) -> object:
    async def run() -> object:
        transport = Http1Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            return await scenario(client, transport)

    return asyncio.run(run())


async def warm(client: httpx.AsyncClient, url: str) -> None:
    """One exchange, so that the transport keeps an idle connection to `url`."""
    assert (await client.post(url, content=body("warm"))).status_code == 200


async def one_short(recorder: Recorder) -> None:
    await asyncio.to_thread(recorder.one_short.wait, 30)
    assert recorder.one_short.is_set()


def test_the_request_written_early_is_completed_by_its_last_byte_on_the_same_connection() -> None:
    with recording() as provider:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> tuple[int, str | None]:
            await warm(client, provider.url)
            request = client.build_request("POST", provider.url + "/v1/messages", content=body())
            written = transport.write_early(request)
            assert written is not None
            await one_short(provider)  # the provider has it all but the last byte, before it is sent
            assert len(provider.complete) == 1
            request.extensions[EARLY] = written
            response = await client.send(request)
            return response.status_code, written.outcome

        assert transported(scenario) == (200, TAKEN)
        assert [number for number, _ in provider.complete] == [1, 1]  # one connection, two requests
        assert provider.complete[1][1] == body() and provider.cut == []


def test_another_request_is_sent_on_its_own_and_the_early_bytes_stay_incomplete() -> None:
    with recording() as provider:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> tuple[int, str | None]:
            await warm(client, provider.url)
            written = transport.write_early(client.build_request("POST", provider.url + "/v1/messages",
                                                                 content=body()))
            assert written is not None
            await one_short(provider)
            other = client.build_request("POST", provider.url + "/v1/messages", content=body(BIG + "!"))
            other.extensions[EARLY] = written
            response = await client.send(other)
            return response.status_code, written.outcome

        assert transported(scenario) == (200, DECLINED)
        wait_until(lambda: provider.cut, what="the early connection's end")
        length = len(body())
        assert provider.cut == [(1, length - 1, length)]  # read to its last byte before the test went on
        assert [(number, sent) for number, sent in provider.complete[1:]] == [(2, body(BIG + "!"))]


def test_early_bytes_no_request_takes_are_left_incomplete() -> None:
    with recording() as provider:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> str | None:
            await warm(client, provider.url)
            written = transport.write_early(client.build_request("POST", provider.url + "/", content=body()))
            assert written is not None
            await one_short(provider)
            written.abandon()
            return written.outcome

        assert transported(scenario) == UNUSED
        wait_until(lambda: provider.cut, what="the early connection's end")
        assert provider.cut == [(1, len(body()) - 1, len(body()))] and len(provider.complete) == 1


def test_a_connection_the_provider_answered_on_meanwhile_is_not_taken() -> None:
    """A provider that answers (413) the moment it has the head and most of the body: that answer belongs to no
    request yet; the request is sent again on a new connection and gets its own answer."""
    with recording() as provider:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> tuple[int, str | None]:
            await warm(client, provider.url)
            provider.answer_early = True
            request = client.build_request("POST", provider.url + "/", content=body())
            written = transport.write_early(request)
            assert written is not None
            await one_short(provider)
            connection = written._connection
            assert connection is not None
            await polled(lambda: not connection.untouched(), "the answer in the connection's reader")
            request.extensions[EARLY] = written
            response = await client.send(request)
            return response.status_code, written.outcome

        assert transported(scenario) == (200, DECLINED)
        assert [number for number, _ in provider.complete] == [1, 2]


def test_nothing_is_written_early_without_an_idle_connection() -> None:
    with recording() as provider:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> object:
            return transport.write_early(client.build_request("POST", provider.url + "/", content=body()))

        assert transported(scenario) is None
        assert provider.connections == 0


def test_served_before_remembers_the_latest_provider_per_client_and_model_within_its_size() -> None:
    served = ServedBefore(size=2)
    served.remember(None, "m", "a")
    served.remember("team", "m", "b")
    served.remember(None, "m", "c")  # the latest wins, and is the freshest
    served.remember(None, "n", "d")  # over the size: the oldest pair goes
    assert (served.provider(None, "m"), served.provider("team", "m"), served.provider(None, "n")) == ("c", None, "d")
    long_name = "m" * (MODEL_CHARACTERS + 1)  # a client's text: a thousand such names must not cost megabytes
    served.remember(None, long_name, "a")
    assert served.provider(None, long_name) is None and served.provider(None, "n") == "d"


def test_no_guess_for_a_provider_whose_requests_are_written_out_again(tmp_path) -> None:
    """A provider that has refused a part of such requests before gets them re-encoded without it: that body comes
    from the whole parsed one, so nothing is guessed (it would read the body a second time to guess)."""
    long_integer = body(BIG, metadata={"user_id": "u", "n": 10**25})  # the re-encoding would read it exactly
    with recording() as provider:
        file = tmp_path / "providers.yaml"
        file.write_text(yaml.safe_dump({"providers": [anthropic_provider("a", provider.url)]}))
        providers = Providers()
        with taddons.context(providers) as tctx:
            tctx.configure(providers, providers=str(file))

            async def scenario() -> tuple[bool, bool]:
                pool = ClientPool()
                served = ServedBefore()
                served.remember(None, "claude-sonnet-4", "a")
                await warm(pool.get(None), provider.url)

                def start() -> EarlyUpload | None:
                    return start_early_upload(providers, pool, served, None, "POST", "/v1/messages",
                                              [("content-type", "application/json")], long_integer)

                before = start()
                assert before is not None
                before.over()
                await warm(pool.get(None), provider.url)  # an idle connection again
                providers.capabilities.learn(providers.config.providers[0], "claude-sonnet-4",
                                             [Fix(DROP, "context_management")])
                after = start()
                await pool.aclose()
                return before is not None, after is None

            assert asyncio.run(scenario()) == (True, True)


# -- through the running balancer ---------------------------------------------------------------------------------
def post(balancer, payload: bytes) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(balancer.url + "/v1/messages", content=payload, timeout=60,
                      headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})


def early_uploads(balancer, provider: str, outcome: str) -> float:  # type: ignore[no-untyped-def]
    return metric(balancer, "balancer_early_uploads_total", provider=provider, outcome=outcome) or 0.0


def test_the_next_large_request_goes_to_the_provider_early_and_is_sent_by_its_last_byte(balancer, unique):
    with recording() as provider:
        a = f"a-{unique}"
        balancer.use([anthropic_provider(a, provider.url)])
        assert post(balancer, body()).status_code == 200  # nothing to go by yet
        assert early_uploads(balancer, a, TAKEN) == 0
        second = body(BIG + "second")
        assert post(balancer, second).status_code == 200
        assert early_uploads(balancer, a, TAKEN) == 1
        assert [sent for _, sent in provider.complete] == [body(), second]
        assert provider.cut == [] and provider.connections == 1


def test_a_request_the_checks_refuse_never_reaches_the_provider_whole(balancer, unique):
    """Its bytes went early, but not the last: the provider has an incomplete request on a closed connection."""
    with recording() as provider:
        a = f"a-{unique}"
        balancer.use([anthropic_provider(a, provider.url)])
        assert post(balancer, body()).status_code == 200
        refused = json.dumps({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": BIG}]}).encode()
        answer = post(balancer, refused)
        assert answer.status_code == 400 and "max_tokens" in answer.json()["error"]["message"]
        wait_until(lambda: provider.cut, what="the early connection's end")
        assert provider.cut_short() in ([(1, len(refused))], [(1, -1)])
        assert len(provider.complete) == 1
        assert early_uploads(balancer, a, UNUSED) == 1


def test_a_second_model_key_makes_the_request_another_one(balancer, unique):
    """`model` twice: the early bytes carry the first; the balancer sends one `model`, the one it routes by, on
    another connection."""
    with recording() as provider:
        a = f"a-{unique}"
        balancer.use([anthropic_provider(a, provider.url, big_model="mapped-big")])
        assert post(balancer, body()).status_code == 200
        twice = body()[:-1] + b', "model": "claude-opus-4"}'
        assert post(balancer, twice).status_code == 200
        wait_until(lambda: provider.cut, what="the early connection's end")
        guessed = len(twice) - len("claude-sonnet-4") + len("mapped-big")  # the first model, mapped
        assert provider.cut_short() in ([(1, guessed)], [(1, -1)])
        sent = provider.complete[1][1]
        assert sent.count(b'"model"') == 1 and json.loads(sent)["model"] == "mapped-big"
        assert early_uploads(balancer, a, DECLINED) == 1


def test_no_bytes_go_early_where_routes_decide_or_to_a_provider_no_longer_enabled(balancer, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    with recording() as first, recording() as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)])
        assert post(balancer, body()).status_code == 200
        assert len(first.complete) == 1
        # The provider that served is disabled: the next request goes to the other one, and only to it.
        balancer.use([anthropic_provider(a, first.url, enabled=False), anthropic_provider(b, second.url)])
        assert post(balancer, body()).status_code == 200
        # Routes: a route may keep requests away from a provider, so nothing is guessed.
        document = {
            "providers": [anthropic_provider(a, first.url), anthropic_provider(b, second.url)],
            "routes": [{"name": "opus", "when": {"model": "claude-opus*"}, "providers": [a]}],
        }
        balancer.providers_file.write_text(yaml.safe_dump(document, sort_keys=False))
        assert balancer.reload().status_code == 200
        assert post(balancer, body()).status_code == 200
        assert post(balancer, body()).status_code == 200
    assert (len(first.complete), len(second.complete)) == (3, 1)
    assert first.cut == [] and second.cut == []
    assert all(early_uploads(balancer, name, outcome) == 0
               for name in (a, b) for outcome in (TAKEN, DECLINED, UNUSED))


@dataclass
class AnswerSayingWhetherCut(Behavior):
    """Answers once `recorder` has had a connection cut short (or after 10 s), saying which it was."""

    recorder: Recorder

    def run(self, handler, request, fake):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not self.recorder.cut and time.monotonic() < deadline:
            time.sleep(0.01)
        said = "cut before this answer" if self.recorder.cut else "still open"
        handler.reply(200, anthropic_message("claude-sonnet-4", said), {})


def test_a_first_attempt_at_another_provider_closes_the_early_connection_at_once(balancer, unique):
    """b (first in the list) failed the first request and a served it; b is asked first again (no cooldown). The
    bytes written early to a are never completed, and their connection is closed as soon as b is asked, not once
    the request is over (b answers only after a's connection was cut)."""
    a, b = f"a-{unique}", f"b-{unique}"
    with recording() as second, FakeProvider(Message()).then(Status(500)) as first:
        first.then(AnswerSayingWhetherCut(second))
        balancer.use([anthropic_provider(b, first.url), anthropic_provider(a, second.url)], failure_cooldown=0)
        assert post(balancer, body()).headers["x-balancer-provider"] == a
        answer = post(balancer, body())
        assert answer.headers["x-balancer-provider"] == b
        assert answer.json()["content"][0]["text"] == "cut before this answer"
        assert second.cut_short() in ([(1, len(body()))], [(1, -1)]) and len(second.complete) == 1
        assert early_uploads(balancer, a, UNUSED) == 1


@pytest.mark.parametrize("settings", [{"strategy": "round_robin"}, {"strategy": "priority", "affinity": "session"}],
                         ids=["round-robin", "session-affinity"])
def test_no_bytes_go_early_where_each_request_or_session_has_its_own_provider(balancer, unique, settings):
    """A turning strategy sends the next request to the next provider, and session affinity each session to its
    own: the provider that served last is no guess for them."""
    a, b = f"a-{unique}", f"b-{unique}"
    with recording() as first, recording() as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], **settings)
        for _ in range(4):
            assert post(balancer, body()).status_code == 200
        assert len(first.complete) + len(second.complete) == 4
        assert first.cut == [] and second.cut == []
    assert all(early_uploads(balancer, name, outcome) == 0
               for name in (a, b) for outcome in (TAKEN, DECLINED, UNUSED))


def test_the_request_built_for_the_guessed_provider_is_the_very_body_written_early() -> None:
    """The body with its model mapped is made once per request and model (and model span): the attempt at the
    provider guessed sends the bytes written early, not a copy (no second megabyte, and the check that it is the
    same request compares two names for one object); a body read with another span is built anew."""
    payload = body()
    model, span = first_model(payload) or ("", (0, 0))

    def exchange(model_span: tuple[int, int] | None) -> Exchange:
        return Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[], body=payload,
                        parsed={"model": model}, requested_model=model, stream=False, idle_timeout=0.0,
                        on_committed_failure=lambda *_: None, model_span=model_span)

    guess, real, duplicate = exchange(span), exchange(span), exchange(None)
    written = guess.body_for("mapped")
    assert guess.body_for("mapped") is written and json.loads(written)["model"] == "mapped"
    early = EarlyUpload("a", EarlyRequest(Http1Transport(), None, b"", written), guess)  # type: ignore[arg-type]
    early.lend(real)
    early.lend(duplicate)
    assert real.body_for("mapped") is written
    assert duplicate.body_for("mapped") == written and duplicate.body_for("mapped") is not written
