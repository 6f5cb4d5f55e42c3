"""Client quotas across two real mitmdump instances sharing a real Valkey server: a client that spends at one
instance is over its quota at the other, even one it never sent a request to. Waits poll with generous deadlines;
nothing asserts how fast the counts travel."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from balancer_proc import BalancerProcess
from benchkit.kv_server import KeyValueServer, server_binary
from fakes import FakeProvider
from helpers import anthropic_provider, wait_until

# Several instances and a server: a cluster, run with the heavy tests (CI runs them; pyproject.toml, markers).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here"),
]

CLIENT_KEY = "sk-shared-quota-client-1234567"
ADMIN_KEY = "sk-shared-quota-admin-7654321"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pair(tmp_path) -> Iterator[list[BalancerProcess]]:
    instances = [BalancerProcess(tmp_path / f"i{i}") for i in range(2)]
    with KeyValueServer() as kv, FakeProvider() as upstream:
        try:
            for instance in instances:
                instance.workdir.mkdir(parents=True, exist_ok=True)
                instance.write_providers(
                    [anthropic_provider("a", upstream.url)], shared_state=kv.url, admin_keys=[ADMIN_KEY],
                    client_keys=[{"name": "alice", "key": CLIENT_KEY, "requests_per_minute": 2}])
                instance.start()
            for instance in instances:
                wait_until(lambda i=instance: httpx.get(i.url + "/providers", headers={"x-api-key": ADMIN_KEY},
                                                        timeout=10).json()["shared_state"]["connected"],
                           what="connected to the shared server")
            yield instances
        finally:
            for instance in instances:
                instance.stop()


def requests_used(instance: BalancerProcess) -> float:
    clients = httpx.get(instance.url + "/usage", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()["clients"]
    alice = next(c for c in clients if c["name"] == "alice")
    return next(q["used"] for q in alice["quotas"] if q["quota"] == "requests_per_minute")


def ask(instance: BalancerProcess) -> httpx.Response:
    return httpx.post(instance.url + "/v1/messages", json=BODY, headers={"x-api-key": CLIENT_KEY}, timeout=30)


def test_a_quota_spent_at_one_instance_holds_at_the_other(pair):
    a, b = pair
    for _ in range(3):  # a minute that ends meanwhile starts the counts afresh: try again in the next one
        minute = time.time() // 60
        assert [ask(a).status_code for _ in range(2)] == [200, 200]
        # b never served alice, yet learns what she used at a.
        wait_until(lambda m=minute: requests_used(b) >= 2 or time.time() // 60 != m, what="b knows of a's requests")
        refused = ask(b)
        if time.time() // 60 == minute:
            break
    assert refused.status_code == 429, refused.text
    assert "requests_per_minute" in refused.json()["error"]["message"]
