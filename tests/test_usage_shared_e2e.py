"""Usage shared through a real Valkey server by real mitmdump instances, when things go wrong: the server restarts
empty (a quota already spent stays spent, at an instance that never served the client and at one started after),
and an instance stops with a request open (the others stop counting it). Waits poll with generous deadlines;
nothing asserts how fast anything travels."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from balancer_proc import BalancerProcess, two_instances_and_a_server
from benchkit.kv_server import KeyValueServer, server_binary
from fakes import FakeProvider, Message, Stream
from helpers import FIRST_DELTA, anthropic_provider, wait_until
from test_key_pools import FIRST, ByKey, keys_of

# Several instances and a server: a cluster, run with the heavy tests (CI runs them; pyproject.toml, markers).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here"),
]

CLIENT_KEY = "sk-usage-restart-client-1234567"
ADMIN_KEY = "sk-usage-restart-admin-7654321"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def admin(instance: BalancerProcess, path: str) -> Any:
    return httpx.get(instance.url + path, headers={"x-api-key": ADMIN_KEY}, timeout=10).json()


def connected(instance: BalancerProcess) -> bool:
    return bool(admin(instance, "/providers")["shared_state"]["connected"])


def tokens_used(instance: BalancerProcess) -> float:
    alice = next(c for c in admin(instance, "/usage")["clients"] if c["name"] == "alice")
    return float(next(q["used"] for q in alice["quotas"] if q["quota"] == "tokens_per_day"))


def ask(instance: BalancerProcess) -> httpx.Response:
    return httpx.post(instance.url + "/v1/messages", json=BODY, headers={"x-api-key": CLIENT_KEY}, timeout=30)


def started(root: Path, name: str, kv: KeyValueServer, upstream: FakeProvider) -> BalancerProcess:
    instance = BalancerProcess(root / name)
    instance.workdir.mkdir(parents=True, exist_ok=True)
    instance.write_providers(
        [anthropic_provider("a", upstream.url)], shared_state=kv.url, admin_keys=[ADMIN_KEY],
        client_keys=[{"name": "alice", "key": CLIENT_KEY, "tokens_per_day": 1}])
    try:
        instance.start()
    except BaseException:
        instance.stop()
        raise
    return instance


def test_a_quota_spent_before_the_server_restarted_empty_stays_spent(tmp_path: Path) -> None:
    day = time.time() // 86400
    instances: list[BalancerProcess] = []
    kv, restarted = KeyValueServer().start(), None
    try:
        with FakeProvider() as upstream:
            instances += [started(tmp_path, "a", kv, upstream)]
            instances += [started(tmp_path, "b", kv, upstream)]
            a, b = instances
            for instance in (a, b):
                wait_until(lambda i=instance: connected(i), what="connected to the shared server")
            assert ask(a).status_code == 200
            wait_until(lambda: tokens_used(b) >= 1, what="b knows of alice's tokens at a")
            assert ask(b).status_code == 429

            kv.kill()  # its counts are gone with it
            for instance in (a, b):
                wait_until(lambda i=instance: not connected(i), what="the loss noticed")
            restarted = KeyValueServer(port=kv.port).start()
            for instance in (a, b):
                wait_until(lambda i=instance: connected(i), what="reconnected to the restarted server")
            # A newcomer knows only what the server holds: a's count, written again by a.
            instances += [started(tmp_path, "c", restarted, upstream)]
            c = instances[2]
            wait_until(lambda: connected(c), what="the newcomer connected")
            wait_until(lambda: tokens_used(c) >= 1, what="the newcomer learns alice's tokens at a")
            refused = [ask(instance) for instance in (b, c)]
            if time.time() // 86400 != day:
                pytest.skip("the day ended during the test: the quota started afresh")
            assert [r.status_code for r in refused] == [429, 429], [r.text for r in refused]
            assert "tokens_per_day" in refused[0].json()["error"]["message"]
    finally:
        for instance in instances:
            instance.stop()
        for server in (kv, restarted):
            if server is not None:
                server.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[KeyValueServer, list[BalancerProcess]]]:
    with two_instances_and_a_server(tmp_path) as started:
        yield started


def test_requests_open_at_a_stopped_instance_stop_counting_at_the_other(pair) -> None:
    kv, (a, b) = pair
    k1, k2 = "sk-open-stopped-one", "sk-open-stopped-two"
    gate = threading.Event()
    held = Stream(pieces=["held", "!"], gate=gate, gate_after=FIRST_DELTA + 1)
    fake = ByKey({k1: [held, Message("one")], k2: Message("two")})
    try:
        with FakeProvider(fake) as upstream:
            # No limit on the keys: open counts are shared all the same (they are shown in /providers).
            for instance in (a, b):
                instance.use([anthropic_provider("p", upstream.url, auth_value=[{"value": k1, "weight": FIRST}, k2])],
                             shared_state=kv.url)
            for instance in (a, b):
                wait_until(lambda i=instance: httpx.get(i.url + "/providers", timeout=10).json()["shared_state"]
                           ["connected"], what="connected to the shared server")
            body = {**BODY, "stream": True}
            with httpx.Client(timeout=30) as http, http.stream(
                "POST", a.url + "/v1/messages", json=body, headers={"x-api-key": "c"}
            ) as streamed:
                assert streamed.status_code == 200
                wait_until(lambda: keys_of(b, "p")[0]["open"] == 1, what="b knows of the stream open at a")
                a.stop()  # with its stream open: it never says the stream ended
                wait_until(lambda: keys_of(b, "p")[0]["open"] == 0, what="b forgets what a had open")
    finally:
        gate.set()
