"""Hedged first tokens through the real mitmdump: a provider slow to its first content gets the next one asked
beside it, the first to produce content serves and the other's connection is closed; nobody is blamed for losing."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import helpers
from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Message, RawStream, Silent, Status, Stream, openai_json
from helpers import (
    FIRST_DELTA,
    anthropic_provider,
    openai_provider,
    raw_request,
    served_by,
    stream_events,
    wait_until,
)

BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
# How long an attempt goes without content before the next provider is asked beside it.
HEDGE_AFTER = 0.5
# Far above how long any test here waits: a provider released before this was released by the balancer.
LONG = 60
# A generous deadline for what the balancer does within a second.
DEADLINE = 15.0
# A stream's opening events, up to (not including) its first content.
OPENING = stream_events(pieces=["late"])[:FIRST_DELTA]


def slow(stream: bool) -> Silent | RawStream:
    """A provider with no content for far longer than the test: a stream held before its first content, or an
    answer that never comes."""
    return RawStream(OPENING, ending="stall", stall_limit=LONG) if stream else Silent()


def metric(balancer: BalancerProcess, name: str, **labels: str) -> float:
    return helpers.metric(balancer, name, **labels) or 0.0  # a counter not yet exported has counted nothing


def request_line(balancer: BalancerProcess, provider: str) -> str | None:
    """The log's line for the latest request whose attempts name `provider`, once it is written."""
    lines = [line for line in balancer.log_lines if " | attempts: " in line and f" {provider} " in line]
    return lines[-1] if lines else None


def logged_request(log_file: Path, provider: str) -> dict[str, Any]:
    """The request fields (what flow.metadata["balancer"] holds) of the latest request whose attempts name
    `provider`, from the JSON-lines log."""
    entries = [json.loads(line).get("request") for line in log_file.read_text().splitlines()]
    found = [e for e in entries if e and any(a["provider"] == provider for a in e["attempts"])]
    assert found, f"no logged request names {provider}"
    return found[-1]


def assert_blameless(balancer: BalancerProcess, name: str) -> None:
    status = balancer.provider_status(name)
    assert (status["healthy"], status["cooldown_remaining"], status["probing"]) == (True, 0, False)
    assert (status["failures"], status["consecutive_failures"], status["last_error"]) == (0, 0, None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_slow_first_provider_is_hedged_the_second_serves_and_the_first_is_closed(
    balancer, client, unique, tmp_path, stream
):
    a, b = f"a-{unique}", f"b-{unique}"
    behind = slow(stream)
    log_file = tmp_path / "requests.jsonl"
    with FakeProvider(behind) as first, FakeProvider(Message("from b")) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=LONG, first_content_timeout=LONG, log_file=str(log_file))
        failovers = metric(balancer, "balancer_failovers_total")

        assert served_by(client, stream) == (b, "from b")
        assert behind.peer_closed.wait(DEADLINE), "the losing provider's connection was left open"
        assert len(first.message_requests) == len(second.message_requests) == 1
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")

        line = request_line(balancer, b)
        assert f"attempts: {a} cancelled: hedge lost to {b} " in line
        assert f" | hedged to {b}" in line
        fields = logged_request(log_file, b)
        assert fields["hedged"] is True
        assert [(x["provider"], x["outcome"], x["failed"], x["class"], x.get("hedge", False))
                for x in fields["attempts"]] == [(a, f"cancelled: hedge lost to {b}", False, None, False),
                                                  (b, "200", False, None, True)]
        assert fields["provider"] == b
        assert_blameless(balancer, a)
        assert metric(balancer, "balancer_hedges_total", provider=b) == 1
        assert metric(balancer, "balancer_hedge_wins_total", provider=b) == 1
        assert metric(balancer, "balancer_attempt_failures_total", provider=a, **{"class": "timeout"}) == 0
        assert metric(balancer, "balancer_failovers_total") == failovers  # a hedge is not a failover


def test_a_hedge_that_fails_counts_and_the_race_goes_on_to_the_next_provider(balancer, client, unique):
    a, b, c = f"a-{unique}", f"b-{unique}", f"c-{unique}"
    behind = slow(stream=True)
    with FakeProvider(behind) as first, FakeProvider(Status(529)) as second, FakeProvider(Message("c")) as third:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url),
                      anthropic_provider(c, third.url)], hedge_after=HEDGE_AFTER, request_timeout=LONG,
                     first_content_timeout=LONG)

        assert served_by(client, stream=True) == (c, "c")
        assert behind.peer_closed.wait(DEADLINE), "the losing provider's connection was left open"
        wait_until(lambda: request_line(balancer, c) is not None, what="the request's log line")

        line = request_line(balancer, c)
        assert f"{b} HTTP 529 overloaded_error" in line
        assert f"{a} cancelled: hedge lost to {c} " in line
        assert f" | hedged to {b}, {c}" in line
        assert balancer.provider_status(b)["failures_by_class"] == {"overloaded": 1}
        assert_blameless(balancer, a)
        assert metric(balancer, "balancer_hedges_total", provider=b) == 1
        assert metric(balancer, "balancer_hedge_wins_total", provider=b) == 0
        assert metric(balancer, "balancer_hedge_wins_total", provider=c) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_fast_first_provider_is_not_hedged(balancer, client, unique, stream):
    a, b = f"a-{unique}", f"b-{unique}"
    with FakeProvider(Message("from a")) as first, FakeProvider(Message("from b")) as second:
        # Far longer than a fake provider takes to answer, however busy the machine.
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=5)

        assert served_by(client, stream) == (a, "from a")
        wait_until(lambda: request_line(balancer, a) is not None, what="the request's log line")
        assert second.requests == []
        assert "hedged" not in request_line(balancer, a)
        assert metric(balancer, "balancer_hedges_total", provider=b) == 0


def test_a_first_provider_that_fails_quickly_fails_over_without_a_hedge(balancer, client, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    with FakeProvider(Status(529)) as first, FakeProvider(Message("from b")) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=5)

        assert served_by(client, stream=True) == (b, "from b")
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        line = request_line(balancer, b)
        assert f"attempts: {a} HTTP 529 overloaded_error" in line
        assert "hedged" not in line
        assert metric(balancer, "balancer_hedges_total", provider=b) == 0
        assert metric(balancer, "balancer_hedge_wins_total", provider=b) == 0
        assert balancer.provider_status(a)["failures_by_class"] == {"overloaded": 1}


def test_without_hedge_after_a_slow_first_provider_is_waited_for(balancer, client, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    # Its first content comes after 2 s: four times as long as the other tests' hedge_after.
    late = Stream(pieces=["late"], gate=threading.Event(), gate_after=FIRST_DELTA, gate_timeout=2)
    with FakeProvider(late) as first, FakeProvider(Message("from b")) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)])

        assert served_by(client, stream=True) == (a, "late")
        assert late.gate_timed_out is True
        assert second.requests == []


def test_counts_are_never_hedged(balancer, client, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    silent = Silent()
    with FakeProvider(silent) as first, FakeProvider() as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     count_tokens="upstream", count_tokens_timeout=3)

        assert client.messages.count_tokens(**{k: BODY[k] for k in ("model", "messages")}).input_tokens == 42
        wait_until(lambda: request_line(balancer, b) is not None, what="the count's log line")
        line = request_line(balancer, b)
        # The first provider had its whole count_tokens_timeout: the second was asked only after it.
        assert f"attempts: {a} no response headers within 3s" in line
        assert "hedged" not in line


def test_a_client_leaving_during_a_hedge_closes_both_and_blames_nobody(balancer, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    first_silent, second_silent = Silent(), Silent()
    with FakeProvider(first_silent) as first, FakeProvider(second_silent) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=LONG, first_content_timeout=LONG)
        sock = raw_request(balancer.port, {**BODY, "stream": True})
        try:
            wait_until(lambda: len(second.requests) == 1, what="the hedge to b")
        finally:
            sock.close()
        assert first_silent.peer_closed.wait(DEADLINE), "a's connection was held after the client left"
        assert second_silent.peer_closed.wait(DEADLINE), "b's connection was held after the client left"
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")

        line = request_line(balancer, b)
        assert " client gone | attempts: " in line
        assert f"{a} client gone " in line and f"{b} client gone " in line
        assert_blameless(balancer, a)
        assert_blameless(balancer, b)
        assert metric(balancer, "balancer_hedges_total", provider=b) == 1
        assert metric(balancer, "balancer_hedge_wins_total", provider=b) == 0


def test_a_losing_key_of_a_pool_is_released(balancer, client, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    behind = slow(stream=True)
    with FakeProvider(behind) as first, FakeProvider(Message("from b")) as second:
        balancer.use([anthropic_provider(a, first.url, auth_value=["key-one", "key-two"]),
                      anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER, request_timeout=LONG,
                     first_content_timeout=LONG)

        assert served_by(client, stream=True) == (b, "from b")
        assert behind.peer_closed.wait(DEADLINE)
        assert len(first.message_requests) == 1  # the pool's other key is not tried: the request was served
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        losing = re.search(rf"{a}(#[12]) cancelled: hedge lost to {b} ", request_line(balancer, b))
        assert losing, request_line(balancer, b)
        wait_until(lambda: metric(balancer, "balancer_key_open_requests", provider=a, key=losing[1]) == 0,
                   what="the losing key released")
        with httpx.Client(timeout=10) as http:
            assert http.get(balancer.url + "/providers").json()["open_streams"] == 0


def test_a_provider_on_probation_that_loses_a_hedge_is_no_longer_probing(balancer, client, unique):
    """The first request after a cooldown is the provider's probe: losing the race says nothing of its health, and
    must not leave it probing (other requests would keep trying it last)."""
    a, b = f"a-{unique}", f"b-{unique}"
    behind = slow(stream=True)
    with FakeProvider(behind) as first, FakeProvider(Message("from b")) as second:
        first.then(Status(500))
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=LONG, first_content_timeout=LONG, failure_rate=0, failure_cooldown=0.5)
        assert served_by(client, stream=True) == (b, "from b")  # a's 500: it cools down, b serves
        wait_until(lambda: balancer.provider_status(a)["healthy"], what="a's cooldown to end")

        assert served_by(client, stream=True) == (b, "from b")  # a's probe, slow: b serves beside it
        assert behind.peer_closed.wait(DEADLINE), "the losing provider's connection was left open"
        wait_until(lambda: f"{a} cancelled: hedge lost to {b} " in (request_line(balancer, b) or ""),
                   what="the hedged request's log line")
        status = balancer.provider_status(a)
        assert (status["probing"], status["failures"]) == (False, 1)


@dataclass
class After(Behavior):
    """Answers as `then` once `event` is set (or after LONG): a provider slow to its first content until told."""

    event: threading.Event
    then: Behavior
    # Then this long still: for the balancer to have read the answer that set `event` (it passes either way).
    grace: float = 0.0

    def run(self, handler, request, fake):
        if self.event.wait(LONG):
            time.sleep(self.grace)
        self.then.run(handler, request, fake)


@dataclass
class Signalling(Behavior):
    """Sets `before` on receiving the request, answers as `then`, then sets `after`."""

    then: Behavior
    before: threading.Event = field(default_factory=threading.Event)
    after: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        self.before.set()
        try:
            self.then.run(handler, request, fake)
        finally:
            self.after.set()


def post_messages(balancer: BalancerProcess, stream: bool) -> httpx.Response:
    with httpx.Client(timeout=LONG) as http:
        return http.post(balancer.url + "/v1/messages", json={**BODY, "stream": stream},
                         headers={"x-api-key": "client-own-key", "anthropic-version": "2023-06-01"})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("erring", ["hedge", "first"])
def test_an_error_answer_does_not_beat_the_other_attempts_content(balancer, client, unique, stream, erring):
    """A 400 from one attempt while the other is still under way is held: the other's content is the answer."""
    a, b = f"a-{unique}", f"b-{unique}"
    if erring == "hedge":  # a is slow; b, asked beside it, answers 400 at once; then a serves
        refusing = Signalling(Status(400))
        first_behavior: Behavior = After(refusing.after, Message("from a"), grace=0.5)
        second_behavior: Behavior = refusing
        winner, loser, text = a, b, "from a"
    else:  # a answers 400 only once b was asked beside it; b serves after that
        asked = Signalling(Message("from b"))
        refusing = Signalling(After(asked.before, Status(400)))
        asked.then = After(refusing.after, Message("from b"), grace=0.5)
        first_behavior, second_behavior = refusing, asked
        winner, loser, text = b, a, "from b"
    with FakeProvider(first_behavior) as first, FakeProvider(second_behavior) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=LONG, first_content_timeout=LONG)

        assert served_by(client, stream) == (winner, text)
        assert len(first.message_requests) == len(second.message_requests) == 1
        wait_until(lambda: request_line(balancer, winner) is not None, what="the request's log line")
        line = request_line(balancer, winner)
        # Held, then set aside; or, when both had finished by the time the balancer looked, the earlier started
        # one taken and the other called off.
        assert re.search(rf"{loser} (400, not used: {winner} served|cancelled: hedge lost to {winner}) ", line), line
        assert f" -> {winner}/" in line
        assert_blameless(balancer, loser)
        assert metric(balancer, "balancer_hedge_wins_total", provider=a) == 0
        assert metric(balancer, "balancer_hedge_wins_total", provider=b) == (1 if winner == b else 0)
        with httpx.Client(timeout=10) as http:
            assert http.get(balancer.url + "/providers").json()["open_streams"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_held_error_answer_is_the_answer_when_the_other_attempt_fails(balancer, unique, stream):
    """The hedge's 400 is held while the slow first provider is under way; that one then fails: the client gets
    the 400 (as it would have without hedging), and no third provider is asked for it."""
    a, b, c = f"a-{unique}", f"b-{unique}", f"c-{unique}"
    refusing = Signalling(Status(400))
    with FakeProvider(After(refusing.after, Status(529))) as first, FakeProvider(refusing) as second, \
            FakeProvider(Message("from c")) as third:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url),
                      anthropic_provider(c, third.url)], hedge_after=HEDGE_AFTER, request_timeout=LONG,
                     first_content_timeout=LONG)

        answer = post_messages(balancer, stream)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == {"type": "invalid_request_error", "message": "fake 400"}
        assert answer.headers["x-balancer-provider"] == b
        assert third.requests == []
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        line = request_line(balancer, b)
        assert f"{a} HTTP 529 overloaded_error" in line, line
        assert balancer.provider_status(a)["failures_by_class"] == {"overloaded": 1}


def test_a_provider_cooling_down_is_not_asked_as_a_hedge(balancer, client, unique):
    """Under all_cooling: try_soonest a provider cooling down is still tried, but only once the others failed: a
    slow first provider is waited for (its retry-after, say, is not cut short by a hedge)."""
    a, b = f"a-{unique}", f"b-{unique}"
    behind = slow(stream=True)
    with FakeProvider(behind) as first, FakeProvider(Message("from b")) as second:
        first.then(Message("from a"))
        second.then(Status(529))
        cooling = {"all_cooling": "try_soonest", "failure_rate": 0, "failure_cooldown": LONG}
        balancer.use([anthropic_provider(b, second.url), anthropic_provider(a, first.url)], **cooling)
        assert served_by(client, stream=True) == (a, "from a")  # b's 529: b cools down
        assert balancer.provider_status(b)["cooldown_remaining"] > 0
        wait_until(lambda: request_line(balancer, b) is not None, what="the first request's log line")
        earlier = request_line(balancer, b)

        # a, first now, sends no content within its 3 s; b is asked only after that.
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=3, first_content_timeout=3, **cooling)
        assert served_by(client, stream=True) == (b, "from b")
        wait_until(lambda: request_line(balancer, b) != earlier, what="the second request's log line")
        line = request_line(balancer, b)
        assert "hedged" not in line, line
        assert f"attempts: {a} " in line and "hedge lost" not in line
        assert metric(balancer, "balancer_hedges_total", provider=b) == 0


def test_a_last_resort_is_not_asked_as_a_hedge(balancer, unique):
    """A request with a server tool goes to an OpenAI-type provider (asked without the tool) only once every
    Anthropic-type one failed: not beside a slow one, where its lesser answer could win the race."""
    a, b = f"a-{unique}", f"b-{unique}"
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-big",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "from b"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    with FakeProvider(Silent()) as first, FakeProvider(openai_json(completion)) as second:
        balancer.use([anthropic_provider(a, first.url), openai_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=3)
        with httpx.Client(timeout=LONG) as http:
            answer = http.post(balancer.url + "/v1/messages", json={
                **BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                headers={"x-api-key": "client-own-key", "anthropic-version": "2023-06-01"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-balancer-provider"] == b
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        line = request_line(balancer, b)
        assert f"attempts: {a} no response headers within 3s" in line, line
        assert "hedged" not in line


def test_a_route_with_hedge_after_false_is_never_hedged(balancer, unique):
    """hedge_after set for everything, `false` on one route (long contexts: slow to their first token, and a hedge
    bills them twice): that route's requests wait for their provider; the others are hedged."""
    a, b = f"a-{unique}", f"b-{unique}"
    with FakeProvider(slow(stream=True)) as first, FakeProvider(Message("from b")) as second:
        document = {
            "providers": [anthropic_provider(a, first.url), anthropic_provider(b, second.url)],
            "routes": [{"name": "long", "when": {"model": "long-*"}, "providers": [a, b], "hedge_after": False}],
            "settings": {"hedge_after": HEDGE_AFTER, "request_timeout": 3, "first_content_timeout": 3},
        }
        balancer.providers_file.write_text(yaml.safe_dump(document, sort_keys=False))
        assert balancer.reload().status_code == 200

        with httpx.Client(timeout=LONG) as http:
            answer = http.post(balancer.url + "/v1/messages", json={**BODY, "model": "long-1", "stream": True},
                               headers={"x-api-key": "client-own-key", "anthropic-version": "2023-06-01"})
        assert answer.headers["x-balancer-provider"] == b
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        line = request_line(balancer, b)
        assert f"attempts: {a} " in line and "hedge" not in line, line
        assert metric(balancer, "balancer_hedges_total", provider=b) == 0


def test_a_client_leaving_while_an_error_answer_is_held_closes_both(balancer, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    first_silent = Silent()
    refusing = Signalling(Status(400))
    with FakeProvider(first_silent) as first, FakeProvider(refusing) as second:
        balancer.use([anthropic_provider(a, first.url), anthropic_provider(b, second.url)], hedge_after=HEDGE_AFTER,
                     request_timeout=LONG, first_content_timeout=LONG)
        sock = raw_request(balancer.port, {**BODY, "stream": True})
        try:
            assert refusing.after.wait(DEADLINE), "the hedge to b"
        finally:
            sock.close()
        assert first_silent.peer_closed.wait(DEADLINE), "a's connection was held after the client left"
        wait_until(lambda: request_line(balancer, b) is not None, what="the request's log line")
        line = request_line(balancer, b)
        assert " client gone | attempts: " in line, line
        assert f"{a} client gone " in line and f"{b} client gone " in line
        assert_blameless(balancer, a)
        assert_blameless(balancer, b)
