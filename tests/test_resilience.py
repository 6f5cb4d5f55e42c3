"""Resilience through the real mitmdump: error classes, the stream commit point, recovery, strategies,
session affinity, concurrency and clients that leave."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import threading
import time

import anthropic
import httpx
import pytest

from fakes import Behavior, FakeProvider, Hang, Message, RawStream, Status
from helpers import FIRST_DELTA, anthropic_provider, error_event, raw_request, served_by, stream_events, wait_until

MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MESSAGES}


both_modes = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# -- error classes -------------------------------------------------------------------------------------------

@both_modes
@pytest.mark.parametrize("status", [429, 503, 529])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_sets_the_minimum_cooldown(balancer, client, unique, status, form, stream):
    value = "900" if form == "seconds" else email.utils.formatdate(time.time() + 900, usegmt=True)
    with FakeProvider(Status(status, headers={"retry-after": value})) as limited, FakeProvider(Message("b")) as ok:
        balancer.use([anthropic_provider(f"a-{unique}", limited.url), anthropic_provider(f"b-{unique}", ok.url)],
                     failure_cooldown=5)
        assert served_by(client, stream) == (f"b-{unique}", "b")
        health = balancer.provider_status(f"a-{unique}")
        assert 880 <= health["cooldown_remaining"] <= 900
        expected = "rate_limited" if status == 429 else "overloaded"
        assert health["failures_by_class"] == {expected: 1}


@both_modes
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_provider_credential_fails_over_and_stays_out_until_reload(balancer, client, unique, status, stream):
    with FakeProvider(Status(status)) as refused, FakeProvider(Message("b")) as ok:
        providers = [anthropic_provider(f"a-{unique}", refused.url), anthropic_provider(f"b-{unique}", ok.url)]
        balancer.use(providers, failure_cooldown=1, auth_failure_cooldown=3600)
        assert served_by(client, stream) == (f"b-{unique}", "b")  # the client never sees a's auth error
        health = balancer.provider_status(f"a-{unique}")
        assert health["failures_by_class"] == {"auth": 1}
        assert health["cooldown_remaining"] > 3500
        assert f"HTTP {status}" in health["cooldown_reason"]

        refused.default = Message("a fixed")
        balancer.use(providers, failure_cooldown=1, auth_failure_cooldown=3600)  # e.g. after fixing the key
        assert balancer.provider_status(f"a-{unique}")["healthy"] is True
        assert served_by(client, stream) == (f"a-{unique}", "a fixed")


@both_modes
def test_passthrough_auth_errors_belong_to_the_client(balancer, client, unique, stream):
    with FakeProvider(Status(401)) as own, FakeProvider() as other:
        balancer.use([{"name": f"a-{unique}", "base_url": own.url, "auth_type": "passthrough"},
                      anthropic_provider(f"b-{unique}", other.url)])
        with pytest.raises(anthropic.AuthenticationError):
            served_by(client, stream)
        assert other.requests == []
        assert balancer.provider_status(f"a-{unique}")["failures"] == 0


OPENING = stream_events()[:FIRST_DELTA]  # message_start, content_block_start, ping


@pytest.mark.parametrize(
    ("name", "behavior", "kind"),
    [
        ("overloaded-event", lambda: RawStream([*OPENING, error_event()]), "overloaded"),
        ("api-error-event", lambda: RawStream([*OPENING, error_event("api_error", "boom")]), "stream_error"),
        ("ends-before-content", lambda: RawStream(OPENING), "stream_error"),
        ("breaks-before-content", lambda: RawStream(OPENING, ending="drop"), "stream_error"),
        ("stalls-before-content", lambda: RawStream(OPENING, ending="stall"), "timeout"),
    ],
)
def test_failure_before_the_first_content_fails_over(balancer, client, unique, name, behavior, kind):
    with FakeProvider(behavior()) as bad, FakeProvider() as good:
        balancer.use([anthropic_provider(f"a-{unique}", bad.url), anthropic_provider(f"b-{unique}", good.url)],
                     request_timeout=1, first_content_timeout=1)
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            final = stream.get_final_message()
            assert stream.response.headers["x-balancer-provider"] == f"b-{unique}"
        assert final.content[0].text == "Hello"
        assert balancer.provider_status(f"a-{unique}")["failures_by_class"] == {kind: 1}


COMMITTED = stream_events(pieces=["partial"])[: FIRST_DELTA + 1]  # ... and the first content delta


@pytest.mark.parametrize(
    ("name", "behavior", "settings", "message"),
    [
        ("error-event", lambda: RawStream([*COMMITTED, error_event()]), {}, "Overloaded"),
        ("disconnect", lambda: RawStream(COMMITTED, ending="drop"), {}, "broke off"),
        ("clean-eof-without-stop", lambda: RawStream(COMMITTED), {}, "ended before message_stop"),
        ("idle", lambda: RawStream(COMMITTED, ending="stall"), {"stream_idle_timeout": 1}, "idle for more than 1s"),
    ],
)
def test_failure_after_the_commit_point_ends_the_stream_with_an_error_event(
    balancer, client, unique, name, behavior, settings, message
):
    with FakeProvider(behavior()) as bad, FakeProvider() as good:
        balancer.use([anthropic_provider(f"a-{unique}", bad.url), anthropic_provider(f"b-{unique}", good.url)],
                     **settings)
        texts = []
        with (
            pytest.raises(anthropic.APIStatusError) as caught,
            client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream,
        ):
            for event in stream:
                if event.type == "content_block_delta":
                    texts.append(event.delta.text)
        assert texts == ["partial"]  # what was committed reached the client, then a well-formed error
        assert message in str(caught.value)
        assert good.requests == []
        wait_until(lambda: balancer.provider_status(f"a-{unique}")["failures"] == 1, what="the failure to count")


def test_holding_the_opening_does_not_hold_the_first_content(balancer, client, unique):
    """The opening events and the first delta arrive together as soon as the delta exists."""
    behavior = RawStream(COMMITTED, ending="stall")
    with FakeProvider(behavior) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            events = iter(stream)
            assert next(events).type == "message_start"
            assert next(e for e in events if e.type == "content_block_delta").delta.text == "partial"
            assert not behavior.release.is_set()  # the provider is still mid-stream
            behavior.release.set()


# -- recovery ------------------------------------------------------------------------------------------------

def test_when_all_cool_down_the_soonest_back_is_tried(balancer, client, unique):
    with FakeProvider() as first, FakeProvider() as second:
        first.then(Status(500))
        second.then(Status(529, headers={"retry-after": "1200"}))
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)],
                     failure_cooldown=600)
        with pytest.raises(anthropic.APIStatusError) as caught:
            served_by(client)
        assert caught.value.status_code == 529
        # Both cool down now; a comes back first (600 s < 1200 s), so it is tried instead of a flat refusal.
        assert served_by(client) == (f"a-{unique}", "Hello")
        assert len(second.requests) == 1


def test_repeated_failures_grow_the_cooldown(balancer, client, unique):
    with FakeProvider(Status(500)) as failing, FakeProvider() as ok:
        balancer.use([anthropic_provider(f"a-{unique}", failing.url), anthropic_provider(f"b-{unique}", ok.url)],
                     failure_cooldown=0.2, cooldown_growth=1000, max_cooldown=3000)
        served_by(client)
        wait_until(lambda: balancer.provider_status(f"a-{unique}")["healthy"], what="the first cooldown to end")
        # The probe fails: straight back, for 0.2 * 1000 = 200 s this time.
        assert served_by(client)[0] == f"b-{unique}"
        health = balancer.provider_status(f"a-{unique}")
        assert health["consecutive_failures"] == 2
        assert 150 < health["cooldown_remaining"] <= 200
        assert len(failing.requests) == 2


# -- strategies and affinity ---------------------------------------------------------------------------------

def test_round_robin_spreads_requests(balancer, client, unique, fakes):
    balancer.use([anthropic_provider(f"{i}-{unique}", fake.url) for i, fake in enumerate(fakes)],
                 strategy="round_robin", affinity="none")
    order = [served_by(client)[0] for _ in range(6)]
    assert sorted(order) == sorted([f"{i}-{unique}" for i in range(3)] * 2)
    assert order[:3] == order[3:]
    assert [len(f.requests) for f in fakes] == [2, 2, 2]


def session(session_id: str) -> dict:
    return {"metadata": {"user_id": json.dumps({"device_id": "d", "session_id": session_id})}}


def test_session_affinity_keeps_a_session_on_its_provider_until_it_fails(balancer, client, unique, fakes):
    balancer.use([anthropic_provider(f"{i}-{unique}", fake.url) for i, fake in enumerate(fakes)],
                 strategy="round_robin", failure_cooldown=600)
    assert httpx.get(balancer.url + "/providers", timeout=10).json()["affinity"] == "session"
    first = {served_by(client, extra_body=session("s1"))[0] for _ in range(5)}
    assert len(first) == 1
    others = {served_by(client, extra_body=session(f"other-{i}"))[0] for i in range(3)}
    assert len(others) > 1  # other sessions are still spread

    (home,) = first
    fakes[int(home.split("-")[0])].default = Status(500)
    moved = served_by(client, extra_body=session("s1"))[0]
    assert moved != home
    assert {served_by(client, extra_body=session("s1"))[0] for _ in range(3)} == {moved}


def test_priority_numbers_come_before_file_order(balancer, client, unique, fakes):
    balancer.use([
        anthropic_provider(f"late-{unique}", fakes[0].url, priority=2),
        anthropic_provider(f"early-{unique}", fakes[1].url, priority=1),
    ])
    assert served_by(client)[0] == f"early-{unique}"


def test_providers_endpoint_shows_what_routing_knows(balancer, client, unique):
    with FakeProvider(Status(502)) as failing, FakeProvider() as ok:
        balancer.use([anthropic_provider(f"a-{unique}", failing.url), anthropic_provider(f"b-{unique}", ok.url)],
                     strategy="least_latency", failure_cooldown=600)
        served_by(client)
        listing = httpx.get(balancer.url + "/providers", timeout=10).json()
        assert (listing["strategy"], listing["affinity"], listing["open_streams"]) == ("least_latency", "session", 0)
        a, b = listing["providers"]
        assert a["failures_by_class"] == {"server_error": 1}
        assert "HTTP 502" in a["cooldown_reason"]
        assert b["requests"] == 1 and b["latency_ms"] is not None and b["latency_ms"] > 0


# -- concurrency and clients that leave ----------------------------------------------------------------------

class Flaky(Behavior):
    """Answers at random (seeded): HTTP 500, 529 or a normal message; counts what it served."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.served = {"server_error": 0, "overloaded": 0, "ok": 0}

    def run(self, handler, request, fake):
        with self.lock:
            roll = self.rng.random()
            kind = "server_error" if roll < 0.3 else "overloaded" if roll < 0.45 else "ok"
            self.served[kind] += 1
        behavior = {"server_error": Status(500), "overloaded": Status(529), "ok": Message("flaky")}[kind]
        behavior.run(handler, request, fake)


@pytest.mark.slow
def test_health_stays_correct_under_200_concurrent_requests(balancer, unique):
    flaky = [Flaky(seed) for seed in (1, 2)]
    with FakeProvider(flaky[0]) as f1, FakeProvider(flaky[1]) as f2, FakeProvider() as steady:
        fakes = [f1, f2, steady]
        balancer.use([anthropic_provider(f"{i}-{unique}", f.url) for i, f in enumerate(fakes)],
                     strategy="random", affinity="none", failure_cooldown=0)

        async def run_all():
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                stream = [i % 2 == 0 for i in range(200)]
                return await asyncio.gather(*[
                    http.post(balancer.url + "/v1/messages", json={**BODY, "stream": s}) for s in stream
                ])

        responses = asyncio.run(run_all())
        assert [r.status_code for r in responses] == [200] * 200
        listing = {p["name"]: p for p in httpx.get(balancer.url + "/providers", timeout=10).json()["providers"]}
        for i, (fake, behavior) in enumerate(zip(fakes, [*flaky, None], strict=True)):
            health = listing[f"{i}-{unique}"]
            assert health["requests"] == len(fake.requests)
            expected = {k: v for k, v in behavior.served.items() if k != "ok" and v} if behavior else {}
            assert health["failures_by_class"] == expected
            assert health["failures"] == sum(expected.values())
            assert health["probing"] is False
        served = sum(r.headers["x-balancer-provider"] != "none" for r in responses)
        assert served == 200
        assert sum(len(f.requests) for f in fakes) >= 200


def test_client_leaving_while_providers_are_tried_stops_the_attempts(balancer, unique):
    """Nobody waits for the answer any more: the next provider is not asked (a billed prompt for nobody)."""
    hang = Hang()
    with FakeProvider(hang) as slow, FakeProvider() as next_one:
        balancer.use([anthropic_provider(f"a-{unique}", slow.url), anthropic_provider(f"b-{unique}", next_one.url)],
                     request_timeout=1)
        sock = raw_request(balancer.port, {**BODY, "stream": True})
        wait_until(lambda: len(slow.requests) == 1, what="the first attempt")
        sock.close()  # the client leaves while the balancer waits for a
        wait_until(lambda: any(f"a-{unique} client gone" in line and "| attempts:" in line
                               for line in balancer.log_lines), what="the request to end")
        assert next_one.requests == []
        assert httpx.get(balancer.url + "/providers", timeout=10).json()["open_streams"] == 0


def test_client_leaving_mid_stream_closes_the_provider_connection(balancer, unique):
    behind = RawStream(COMMITTED, ending="stall")
    with FakeProvider(behind) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", balancer.url + "/v1/messages", json={**BODY, "stream": True}) as response,
        ):
            chunks = response.iter_raw()  # kept referenced: a dropped iterator closes the response
            assert b"message_start" in next(chunks)
            assert httpx.get(balancer.url + "/providers", timeout=10).json()["open_streams"] == 1
        # Leaving the `with` blocks closed the client connection mid-stream.
        assert behind.peer_closed.wait(15), "the provider kept generating for nobody"
        wait_until(lambda: httpx.get(balancer.url + "/providers", timeout=10).json()["open_streams"] == 0,
                   what="no open streams")


def test_concurrent_failures_are_one_outage_not_many(balancer, unique):
    """Six requests that all reached a failing provider before any failure was known: the provider's streak
    (and so its cooldown) grows once, not six times."""
    with FakeProvider(Status(500)) as failing, FakeProvider() as ok:
        balancer.use([anthropic_provider(f"a-{unique}", failing.url), anthropic_provider(f"b-{unique}", ok.url)],
                     failure_cooldown=60, cooldown_growth=2, max_cooldown=600)

        async def six():
            async with httpx.AsyncClient(timeout=30) as http:
                return await asyncio.gather(*[http.post(balancer.url + "/v1/messages", json=BODY) for _ in range(6)])

        assert [r.status_code for r in asyncio.run(six())] == [200] * 6
        health = balancer.provider_status(f"a-{unique}")
        assert health["failures"] == len(failing.requests)
        assert health["consecutive_failures"] == 1
        assert health["cooldown_remaining"] <= 60


def test_provider_words_never_carry_a_credential(balancer, client, unique):
    key = f"sk-ant-api03-{unique}-SECRETSECRET"
    echoing = Status(401, {"type": "error", "error": {"type": "authentication_error",
                                                      "message": f"invalid x-api-key: {key} (or ...{key[-10:]})"}})
    with FakeProvider(echoing) as refusing:
        balancer.use([{**anthropic_provider(f"a-{unique}", refusing.url), "auth_value": key}])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, timeout=10)
        assert response.status_code == 503
        assert "invalid x-api-key: [redacted]" in response.text
        listing = httpx.get(balancer.url + "/providers", timeout=10).text
        for text in (response.text, listing, "\n".join(balancer.log_lines)):
            assert key not in text and key[-10:] not in text


def test_a_relayed_client_error_never_carries_a_credential(balancer, client, unique):
    key = f"sk-relay-{unique}-SECRETSECRET"
    echoing = Status(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": f"bad request for key {key}"}})
    with FakeProvider(echoing) as fake:
        balancer.use([{**anthropic_provider(f"a-{unique}", fake.url), "auth_value": key}])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, timeout=10)
        assert response.status_code == 400
        assert key not in response.text and "bad request for key [redacted]" in response.text
