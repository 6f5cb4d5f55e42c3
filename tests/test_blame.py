"""Blame the right party, through the real mitmdump: a client that leaves is never the provider's fault; a request
fails only after every provider had its chance; the status says what happened."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

import helpers
from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Message, RawStream, Reset, Silent, Status
from helpers import FIRST_DELTA, anthropic_provider, free_port, openai_provider, raw_request, stream_events, wait_until

MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MESSAGES}
# Far above how long any test here waits: a provider released before this was released because the client left.
LONG_TIMEOUT = 60
# A generous deadline for what the balancer does within a second.
DEADLINE = 15.0


def metric(balancer: BalancerProcess, name: str, **labels: str) -> float:
    return helpers.metric(balancer, name, **labels) or 0.0  # a counter not yet exported has counted nothing


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
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", balancer.url + "/v1/messages", json={**BODY, "stream": True}) as response,
        ):
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


# -- 2. no 503 while a provider could still serve --------------------------------------------------------------

SOAK_SEED = 1
SOAK_REQUESTS = 800
SOAK_SHARE = 0.2  # of requests each provider answers with 529


def coin_fails(provider: int, request: int) -> bool:
    """Whether `provider` answers request number `request` with 529: independent, seeded, and the same whatever
    order the requests arrive in."""
    return random.Random(f"{SOAK_SEED}:{provider}:{request}").random() < SOAK_SHARE


class Coin(Behavior):
    """529 for the requests coin_fails picks for this provider, a normal answer for the others."""

    def __init__(self, provider: int):
        self.provider = provider

    def run(self, handler, request, fake):
        number = int(request.json()["messages"][0]["content"].split()[-1])
        (Status(529) if coin_fails(self.provider, number) else Message()).run(handler, request, fake)


@pytest.mark.slow
def test_a_request_fails_only_when_every_provider_failed_it(balancer, unique):
    """Four providers that each answer 20% of requests with 529, independently: on default settings a request
    fails only when all four failed it (0.2^4 = 0.16% of requests), not whenever the balancer's cooldowns say so."""
    fakes = [FakeProvider(Coin(i)) for i in range(4)]
    for fake in fakes:
        fake.start()
    try:
        balancer.use([anthropic_provider(f"p{i}-{unique}", fake.url) for i, fake in enumerate(fakes)])

        async def soak() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=8)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                gate = asyncio.Semaphore(8)

                async def one(n: int) -> httpx.Response:
                    body = {**BODY, "messages": [{"role": "user", "content": f"request {n}"}], "stream": n % 2 == 0}
                    async with gate:
                        return await http.post(balancer.url + "/v1/messages", json=body)

                return await asyncio.gather(*[one(n) for n in range(SOAK_REQUESTS)])

        responses = asyncio.run(soak())
    finally:
        for fake in fakes:
            fake.stop()

    failed = [n for n, response in enumerate(responses) if response.status_code != 200]
    all_four_failed = [n for n in range(SOAK_REQUESTS) if all(coin_fails(p, n) for p in range(4))]
    assert all_four_failed  # the seed gives the test a request that cannot be served
    assert failed == all_four_failed
    assert len(failed) / SOAK_REQUESTS < 0.01
    for n in failed:
        assert responses[n].status_code == 529
        assert responses[n].json()["error"]["type"] == "overloaded_error"


def post(balancer: BalancerProcess, stream: bool = False) -> httpx.Response:
    return httpx.post(balancer.url + "/v1/messages", json={**BODY, "stream": stream}, timeout=30)


def test_one_error_among_successes_does_not_cool_a_provider_down(balancer, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    with FakeProvider() as first, FakeProvider() as second:
        first.then(Message(), Message(), Message(), Status(529), Message(), Status(529), Status(529), Status(529))
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], failure_cooldown=600)
        assert [post(balancer).headers["x-balancer-provider"] for _ in range(4)] == [a, a, a, b]
        status = balancer.provider_status(a)
        assert (status["healthy"], status["failures"], status["consecutive_failures"]) == (True, 1, 1)
        assert post(balancer).headers["x-balancer-provider"] == a  # still first in line

        # Errors that make up half of its latest answers do cool it down: S S S F S F F F.
        assert [post(balancer).headers["x-balancer-provider"] for _ in range(2)] == [b, b]
        assert balancer.provider_status(a)["healthy"] is True
        assert post(balancer).headers["x-balancer-provider"] == b
        status = balancer.provider_status(a)
        assert status["healthy"] is False and 590 < status["cooldown_remaining"] <= 600
        assert "HTTP 529" in status["cooldown_reason"]


    # An unreachable provider, though, cools down at once whatever its record.
    c = f"c-{unique}"
    with FakeProvider() as third, FakeProvider() as second:
        third.then(Message(), Message(), Message(), Reset())
        balancer.use([anthropic_provider(c, third.url), anthropic_provider(b, second.url)], failure_cooldown=600)
        assert [post(balancer).headers["x-balancer-provider"] for _ in range(4)] == [c, c, c, b]
        status = balancer.provider_status(c)
        assert status["failures_by_class"] == {"transport": 1}
        assert status["healthy"] is False and status["cooldown_remaining"] > 590


def test_providers_cooling_down_are_tried_last_soonest_back_first(balancer, unique):
    a, b, c = f"a-{unique}", f"b-{unique}", f"c-{unique}"
    with FakeProvider(Status(500)) as first, FakeProvider() as second, FakeProvider() as third:
        second.then(Status(529, headers={"retry-after": "300"}))
        third.then(Status(529, headers={"retry-after": "100"}))
        balancer.use([anthropic_provider(n, f.url) for n, f in ((a, first), (b, second), (c, third))],
                     failure_cooldown=30)
        assert post(balancer).status_code == 529  # all three failed: a cools down 30 s, b 300 s, c 100 s
        # The next request is not refused: the cooling providers are tried, the soonest back first: a, c, b.
        response = post(balancer)
        assert (response.status_code, response.headers["x-balancer-provider"]) == (200, c)
        assert (len(first.requests), len(second.requests), len(third.requests)) == (2, 1, 2)


def test_all_cooling_refuse_still_refuses_at_once(balancer, unique):
    with FakeProvider(Status(529)) as overloaded:
        balancer.use([anthropic_provider(f"a-{unique}", overloaded.url)], all_cooling="refuse")
        assert post(balancer).status_code == 529
        refused = post(balancer)
        assert refused.status_code == 529 and "cooling down" in refused.json()["error"]["message"]
        assert len(overloaded.requests) == 1


# -- 3. the status says what happened --------------------------------------------------------------------------

both_modes = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@both_modes
def test_every_provider_rate_limited_gives_429_with_the_soonest_retry_after(balancer, unique, stream):
    with FakeProvider(Status(429, headers={"retry-after": "35"})) as first, \
            FakeProvider(Status(429, headers={"retry-after": "20"})) as second:
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)])
        response = post(balancer, stream)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "20"
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert f"a-{unique}: HTTP 429" in response.json()["error"]["message"]


@both_modes
@pytest.mark.parametrize(
    ("failures", "status", "error_type"),
    [
        (("529", "529"), 529, "overloaded_error"),
        (("529", "503"), 529, "overloaded_error"),
        (("529", "500"), 529, "overloaded_error"),
        (("500", "529"), 529, "overloaded_error"),
        (("529", "refused"), 529, "overloaded_error"),
        (("500", "refused"), 503, "api_error"),  # breakage without a lack of capacity keeps the 503
    ],
    ids=lambda value: "+".join(value) if isinstance(value, tuple) else str(value),
)
def test_capacity_trouble_gives_529_overloaded(balancer, unique, stream, failures, status, error_type):
    def url(failure: str, fake: FakeProvider) -> str:
        return f"http://127.0.0.1:{free_port()}" if failure == "refused" else fake.url

    with FakeProvider(Status(int(failures[0]))) as first, \
            FakeProvider(None if failures[1] == "refused" else Status(int(failures[1]))) as other:
        balancer.use([anthropic_provider(f"a-{unique}", url(failures[0], first)),
                      anthropic_provider(f"b-{unique}", url(failures[1], other))])
        response = post(balancer, stream)
        assert response.status_code == status
        assert response.json()["error"]["type"] == error_type
        assert 1 <= int(response.headers["retry-after"]) <= 60


def test_retry_after_above_a_minute_only_when_the_providers_said_so(balancer, unique):
    with FakeProvider(Status(429, headers={"retry-after": "900"})) as first, \
            FakeProvider(Status(429, headers={"retry-after": "1200"})) as second:
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)])
        response = post(balancer)
        assert (response.status_code, response.headers["retry-after"]) == (429, "900")

    # A wait the balancer only predicts (its own cooldowns, 10 minutes here) is sent as 60 s: Claude Code keeps
    # retrying, and each retry tries every provider again.
    with FakeProvider(Status(529)) as overloaded:
        balancer.use([anthropic_provider(f"c-{unique}", overloaded.url)], failure_cooldown=600)
        response = post(balancer)
        assert (response.status_code, response.headers["retry-after"]) == (529, "60")


def test_refused_while_every_provider_cools_down_after_rate_limits_is_429(balancer, unique):
    with FakeProvider(Status(429)) as limited:
        balancer.use([anthropic_provider(f"a-{unique}", limited.url)], all_cooling="refuse", failure_cooldown=30)
        assert post(balancer).status_code == 429
        refused = post(balancer)
        assert refused.status_code == 429 and "cooling down" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert len(limited.requests) == 1
