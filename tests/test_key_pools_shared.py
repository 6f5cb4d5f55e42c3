"""Key pools across two real mitmdump instances sharing a real Valkey server: a key's health, its headroom, its use
in the current minute and its open requests are known to both, so that an rpm or max_concurrent limit holds for
both together. Every wait polls with a generous deadline; nothing asserts how fast anything travels."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from balancer_proc import BalancerProcess, two_instances_and_a_server
from benchkit.kv_server import KeyValueServer, server_binary
from fakes import FakeProvider, Message, Status, Stream
from helpers import FIRST_DELTA, anthropic_provider, wait_until
from test_key_pools import FIRST, Answer, ByKey, anthropic_limits, ask, keys_of

# Several instances and a server: a cluster, run with the heavy tests (CI runs them; pyproject.toml, markers).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here"),
]

_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeyValueServer, list[BalancerProcess]]]:
    with two_instances_and_a_server(tmp_path_factory.mktemp("pools-shared")) as started:
        yield started


def share(pair: tuple[KeyValueServer, list[BalancerProcess]], providers: list[dict[str, Any]]) -> list[BalancerProcess]:
    kv, instances = pair
    namespace = f"pools-{next(_namespaces)}"  # a fresh namespace: no count of an earlier test is seen
    for instance in instances:
        instance.use(providers, shared_state=kv.url, shared_state_namespace=namespace)
    for instance in instances:
        wait_until(lambda i=instance: httpx.get(i.url + "/providers", timeout=10).json()["shared_state"]["connected"],
                   what="connected to the shared server")
    return instances


class NewMinute(Exception):
    """The minute changed while a test counted requests in it: the counts started again."""


def wait_in_minute(minute: float, condition: Callable[[], bool], what: str) -> None:
    def done() -> bool:
        if time.time() // 60 != minute:
            raise NewMinute
        return condition()

    wait_until(done, what=what)


def rpm_round(pair: tuple[KeyValueServer, list[BalancerProcess]], name: str, minute: float) -> list[str]:
    """Two requests at a, two at b (each instance waits to know of the other's), then one at each: key 1 has an rpm
    of 4, so the last two go to key 2 wherever they arrive."""
    k1, k2 = f"sk-rpm-shared-{name}-one", f"sk-rpm-shared-{name}-two"
    fake = ByKey({k1: Message("one"), k2: Message("two")})
    with FakeProvider(fake) as upstream:
        a, b = share(pair, [anthropic_provider(
            name, upstream.url, auth_value=[{"value": k1, "weight": FIRST, "rpm": 4}, k2])])
        texts = [ask(a).json()["content"][0]["text"] for _ in range(2)]
        wait_in_minute(minute, lambda: keys_of(b, name)[0]["requests_this_minute"] == 2, "b knows of a's two")
        texts += [ask(b).json()["content"][0]["text"] for _ in range(2)]
        wait_in_minute(minute, lambda: keys_of(a, name)[0]["requests_this_minute"] == 4, "a knows of b's two")
        # a sent two itself: alone it would send two more to key 1.
        texts += [ask(a).json()["content"][0]["text"], ask(b).json()["content"][0]["text"]]
    if time.time() // 60 != minute:
        raise NewMinute
    assert fake.seen.count(k1) == 4
    return texts


def test_two_instances_hold_an_rpm_limit_together(pair, unique):
    for attempt in range(3):  # a new minute between the steps resets the counts: then the steps run again
        try:
            texts = rpm_round(pair, f"a-{unique}-{attempt}", time.time() // 60)
        except NewMinute:
            continue
        assert texts == ["one"] * 4 + ["two"] * 2
        return
    pytest.fail("every attempt crossed a minute boundary")


def test_a_stream_open_at_one_instance_counts_for_max_concurrent_at_the_other(pair, unique):
    k1, k2 = f"sk-conc-shared-{unique}-one", f"sk-conc-shared-{unique}-two"
    gate = threading.Event()
    held = Stream(pieces=["held", "!"], gate=gate, gate_after=FIRST_DELTA + 1)
    fake = ByKey({k1: [held, Message("one")], k2: Message("two")})
    with FakeProvider(fake) as upstream:
        name = f"a-{unique}"
        a, b = share(pair, [anthropic_provider(
            name, upstream.url, auth_value=[{"value": k1, "weight": FIRST, "max_concurrent": 1}, k2])])
        body = {"model": "claude-sonnet-4", "max_tokens": 8, "stream": True,
                "messages": [{"role": "user", "content": "Hi"}]}
        with httpx.Client(timeout=30) as http, http.stream(
            "POST", a.url + "/v1/messages", json=body, headers={"x-api-key": "c"}
        ) as streamed:
            assert streamed.status_code == 200
            wait_until(lambda: keys_of(b, name)[0]["open"] == 1, what="b knows of the stream open at a")
            assert ask(b).json()["content"][0]["text"] == "two"
            gate.set()
            streamed.read()
        wait_until(lambda: keys_of(b, name)[0]["open"] == 0, what="b knows the stream ended")
        assert ask(b).json()["content"][0]["text"] == "one"


def test_a_keys_cooldown_and_headroom_travel_to_the_other_instance(pair, unique):
    k1, k2, k3 = (f"sk-health-shared-{unique}-{n}" for n in ("one", "two", "three"))
    fake = ByKey({k1: Status(429, headers={"retry-after": "300"}), k2: Answer(anthropic_limits(remaining=1)),
                  k3: Message("three")})
    with FakeProvider(fake) as upstream:
        name = f"a-{unique}"
        a, b = share(pair, [anthropic_provider(
            name, upstream.url, auth_value=[{"value": k1, "weight": FIRST}, {"value": k2, "weight": 1000.0}, k3])])
        assert ask(a).status_code == 200
        assert fake.seen == [k1, k2]
        wait_until(lambda: keys_of(b, name)[0]["cooldown_remaining"] > 0 and keys_of(b, name)[1]["headroom"],
                   what="b knows key 1 cools down and key 2 is short of headroom")
        first, second, _ = keys_of(b, name)
        assert first["healthy"] is False and "429" in first["cooldown_reason"]
        assert second["passed_over"] == "headroom"
        assert ask(b).json()["content"][0]["text"] == "three"
        assert fake.seen == [k1, k2, k3]
