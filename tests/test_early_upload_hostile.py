"""Hostile checks of the early upload (addon/early_upload.py, http1_transport.EarlyRequest): bytes written before
the balancer decided must never reach a provider the decision rules out, and never form a request a provider can
act on."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx

from addon.early_upload import EARLY_ABOVE
from addon.http1_transport import DECLINED, TAKEN, UNUSED, Http1Transport
from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Hang, Message, Status
from helpers import anthropic_provider, metric, wait_until
from strict_fakes import StrictRelay
from test_early_upload import recording, transported, warm

BIG = "x" * (EARLY_ABOVE + 10_000)
# A 1x1 PNG: enough for the balancer to see an image in the request.
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def body(content: object = BIG, **extra: object) -> bytes:
    return json.dumps({"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": content}],
                       **extra}).encode()


def is_json(data: bytes) -> bool:
    """Whether `data` is a whole JSON document (an incomplete one is nothing a provider can act on)."""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def post(balancer: BalancerProcess, payload: bytes) -> httpx.Response:
    return httpx.post(balancer.url + "/v1/messages", content=payload, timeout=60,
                      headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})


def early_uploads(balancer: BalancerProcess, provider: str) -> float:
    return sum(metric(balancer, "balancer_early_uploads_total", provider=provider, outcome=outcome) or 0.0
               for outcome in (TAKEN, DECLINED, UNUSED))


def counted(balancer: BalancerProcess, provider: str, status: str) -> float:
    """Requests the metrics have seen end (the early upload's outcome is counted with them)."""
    return metric(balancer, "balancer_requests_total", kind="messages", provider=provider, status=status) or 0.0


def test_no_bytes_of_a_request_with_images_go_to_a_provider_with_images_false(
    balancer: BalancerProcess, unique: str
) -> None:
    """`images: false` is a hard rule of the plan (provider_fit.unfit_for): such a request never goes there. The
    guess does not look at the body, so the provider that served the client's last (text) request gets the image
    request but for its last byte."""
    blind, seeing = f"blind-{unique}", f"seeing-{unique}"
    with recording() as blind_provider, recording() as seeing_provider:
        balancer.use([anthropic_provider(blind, blind_provider.url, images=False),
                      anthropic_provider(seeing, seeing_provider.url)])
        assert post(balancer, body("hello")).headers["x-balancer-provider"] == blind
        image = body([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                      {"type": "text", "text": BIG}])
        answer = post(balancer, image)
        assert answer.headers["x-balancer-provider"] == seeing
        wait_until(lambda: counted(balancer, seeing, "200") == 1, what="the image request's metrics")
        assert early_uploads(balancer, blind) == 0, "image bytes were written to the images: false provider"
        assert blind_provider.cut == [] and len(blind_provider.complete) == 1


def test_a_provider_never_holds_a_complete_json_request_the_balancer_refused(
    balancer: BalancerProcess, unique: str
) -> None:
    """A body that ends in white space after its closing brace: all of it but the last byte is the whole JSON
    document. Closing the early connection (a FIN after the buffered bytes are flushed) is not a refusal to a
    server that reads `content-length` bytes or to the end, as Python's http.server does (rfile.read returns
    short at the end of the stream): tests/fakes.py's own provider then takes the refused request as a whole one
    and answers it (a real provider would run, and bill, it)."""
    name = f"a-{unique}"
    with FakeProvider() as provider:
        balancer.use([anthropic_provider(name, provider.url)])
        assert post(balancer, body()).status_code == 200
        no_max_tokens = json.dumps({"model": "claude-sonnet-4",
                                    "messages": [{"role": "user", "content": BIG}]}).encode() + b"\n"
        answer = post(balancer, no_max_tokens)
        assert answer.status_code == 400 and "max_tokens" in answer.json()["error"]["message"]
        wait_until(lambda: counted(balancer, "none", "400") >= 1, what="the refused request's metrics")
        if early_uploads(balancer, name):  # bytes went early: wait for the provider to see their connection end
            wait_until(lambda: len(provider.message_requests) >= 2, what="the early connection's end")
        acted_on = [received.body for received in provider.message_requests[1:] if is_json(received.body)]
        assert acted_on == [], "the provider got the refused request as a complete JSON document"


@dataclass
class Together(Behavior):
    """Answers once the fake has had `count` requests: so many connections are open to it at once."""

    count: int

    def run(self, handler, request, fake):  # type: ignore[no-untyped-def]
        wait_until(lambda: len(fake.requests) >= self.count, what=f"{self.count} requests at once")
        Message().run(handler, request, fake)


def test_no_bytes_go_early_to_a_provider_a_probe_is_testing(
    balancer: BalancerProcess, unique: str
) -> None:
    """After a cooldown, one probe request tests the provider and the others are planned after every other
    provider rather than piling onto one that may still be down (health.is_available). The guess checks only
    `is_cooling_down`: while the probe hangs, a large request goes to the other provider, but its bytes went to
    the probed one first."""
    p, q = f"p-{unique}", f"q-{unique}"
    probe_hangs = Hang()
    with FakeProvider() as first, FakeProvider() as second:
        first.then(Together(2), Together(2), Status(500), probe_hangs)
        balancer.use([anthropic_provider(p, first.url), anthropic_provider(q, second.url)],
                     failure_cooldown=0, failure_rate=0.1)
        with ThreadPoolExecutor(2) as pool:  # two kept connections to p, and p served this client's model
            served = list(pool.map(lambda _: post(balancer, body("hello")).headers["x-balancer-provider"], (1, 2)))
        assert served == [p, p]
        other_model = json.dumps({"model": "claude-haiku-4", "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]}).encode()
        assert post(balancer, other_model).headers["x-balancer-provider"] == q  # p failed: a cooldown of 0 s
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(post, balancer, other_model)
            try:
                wait_until(lambda: len(first.requests) == 4, what="the probe at p")
                assert post(balancer, body()).headers["x-balancer-provider"] == q
                wait_until(lambda: counted(balancer, q, "200") >= 2, what="the large request's metrics")
                assert early_uploads(balancer, p) == 0, "bytes went early to the provider under probe"
            finally:
                probe_hangs.release.set()
                probe.result(60)


def test_a_body_that_is_not_json_gets_its_400_when_the_provider_has_learned_a_fix(
    balancer: BalancerProcess, unique: str
) -> None:
    """With a fix learned for the guessed provider (here: without a beta value), the guess writes the body out
    again through json_codec.exact, which reads the whole unchecked body with the standard library when it holds
    a run of 20 digits. A body that is not JSON then raises there, before the balancer's own checks: the client
    gets a 500 "internal error" (which Claude Code retries) instead of its 400."""
    name = f"relay-{unique}"
    refused = "refused-beta-2099-01-01"
    with FakeProvider(StrictRelay(betas_refused=frozenset({refused}))) as provider:
        balancer.use([anthropic_provider(name, provider.url)])
        learn = httpx.post(balancer.url + "/v1/messages", content=body("hello"), timeout=60,
                           headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                                    "anthropic-beta": refused})
        assert learn.status_code == 200
        assert balancer.provider_status(name)["learned"] == {"claude-sonnet-4": [f"without beta {refused}"]}
        broken = body(BIG, n=123456789012345678901)[:-1]  # no closing brace: not JSON
        answer = post(balancer, broken)
        assert (answer.status_code, answer.json()["error"]["type"]) == (400, "invalid_request_error"), answer.text


def test_a_clients_own_key_goes_to_a_passthrough_provider_only_when_its_request_does(
    balancer: BalancerProcess, unique: str
) -> None:
    """Without client keys every client is the same `client` to ServedBefore. Alice's request failed over to the
    passthrough provider; Bob's large request is served by the first provider, which recovered, and never needed
    the passthrough one: Bob's own key must not reach it (the early head carries it)."""
    first, relay = f"first-{unique}", f"relay-{unique}"
    alice, bob = f"sk-ant-alice-{unique}", f"sk-ant-bob-{unique}"
    with FakeProvider() as own_key, FakeProvider() as passthrough:
        own_key.then(Status(500))
        balancer.use([anthropic_provider(first, own_key.url),
                      anthropic_provider(relay, passthrough.url, auth_type="passthrough")],
                     failure_cooldown=0, failure_rate=0.1)

        def post_as(key: str, payload: bytes) -> httpx.Response:
            return httpx.post(balancer.url + "/v1/messages", content=payload, timeout=60,
                              headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                                       "x-api-key": key})

        assert post_as(alice, body("hello")).headers["x-balancer-provider"] == relay
        assert post_as(bob, body()).headers["x-balancer-provider"] == first
        wait_until(lambda: counted(balancer, first, "200") == 1, what="Bob's request's metrics")
        if early_uploads(balancer, relay):
            wait_until(lambda: len(passthrough.requests) >= 2, what="the early connection's end")
        keys = [received.headers.get("x-api-key") for received in passthrough.requests]
        assert bob not in keys, "Bob's key reached a provider his request never went to"
        assert keys == [alice]


@contextmanager
def stops_reading() -> Iterator[str]:
    """A raw HTTP/1.1 provider that answers its first request, then reads nothing more on that connection (busy,
    or hung) until the test ends; its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        with suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                received = b""
                while b"\r\n\r\n" not in received:
                    received += conn.recv(65536)
                head, rest = received.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                stopping.wait(120)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()
        thread.join(10)


async def let_go(connection: Any, what: str) -> None:
    """Fails unless `connection` (an http1_transport connection) is closed within 20 s; stops it either way."""
    try:
        await asyncio.wait_for(connection.writer.wait_closed(), 20)
    except TimeoutError:
        held = connection.writer.transport.get_write_buffer_size()
        connection.writer.transport.abort()
        raise AssertionError(f"{what} is still open, {held} bytes buffered") from None


def test_an_early_connection_no_request_takes_is_let_go_even_when_the_provider_reads_no_more() -> None:
    """`abandon` closes the connection with asyncio's close(), which first writes out what is still buffered: to a
    provider that reads nothing more, never. The descriptor and the unsent part of the body (megabytes) stay held
    with no deadline, once per large request guessed for that provider."""
    large = body("y" * (8 * 1024 * 1024))
    with stops_reading() as url:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> None:
            await warm(client, url)
            written = transport.write_early(client.build_request("POST", url + "/v1/messages", content=large))
            assert written is not None
            connection = written._connection
            assert connection is not None
            written.abandon()
            assert written.outcome == UNUSED
            await let_go(connection, "the abandoned connection")

        transported(scenario)
