"""Key pools through the real mitmdump: a rate-limited or refused key gives way to the next key of the same
provider; keys short of headroom (the providers' rate-limit headers) or at a configured limit are passed over
before any 429; a provider cools down only when all its keys do."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Message, Status, Stream
from helpers import FIRST_DELTA, anthropic_message, anthropic_provider, metric, wait_until

BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
# Weights that make the first key the choice of every session (weighted rendezvous: 1 in 10^6 otherwise).
FIRST, SECOND = 1_000_000.0, 1.0


def rfc3339(seconds_from_now: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds_from_now, UTC).isoformat().replace("+00:00", "Z")


def anthropic_limits(remaining: int, limit: int = 100, reset_in: float = 120) -> dict[str, str]:
    return {
        "anthropic-ratelimit-requests-limit": str(limit),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": rfc3339(reset_in),
        "anthropic-ratelimit-tokens-limit": "400000",
        "anthropic-ratelimit-tokens-remaining": "399000",
        "anthropic-ratelimit-tokens-reset": rfc3339(5),
    }


def unified(status: str, utilization_5h: float, reset_in: float = 3600) -> dict[str, str]:
    reset = str(int(time.time() + reset_in))
    return {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": reset,
        "anthropic-ratelimit-unified-5h-status": status,
        "anthropic-ratelimit-unified-5h-utilization": str(utilization_5h),
        "anthropic-ratelimit-unified-5h-reset": reset,
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.2",
        "anthropic-ratelimit-unified-7d-reset": str(int(time.time() + 5 * 86400)),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
    }


@dataclass
class Answer(Behavior):
    """A normal JSON answer with the given headers (rate-limit headers, mostly)."""

    headers: dict[str, str] = field(default_factory=dict)

    def run(self, handler, request, fake):
        handler.reply(200, anthropic_message(request.json().get("model", "m"), "ok"), self.headers)


@dataclass
class ByKey(Behavior):
    """Answers by the credential the request carries: each key its own behaviour (or its own script)."""

    keys: dict[str, Behavior | list[Behavior]]
    seen: list[str] = field(default_factory=list)  # the keys, in the order requests arrived with them

    def run(self, handler, request, fake):
        key = request.headers.get("x-api-key", "")
        self.seen.append(key)
        behavior = self.keys.get(key, Status(401))
        if isinstance(behavior, list):
            behavior = behavior.pop(0) if len(behavior) > 1 else behavior[0]
        behavior.run(handler, request, fake)


def pool(*entries: Any) -> list[Any]:
    return list(entries)


def ask(balancer: BalancerProcess, session: str = "s1", stream: bool = False) -> httpx.Response:
    body = {**BODY, "metadata": {"user_id": json.dumps({"session_id": session})}, "stream": stream}
    return httpx.post(balancer.url + "/v1/messages", json=body, headers={"x-api-key": "client"}, timeout=30)


def keys_of(balancer: BalancerProcess, name: str) -> list[dict[str, Any]]:
    return balancer.provider_status(name)["keys"]


def test_a_rate_limited_key_gives_way_to_the_next_key_of_the_same_provider_first(balancer, unique):
    k1, k2 = f"sk-pool-{unique}-one-aaaa", f"sk-pool-{unique}-two-bbbb"
    fake = ByKey({k1: Status(429, headers={"retry-after": "120"}), k2: Message("from key 2")})
    with FakeProvider(fake) as a, FakeProvider(Message("from b")) as b:
        balancer.use([
            anthropic_provider(f"a-{unique}", a.url,
                               auth_value=[{"value": k1, "weight": FIRST}, {"value": k2, "weight": SECOND}]),
            anthropic_provider(f"b-{unique}", b.url),
        ])
        response = ask(balancer)
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-provider"] == f"a-{unique}"
        assert response.json()["content"][0]["text"] == "from key 2"
        assert fake.seen == [k1, k2]
        assert b.requests == []

        status = balancer.provider_status(f"a-{unique}")
        assert status["healthy"] is True  # one key of two is cooling: the provider is not
        first, second = status["keys"]
        assert (first["key"], first["healthy"], second["key"], second["healthy"]) == ("#1", False, "#2", True)
        assert 100 < first["cooldown_remaining"] <= 120
        assert "HTTP 429" in first["cooldown_reason"]
        wait_until(lambda: f"a-{unique}#1 HTTP 429" in balancer.log, what="the attempt named by its key")

        # The cooling key is not tried again while the other serves.
        assert ask(balancer).json()["content"][0]["text"] == "from key 2"
        assert fake.seen == [k1, k2, k2]


def test_a_refused_key_gives_way_and_the_provider_cools_only_when_all_keys_do(balancer, unique):
    k1, k2 = f"sk-pool-{unique}-refused-cccc", f"sk-pool-{unique}-limited-dddd"
    fake = ByKey({k1: Status(401), k2: Status(429, headers={"retry-after": "30"})})
    with FakeProvider(fake) as a, FakeProvider(Message("from b")) as b:
        balancer.use([
            anthropic_provider(f"a-{unique}", a.url,
                               auth_value=[{"value": k1, "weight": FIRST}, {"value": k2, "weight": SECOND}]),
            anthropic_provider(f"b-{unique}", b.url),
        ])
        response = ask(balancer)
        assert response.headers["x-balancer-provider"] == f"b-{unique}"
        assert fake.seen == [k1, k2]  # both keys of a before b
        assert len(b.requests) == 1

        status = balancer.provider_status(f"a-{unique}")
        assert status["healthy"] is False
        assert status["cooldown_reason"].startswith("all 2 keys cooling down")
        # Until the rate-limited key is back (failure_cooldown, 60 s), not the refused one (an hour).
        assert 50 < status["cooldown_remaining"] <= 60
        assert [k["healthy"] for k in status["keys"]] == [False, False]

        ask(balancer)
        assert fake.seen == [k1, k2]  # a is cooling: straight to b


def test_a_key_short_of_headroom_is_passed_over_before_any_429(balancer, unique):
    k1, k2 = f"sk-pool-{unique}-low-eeee", f"sk-pool-{unique}-fine-ffff"
    low = Answer(anthropic_limits(remaining=2, limit=100, reset_in=300))
    fake = ByKey({k1: [low, Status(429)], k2: Answer(anthropic_limits(remaining=90))})
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(name, a.url, auth_value=[{"value": k1, "weight": FIRST}, k2])])
        assert ask(balancer).status_code == 200
        first = keys_of(balancer, name)[0]
        assert first["passed_over"] == "headroom"
        assert first["headroom"]["source"] == "anthropic"
        assert (first["headroom"]["remaining"], first["headroom"]["limit"]) == (2, 100)
        assert 250 < first["headroom"]["reset_in"] <= 300
        assert metric(balancer, "balancer_key_headroom_ratio", provider=name, key="#1") == pytest.approx(0.02)

        for _ in range(3):
            assert ask(balancer).status_code == 200
        assert fake.seen == [k1, k2, k2, k2]  # the low key never got to answer 429
        skipped = metric(balancer, "balancer_key_skipped_total", provider=name, key="#1", reason="headroom")
        assert skipped is not None and skipped >= 3


def test_a_provider_short_of_headroom_goes_after_the_others_but_is_tried_when_alone(balancer, unique):
    low = Answer(anthropic_limits(remaining=1, limit=1000))
    with FakeProvider(low) as a, FakeProvider(Message("from b")) as b:
        balancer.use([anthropic_provider(f"a-{unique}", a.url), anthropic_provider(f"b-{unique}", b.url)])
        assert ask(balancer).headers["x-balancer-provider"] == f"a-{unique}"
        assert ask(balancer).headers["x-balancer-provider"] == f"b-{unique}"
        assert len(a.requests) == 1

        balancer.use([anthropic_provider(f"a-{unique}", a.url)])  # alone: headroom never refuses a request
        assert ask(balancer).headers["x-balancer-provider"] == f"a-{unique}"
        assert len(a.requests) == 2


@pytest.mark.parametrize(("status", "utilization", "passed_over"), [
    ("rejected", 1.0, "rejected"),
    ("allowed_warning", 0.95, "utilization"),
    ("allowed_warning", 0.5, None),
    ("allowed", 0.97, None),
])
def test_subscription_status_decides_with_utilization(balancer, unique, status, utilization, passed_over):
    k1, k2 = f"sk-sub-{unique}-one-gggg", f"sk-sub-{unique}-two-hhhh"
    fake = ByKey({k1: Answer(unified(status, utilization)), k2: Answer(unified("allowed", 0.1))})
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(name, a.url, auth_value=[{"value": k1, "weight": FIRST}, k2])],
                     headroom_utilization=0.9)
        ask(balancer)
        ask(balancer)
        first = keys_of(balancer, name)[0]
        assert first["passed_over"] == passed_over
        assert first["headroom"]["source"] == "anthropic-unified"
        assert fake.seen == [k1, k2 if passed_over else k1]


def test_a_key_at_its_rpm_is_passed_over(balancer, unique):
    k1, k2 = f"sk-rpm-{unique}-one-iiii", f"sk-rpm-{unique}-two-jjjj"
    fake = ByKey({k1: Message("one"), k2: Message("two")})
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(name, a.url, auth_value=[{"value": k1, "weight": FIRST, "rpm": 2}, k2])])
        texts = [ask(balancer).json()["content"][0]["text"] for _ in range(6)]
        # Two a minute at key 1 (a new minute between the requests allows two more), the rest at key 2.
        assert texts[:2] == ["one", "one"]
        assert texts.count("one") <= 4 and "two" in texts
        assert keys_of(balancer, name)[0]["rpm"] == 2


def test_a_key_at_max_concurrent_is_passed_over_until_its_stream_ends(balancer, unique):
    k1, k2 = f"sk-conc-{unique}-one-kkkk", f"sk-conc-{unique}-two-llll"
    gate = threading.Event()
    held = Stream(pieces=["held", "!"], gate=gate, gate_after=FIRST_DELTA + 1)
    fake = ByKey({k1: [held, Message("one")], k2: Message("two")})
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(
            name, a.url, auth_value=[{"value": k1, "weight": FIRST, "max_concurrent": 1}, k2])])
        with httpx.Client(timeout=30) as http, http.stream(
            "POST", balancer.url + "/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": "c"}
        ) as streamed:
            assert streamed.status_code == 200
            wait_until(lambda: keys_of(balancer, name)[0]["open"] == 1, what="the stream open at key 1")
            assert ask(balancer).json()["content"][0]["text"] == "two"
            assert keys_of(balancer, name)[0]["passed_over"] == "max_concurrent"
            gate.set()
            streamed.read()
        wait_until(lambda: keys_of(balancer, name)[0]["open"] == 0, what="the stream closed at key 1")
        assert ask(balancer).json()["content"][0]["text"] == "one"
        assert fake.seen == [k1, k2, k1]


def test_a_key_cools_until_the_date_its_retry_after_names(balancer, unique):
    k1, k2 = f"sk-date-{unique}-one-mmmm", f"sk-date-{unique}-two-nnnn"
    when = format_datetime(datetime.fromtimestamp(time.time() + 90, UTC), usegmt=True)
    fake = ByKey({k1: Status(429, headers={"retry-after": when}), k2: Message("two")})
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(name, a.url, auth_value=[{"value": k1, "weight": FIRST}, k2])])
        assert ask(balancer).json()["content"][0]["text"] == "two"
        assert 60 < keys_of(balancer, name)[0]["cooldown_remaining"] <= 90


def test_removing_a_key_by_reload_leaves_the_other_keys_their_counters_and_limits(balancer, unique):
    k1, k2, k3 = (f"sk-move-{unique}-{n}-oooo" for n in ("one", "two", "three"))
    gate = threading.Event()
    held = [Stream(pieces=["held", "!"], gate=gate, gate_after=FIRST_DELTA + 1, gate_timeout=120) for _ in "ab"]
    fake = ByKey({k1: Message("one"), k2: [Message("two"), *held], k3: Message("three")})
    second = {"value": k2, "weight": FIRST, "max_concurrent": 2}
    with FakeProvider(fake) as a:
        name = f"a-{unique}"
        balancer.use([anthropic_provider(name, a.url, auth_value=[k1, second, k3])])
        # Requests this minute are compared across the reload: not too close to the minute's end.
        wait_until(lambda: time.time() % 60 < 40, timeout=30, what="the start of a minute")
        assert ask(balancer).json()["content"][0]["text"] == "two"
        with httpx.Client(timeout=60) as http, http.stream(
            "POST", balancer.url + "/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": "c"}
        ) as streamed:
            assert streamed.status_code == 200
            wait_until(lambda: keys_of(balancer, name)[1]["open"] == 1, what="the stream open at key 2")
            before = keys_of(balancer, name)[1]
            assert (before["requests_this_minute"], before["tokens_this_minute"]) == (2, 17)
            balancer.use([anthropic_provider(name, a.url, auth_value=[second, k3])])  # key 1 goes: key 2 is #1
            now_first, now_second = keys_of(balancer, name)
            assert now_first["fingerprint"] == before["fingerprint"]
            figures = ("open", "requests_this_minute", "tokens_this_minute")
            assert {f: now_first[f] for f in figures} == {f: before[f] for f in figures}
            assert {f: now_second[f] for f in figures} == dict.fromkeys(figures, 0)
            # Key 2 is at its max_concurrent of 2 with one more request: the next goes to key 3.
            with http.stream("POST", balancer.url + "/v1/messages", json={**BODY, "stream": True},
                             headers={"x-api-key": "c"}) as another:
                assert another.status_code == 200
                wait_until(lambda: keys_of(balancer, name)[0]["open"] == 2, what="two streams open at key 2")
                assert keys_of(balancer, name)[0]["passed_over"] == "max_concurrent"
                assert ask(balancer).json()["content"][0]["text"] == "three"
                gate.set()
                another.read()
            streamed.read()
        wait_until(lambda: keys_of(balancer, name)[0]["open"] == 0, what="the streams closed at key 2")
        assert fake.seen == [k2, k2, k2, k3]
