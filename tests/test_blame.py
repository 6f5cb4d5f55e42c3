"""Blame the right party, through the real mitmdump: a client that leaves is never the provider's fault."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer_proc import BalancerProcess, anthropic_provider
from fakes import (
    FIRST_DELTA,
    Behavior,
    FakeProvider,
    RawStream,
    Status,
    stream_events,
    wait_for_peer_close,
)
from test_openai_e2e import openai_provider

MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MESSAGES}
# Far above how long any test here waits: a provider released before this was released because the client left.
LONG_TIMEOUT = 60
# A generous deadline for what the balancer does within a second.
DEADLINE = 15.0


def wait_until(condition, timeout: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Silent(Behavior):
    """Reads the request and never answers; `peer_closed` is set when the balancer closes the connection."""

    peer_closed: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        if wait_for_peer_close(handler.connection, threading.Event(), LONG_TIMEOUT + 30, fake.stopping):
            self.peer_closed.set()
        handler.close_connection = True


def raw_request(port: int, body: dict) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%b" % (len(payload), payload))
    return sock


def metric(balancer: BalancerProcess, name: str, **labels: str) -> float:
    text = httpx.get(balancer.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def request_line(balancer: BalancerProcess, provider: str) -> str | None:
    """The log's line for the request whose attempts name `provider`, once it is written."""
    lines = [line for line in balancer.log_lines if " | attempts: " in line and f" {provider} " in line]
    return lines[-1] if lines else None


def assert_blameless(balancer: BalancerProcess, name: str) -> None:
    status = balancer.provider_status(name)
    assert (status["healthy"], status["cooldown_remaining"], status["probing"]) == (True, 0, False)
    assert (status["failures"], status["consecutive_failures"], status["last_error"]) == (0, 0, None)


# -- 1. a client that leaves is never the provider's fault ---------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_leaving_before_the_headers_releases_the_provider_and_blames_nobody(balancer, unique, stream):
    silent = Silent()
    name = f"a-{unique}"
    with FakeProvider(silent) as fake:
        balancer.use([anthropic_provider(name, fake.url)], request_timeout=LONG_TIMEOUT)
        gone_before = metric(balancer, "balancer_requests_total", kind="messages", provider="none",
                             status="client_gone")
        sock = raw_request(balancer.port, {**BODY, "stream": stream})
        wait_until(lambda: len(fake.requests) == 1, what="the attempt")
        sock.close()
        # Released long before request_timeout: the provider stops working for nobody.
        assert silent.peer_closed.wait(DEADLINE), "the provider connection was held after the client left"
        wait_until(lambda: request_line(balancer, name) is not None, what="the request's log line")

        line = request_line(balancer, name)
        assert " client gone | attempts: " in line
        assert f"attempts: {name} client gone " in line
        assert_blameless(balancer, name)
        assert metric(balancer, "balancer_requests_total", kind="messages", provider="none",
                      status="client_gone") == gone_before + 1
        assert metric(balancer, "balancer_attempt_failures_total", provider=name, **{"class": "timeout"}) == 0


def test_a_client_leaving_during_failover_blames_only_the_provider_that_failed(balancer, unique):
    silent = Silent()
    a, b, c = f"a-{unique}", f"b-{unique}", f"c-{unique}"
    with FakeProvider(Status(529)) as overloaded, FakeProvider(silent) as second, FakeProvider() as third:
        balancer.use([anthropic_provider(a, overloaded.url), anthropic_provider(b, second.url),
                      anthropic_provider(c, third.url)], request_timeout=LONG_TIMEOUT)
        sock = raw_request(balancer.port, {**BODY, "stream": True})
        wait_until(lambda: len(second.requests) == 1, what="the failover to b")
        sock.close()
        assert silent.peer_closed.wait(DEADLINE), "b's connection was held after the client left"
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")

        assert f"{a} HTTP 529 overloaded_error" in request_line(balancer, b)
        assert f"{b} client gone " in request_line(balancer, b)
        assert third.requests == []  # nobody waits for an answer: the next provider is not asked
        assert_blameless(balancer, b)
        assert balancer.provider_status(a)["failures_by_class"] == {"overloaded": 1}


COMMITTED = {  # a stream's opening and its first content, by provider type
    "anthropic": stream_events(pieces=["partial"])[: FIRST_DELTA + 1],
    "openai": [b'data: {"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-big",'
               b'"choices":[{"index":0,"delta":{"role":"assistant","content":"partial"},"finish_reason":null}]}\n\n'],
}


@pytest.mark.parametrize("provider_type", ["anthropic", "openai"])
def test_a_client_leaving_mid_stream_blames_nobody(balancer, unique, provider_type):
    """Every press of Esc in Claude Code: the provider's stream is closed, and it is not counted as failing."""
    behind = RawStream(COMMITTED[provider_type], ending="stall", stall_limit=LONG_TIMEOUT)
    name = f"a-{unique}"
    with FakeProvider(behind) as fake:
        make = anthropic_provider if provider_type == "anthropic" else openai_provider
        balancer.use([make(name, fake.url)], stream_idle_timeout=LONG_TIMEOUT)
        gone_before = metric(balancer, "balancer_requests_total", kind="messages", provider=name,
                             status="client_gone")
        with httpx.Client(timeout=10) as http:
            with http.stream("POST", balancer.url + "/v1/messages", json={**BODY, "stream": True}) as response:
                chunks = response.iter_raw()  # kept referenced: a dropped iterator closes the response
                received = b""
                while b"partial" not in received:
                    received += next(chunks)
        assert behind.peer_closed.wait(DEADLINE), "the provider kept generating for nobody"
        wait_until(lambda: request_line(balancer, name) is not None, what="the request's log line")
        wait_until(lambda: httpx.get(balancer.url + "/providers", timeout=10).json()["open_streams"] == 0,
                   what="no open streams")

        assert " stream client gone | attempts: " in request_line(balancer, name)
        status = balancer.provider_status(name)
        assert (status["healthy"], status["failures"], status["last_error"]) == (True, 0, None)
        assert metric(balancer, "balancer_requests_total", kind="messages", provider=name,
                      status="client_gone") == gone_before + 1
