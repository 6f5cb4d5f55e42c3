"""Several instances, one view of the providers: `settings.shared_state` (a Redis or Valkey server).

Requests never wait for the server. Every request decides from this instance's own health board, session map
and round-robin turn, exactly as a single instance does; this addon keeps those in step with the other
instances', off the request path:

- what this instance changes is written to the server and published on one channel at once (a background task
  woken by the change): health (cooldown, its reason and class, failure streak, cooldown count, last error,
  a reset after a success or a forgiven credential), a session pinned to a provider, a probe claim given up;
  latency averages and the round-robin turn every SYNC_INTERVAL;
- what the others publish is merged into the local state as it arrives (`shared_records.merge_health`: the order
  of news does not matter);
- on connecting, and on coming back after the server was lost, the instance reads what is kept on the server
  (health of every configured provider, the session pins, the turn) and writes what it learned meanwhile;
- a provider whose cooldown ended is probed by one instance: the one holding its claim (`probe_gate.py`);
- the keys of a pool are shared like providers (health under the key's subject, `key:<provider>#<identity>`),
  and each key's latest rate-limit reading is published as it is read;
- usage (usage_windows.py: requests and tokens per key, client quotas) is exchanged every SYNC_INTERVAL
  (usage_sync.py: each instance writes its own totals of the current windows, and reads the others' for every
  configured key and client); requests open now likewise. Limits therefore hold across instances to within what
  the instances count in one SYNC_INTERVAL.

Keys are `<namespace>:health:<provider>:<fingerprint>` (a hash, one field per instance), `<namespace>:probe:...`,
`<namespace>:pin:<session digest>`, `<namespace>:turn`, and the channel `<namespace>:events`; every one has a TTL.
Without the server (unreachable at start-up, stopped, too slow) each instance serves on its own state, says so
once in the log, in GET /, /providers and /metrics, and catches up when the server is back.

Without `settings.shared_state` this addon does nothing at all (and the Valkey client is never imported).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .affinity import SessionAffinity
from .health import folded_latency
from .key_book import KeyBook
from .probe_gate import ProbeGate
from .providers import Providers
from .quotas import QUOTAS
from .quotas import subject as quota_subject
from .ratelimit_headers import Reading
from .routing import Router
from .shared_link import LinkDown, SharedLink
from .shared_records import (
    HeadroomNews,
    HealthNews,
    HealthRecord,
    Keys,
    LatencyNews,
    Message,
    Pin,
    ProbeReleased,
    decode,
    decode_pin,
    decode_record,
    encode,
    encode_pin,
    encode_record,
    fingerprint,
    health_ttl_ms,
    is_blank,
    key_fingerprints,
    merge_health,
    record_of,
    session_digest,
)
from .usage_sync import UsageSync, slot_of
from .usage_windows import MINUTE, Slot

if TYPE_CHECKING:
    from valkey.asyncio import Valkey
    from valkey.asyncio.client import Pipeline


log = logging.getLogger("balancer")

SYNC_INTERVAL = 1.0  # seconds between shares of latency averages and the round-robin turn
CLAIM_SLACK = 5.0  # a probe claim lasts first_content_wait plus this (a probe's outcome is known by then)
TURN_TTL_MS = 24 * 3600 * 1000
PIN_BATCH = 500  # pins read or written per call when re-synchronising
USAGE_MEASURES = ("requests", "tokens")  # what a key's limits read (minute windows)
MAX_PENDING_PINS = 10_000

# Lua, run atomically by the server. CLAIM: 0 when the claim is (now) ours, else the holder's remaining ms.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return left
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _scan(client: Valkey, cursor: int, match: str, count: int) -> Any:
    return client.scan(cursor, match=match, count=count)


def _mget(client: Valkey, keys: list[bytes]) -> Any:
    return client.mget(keys)


def shown_url(url: str) -> str:
    """The server's URL without its password (for logs and status)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class SharedState:
    def __init__(self, providers: Providers, affinity: SessionAffinity, router: Router):
        self.providers = providers
        self.affinity = affinity
        self.router = router
        self.origin = instance_id()
        self.gate = ProbeGate(self._ask_claim)
        self.keys = Keys("balancer")
        self._wanted: tuple[str, str, float] | None = None  # (url, namespace, timeout) of the settings in force
        self._link: SharedLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._running = False
        self._wake: asyncio.Event | None = None
        self._fps: dict[str, str] = {}  # provider name -> fingerprint
        # Waiting to be written: providers whose health changed, pins, claims to give up or extend, latency sums,
        # providers whose shared health to read (new or changed by a reload).
        self._dirty: set[str] = set()
        self._pins: dict[str, str] = {}
        self._release: dict[str, bool] = {}  # provider -> also tell the others (no outcome to tell them instead)
        self._extend: set[str] = set()
        self._latency: dict[str, tuple[float, int]] = {}
        self._fetch: set[str] = set()
        self._turn_seen = 0
        self._last_sync = 0.0
        self._readings: dict[str, Reading] = {}  # subject -> a reading to publish
        self._usage_sync = UsageSync(self.keys, self.origin)
        providers.on_apply.append(self._configure)
        providers.keys.on_reading = self._read_headroom
        providers.shared_status = self.status
        providers.board.probing_elsewhere = self.gate.elsewhere

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def running(self) -> None:
        self._running = True
        self._wake = asyncio.Event()
        self._restart()

    async def done(self) -> None:
        self._running = False
        await self._stop()

    def _configure(self) -> None:
        """After every configuration that takes effect: which server, and which providers are still the same."""
        settings = self.providers.settings
        config = self.providers.config
        wanted = (
            (settings.shared_state, settings.shared_state_namespace, settings.shared_state_timeout)
            if settings.shared_state else None
        )
        fps = {p.name: fingerprint(p) for p in config.providers}
        for provider in config.providers:
            fps.update(key_fingerprints(provider))
        if wanted is not None:
            for name, fp in fps.items():
                if self._fps.get(name) != fp:
                    if name in self._fps:  # the same name, another provider now: nothing learned applies
                        self.providers.board.forget(name)
                        self.gate.forget(name)
                        self._dirty.discard(name)
                    self._fetch.add(name)
        self._fps = fps
        if wanted != self._wanted:
            self._wanted = wanted
            if self._running:
                self._restart()
        elif self._wake is not None:
            self._wake.set()

    def _restart(self) -> None:
        previous = self._tasks
        self._tasks = []
        for task in previous:
            task.cancel()  # the old link closes its connection as its task ends
        self._connection_changed(False)  # decide alone until the new link is up
        board = self.providers.board
        if self._wanted is None:
            board.listener = board.probe_gate = board.probe_peek = None
            self.affinity.listener = None
            self.affinity.share(None)
            self._link = None
            return
        url, namespace, timeout = self._wanted
        self.keys = Keys(namespace)
        self._usage_sync = UsageSync(self.keys, self.origin)
        board.listener = self
        board.probe_gate = self.gate.allow
        board.probe_peek = self.gate.peek
        board.origin = self.origin
        self.affinity.share(session_digest)
        self.affinity.listener = self._pinned
        self._link = SharedLink(
            url, shown_url(url), self.keys.channel, timeout, self._receive, self._resync, self._connection_changed,
            redact=self.providers.redact,
        )
        self._tasks = [asyncio.create_task(self._link.run()), asyncio.create_task(self._write_loop(self._link))]

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._link is not None:
            await self._link.stop()

    def status(self) -> dict[str, Any] | None:
        """The shared state's part of GET / and /providers (None without shared_state)."""
        if self._wanted is None:
            return None
        link = self._link
        connected = link is not None and link.connected
        return {
            "url": shown_url(self._wanted[0]),
            "namespace": self._wanted[1],
            "connected": connected,
            "since": link.since if link else None,
            "instance": self.origin,
            "last_error": None if connected or link is None else link.last_error,
        }

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def _connection_changed(self, connected: bool) -> None:
        self.gate.clear()
        self.gate.active = connected
        if not connected:
            self._readings.clear()
            self._usage_sync.forget(self.providers.keys.usage)
            self._pins.clear()
            self._latency.clear()
            self._release.clear()
            self._extend.clear()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- what this instance changes (HealthListener; called on the request path: only note it) --------------
    def health_changed(self, name: str) -> None:
        self._dirty.add(name)
        if self.gate.holds(name):
            board = self.providers.board
            if board.is_cooling_down(name) or board.get(name).cooldowns == 0:  # the probe's outcome
                self.gate.forget(name)
                self._release[name] = False
        self._poke()

    def probe_started(self, name: str) -> None:
        if self.gate.holds(name):
            self._extend.add(name)
            self._poke()

    def probe_ended(self, name: str) -> None:
        if self.gate.holds(name):
            self.gate.forget(name)
            self._release[name] = True
            self._poke()

    def latency_sampled(self, name: str, latency_ms: float) -> None:
        if self.connected:
            total, count = self._latency.get(name, (0.0, 0))
            self._latency[name] = (total + latency_ms, count + 1)

    def _read_headroom(self, subject: str, reading: Reading) -> None:
        if self.connected and subject in self._fps:
            self._readings[subject] = reading
            self._poke()

    def _pinned(self, session: str, provider: str) -> None:
        if self.connected and len(self._pins) < MAX_PENDING_PINS:
            self._pins[session] = provider
            self._poke()

    def _ask_claim(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._claim(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- talking to the server ------------------------------------------------------------------------------
    def _claim_ttl_ms(self) -> int:
        return int((self.providers.settings.first_content_wait + CLAIM_SLACK) * 1000)

    async def _claim(self, name: str) -> None:
        link, fp = self._link, self._fps.get(name)
        if link is None or fp is None:
            self.gate.forget(name)
            return
        key, ttl_ms = self.keys.probe(name, fp), self._claim_ttl_ms()
        try:
            left = await link.call(lambda c: c.eval(CLAIM, 1, key, self.origin, str(ttl_ms)))
        except LinkDown:  # the next request that needs the claim asks again
            self.gate.forget(name)
            return
        if int(left) == 0:
            self.gate.granted(name, ttl_ms / 1000)
        else:
            self.gate.refused(name, int(left) / 1000)

    async def _write_loop(self, link: SharedLink) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SYNC_INTERVAL)
            wake.clear()
            if not link.connected:
                continue
            try:
                await self._flush(link)
            except LinkDown:  # the supervisor reconnects, and re-synchronising writes what was not written
                continue
            except Exception as exc:  # a surprise must not end sharing
                log.exception("shared state: writing failed")
                link.fail(exc)

    async def _flush(self, link: SharedLink) -> None:
        board = self.providers.board
        mono, wall = board.now()
        ops: list[Callable[[Pipeline], Any]] = []
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            fp = self._fps.get(name)
            if fp is not None:
                record = record_of(board.get(name), mono, wall)
                ops.append(self._health_write(name, fp, record, wall))
        release, self._release = self._release, {}
        for name, tell in release.items():
            fp = self._fps.get(name)
            if fp is not None:
                ops.append(self._release_op(name, fp, tell))
        extend, self._extend = self._extend, set()
        for name in extend:
            fp = self._fps.get(name)
            if fp is not None and self.gate.holds(name):
                ops.append(self._extend_op(self.keys.probe(name, fp)))
        pins, self._pins = self._pins, {}
        for session, provider in pins.items():
            fp = self._fps.get(provider)
            if fp is not None:
                ops.append(self._pin_write(session, provider, fp))
        readings, self._readings = self._readings, {}
        for subject, reading in readings.items():
            fp = self._fps.get(subject)
            if fp is not None:
                ops.append(self._publish_op(HeadroomNews(subject, fp, reading)))
        turn_sent: int | None = None
        usage_due = False
        if time.monotonic() - self._last_sync >= SYNC_INTERVAL:
            self._last_sync = time.monotonic()
            usage_due = True
            latency, self._latency = self._latency, {}
            for name, (total, count) in latency.items():
                fp = self._fps.get(name)
                if fp is not None:
                    ops.append(self._publish_op(LatencyNews(name, fp, total / count, count)))
            if self.router.turn != self._turn_seen:
                turn_sent = self.router.turn
        fetch, self._fetch = self._fetch, set()
        if usage_due:
            await self._sync_usage(link, wall)
        if not ops and turn_sent is None and not fetch:
            return
        await link.call(lambda c: self._run_pipeline(c, ops))
        if turn_sent is not None:
            await self._sync_turn(link, turn_sent)
        if fetch:
            await self._read_health(link, [name for name in fetch if name in self._fps])

    @staticmethod
    async def _run_pipeline(client: Valkey, ops: list[Callable[[Pipeline], Any]]) -> list[Any]:
        if not ops:
            return []
        pipe = client.pipeline(transaction=False)
        for op in ops:
            op(pipe)
        return await pipe.execute()

    def _health_write(self, name: str, fp: str, record: HealthRecord, wall: float) -> Callable[[Pipeline], Any]:
        key = self.keys.health(name, fp)
        ttl = health_ttl_ms(record, wall, self._retention())
        value, news = encode_record(record), encode(self.origin, HealthNews(name, fp, record))

        def op(pipe: Pipeline) -> None:
            pipe.hset(key, self.origin, value)
            pipe.pexpire(key, ttl)
            pipe.publish(self.keys.channel, news)

        return op

    def _publish_op(self, message: Message) -> Callable[[Pipeline], Any]:
        news = encode(self.origin, message)
        return lambda pipe: pipe.publish(self.keys.channel, news)

    def _extend_op(self, key: str) -> Callable[[Pipeline], Any]:
        ttl = str(self._claim_ttl_ms())
        return lambda pipe: pipe.eval(EXTEND, 1, key, self.origin, ttl)

    def _release_op(self, name: str, fp: str, tell: bool) -> Callable[[Pipeline], Any]:
        key, news = self.keys.probe(name, fp), encode(self.origin, ProbeReleased(name, fp))

        def op(pipe: Pipeline) -> None:
            pipe.eval(RELEASE, 1, key, self.origin)
            if tell:
                pipe.publish(self.keys.channel, news)

        return op

    def _pin_write(self, session: str, provider: str, fp: str, publish: bool = True) -> Callable[[Pipeline], Any]:
        key, value = self.keys.pin(session), encode_pin(provider, fp)
        news = encode(self.origin, Pin(session, provider, fp))
        ttl_ms = int(self.affinity.ttl * 1000)

        def op(pipe: Pipeline) -> None:
            pipe.set(key, value, px=ttl_ms)
            if publish:
                pipe.publish(self.keys.channel, news)

        return op

    def _retention(self) -> float:
        """Seconds a health record is kept past its cooldown: a cooldown that follows still grows from it."""
        settings = self.providers.settings
        return max(settings.max_cooldown, settings.failure_cooldown, 60.0)

    async def _sync_turn(self, link: SharedLink, sent: int) -> None:
        """Round robin across instances: the shared count of turns taken everywhere, approximately."""
        taken = sent - self._turn_seen
        key = self.keys.turn

        async def exchange(client: Valkey) -> int:
            pipe = client.pipeline(transaction=False)
            pipe.incrby(key, max(taken, 0))
            pipe.pexpire(key, TURN_TTL_MS)
            total, _ = await pipe.execute()
            return int(total)

        total = await link.call(exchange)
        # Turns taken here while the count travelled are kept on top of it.
        self.router.turn = total + (self.router.turn - sent)
        self._turn_seen = self.router.turn

    def _watched_slots(self, book: KeyBook, wall: float) -> list[tuple[Slot, float]]:
        """(slot, window end) of every window /providers and /usage show: each configured key's minute, each named
        client's quota windows (limited or not, so that every figure shown is the fleet's)."""
        watched = [slot_of(subject, measure, MINUTE, wall) for subject in book.limits for measure in USAGE_MEASURES]
        for client in self.providers.settings.client_keys:
            watched += [slot_of(quota_subject(client.name), quota.measure, quota.window, wall) for quota in QUOTAS]
        return watched

    async def _sync_usage(self, link: SharedLink, wall: float) -> None:
        """Write this instance's usage totals and its open requests; learn the other instances'."""
        book: KeyBook = self.providers.keys
        usage = book.usage
        turn = self._usage_sync.exchange(usage, self._watched_slots(book, wall), book.limits, wall)
        if not turn.written and not turn.read and not turn.opens:
            return

        async def exchange(client: Valkey) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            turn.queue(pipe)
            return await pipe.execute()

        # A failed write needs nothing put back: the next one writes the whole totals again.
        turn.learn(await link.call(exchange), usage)

    async def _read_health(self, link: SharedLink, names: list[str]) -> int:
        """Merge what the server keeps about these providers; the number of providers it knew something of."""
        if not names:
            return 0
        keys = [self.keys.health(name, self._fps[name]) for name in names]

        async def read(client: Valkey) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return await pipe.execute()

        replies = await link.call(read)
        board = self.providers.board
        known = 0
        for name, fields in zip(names, replies, strict=False):
            if not fields:
                continue
            known += 1
            mono, wall = board.now()
            for value in fields.values():
                record = decode_record(value)
                if record is not None and merge_health(board.get(name), record, mono, wall):
                    self.gate.forget(name)
        return known

    async def _resync(self) -> str:
        """On (re)connecting: read what the server keeps, then write what this instance learned meanwhile."""
        link = self._link
        assert link is not None
        self.gate.clear()
        names = list(self._fps)
        self._fetch.clear()
        providers = {p.name for p in self.providers.config.providers}
        known = await self._read_health(link, [n for n in names if n in providers])
        known_keys = await self._read_health(link, [n for n in names if n not in providers])
        board = self.providers.board
        self._dirty.clear()
        mono, wall = board.now()
        ops: list[Callable[[Pipeline], Any]] = []
        for name in names:
            record = record_of(board.get(name), mono, wall)
            if not is_blank(record):
                ops.append(self._health_write(name, self._fps[name], record, wall))
        await link.call(lambda c: self._run_pipeline(c, ops))
        adopted = await self._read_pins(link)
        local = [(s, p) for s, p, _ in self.affinity.pins() if p in self._fps]
        for start in range(0, len(local), PIN_BATCH):
            batch = [self._pin_write(s, p, self._fps[p]) for s, p in local[start:start + PIN_BATCH]]
            await link.call(functools.partial(self._run_pipeline, ops=batch))
        self._turn_seen = self.router.turn
        self._last_sync = 0.0
        keys = len(names) - len(providers & set(names))
        pools = f", {known_keys} of {keys} pool keys'" if keys else ""
        return (f"namespace {self.keys.namespace}; re-synchronised {known} of {len(names) - keys} providers'"
                f"{pools} health and {adopted} sessions")

    async def _read_pins(self, link: SharedLink) -> int:
        adopted, cursor = 0, 0
        while adopted < self.affinity.max_entries:
            cursor, keys = await link.call(
                functools.partial(_scan, cursor=cursor, match=self.keys.pin_pattern, count=PIN_BATCH)
            )
            if keys:
                values = await link.call(functools.partial(_mget, keys=keys))
                prefix = len(self.keys.pin(""))
                for key, value in zip(keys, values, strict=False):
                    pin = decode_pin(value) if value is not None else None
                    if pin is not None and self._fps.get(pin[0]) == pin[1]:
                        self.affinity.adopt(key[prefix:].decode() if isinstance(key, bytes) else key[prefix:], pin[0])
                        adopted += 1
            if int(cursor) == 0:
                break
        return adopted

    # -- what the others changed ----------------------------------------------------------------------------
    def _receive(self, data: bytes) -> None:
        decoded = decode(data)
        if decoded is None or decoded[0] == self.origin:
            return
        self.apply(decoded[1])

    def apply(self, message: Message) -> None:
        """Take in one message of another instance (about a provider configured alike here, else ignored)."""
        if self._fps.get(message.provider) != message.fingerprint:
            return
        board = self.providers.board
        if isinstance(message, HealthNews):
            mono, wall = board.now()
            if merge_health(board.get(message.provider), message.record, mono, wall):
                self.gate.forget(message.provider)
        elif isinstance(message, ProbeReleased):
            self.gate.forget(message.provider)
        elif isinstance(message, Pin):
            self.affinity.adopt(message.session, message.provider)
        elif isinstance(message, HeadroomNews):
            self.providers.keys.learn(message.provider, message.reading)
        else:
            health = board.get(message.provider)
            health.latency_ms = folded_latency(health.latency_ms, message.latency_ms, message.samples)
