"""The connection to the shared Redis/Valkey server: one client and one subscription, kept up by a supervisor.

Every call is bounded by `timeout`; a call that fails or is too slow marks the server as lost, and the supervisor
reconnects (with growing pauses) until it is back. Loss and recovery are logged once each. Nothing here ever
runs on a request's path: the addon calls it from its own tasks. The Valkey client is imported when a link is
made, that is only with settings.shared_state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valkey.asyncio import Valkey
    from valkey.asyncio.client import PubSub

log = logging.getLogger("balancer")

PING_INTERVAL = 1.0  # seconds between pings while no message comes (a server that hangs is noticed within it)
RETRY_FIRST, RETRY_MAX = 0.2, 2.0  # pauses between reconnection attempts


class LinkDown(Exception):
    """The shared server cannot be used right now (the caller goes on with its local state)."""


class SharedLink:
    def __init__(
        self,
        url: str,
        shown_url: str,
        channel: str,
        timeout: float,
        on_message: Callable[[bytes], None],
        on_connect: Callable[[], Awaitable[str]],
        on_change: Callable[[bool], None],
        redact: Callable[[str], str] = str,
    ):
        import valkey.asyncio
        from valkey.exceptions import ValkeyError

        self._connect = valkey.asyncio.Valkey.from_url
        self._failures: tuple[type[BaseException], ...] = (ValkeyError, OSError, TimeoutError, EOFError)
        self._losses: tuple[type[BaseException], ...] = (*self._failures, LinkDown)
        self.url, self.shown_url, self.channel, self.timeout = url, shown_url, channel, timeout
        self._on_message, self._on_connect, self._on_change, self._redact = on_message, on_connect, on_change, redact
        self.connected = False
        self.since: float | None = None  # wall clock of the last change between connected and not
        self.last_error: str | None = None
        self._client: Valkey | None = None
        self._failed = asyncio.Event()
        self._lost_at: float | None = None
        self._reported_down = False

    async def call(self, work: Callable[[Valkey], Any]) -> Any:
        """`work(client)`'s result, within `timeout`; raises LinkDown when the server is out of reach (and marks it
        lost). (The client's own types are loose: a command returns an awaitable or, for a pipeline, nothing.)"""
        client = self._client
        if client is None:
            raise LinkDown

        async def run() -> Any:
            result = work(client)
            return await result if inspect.isawaitable(result) else result

        try:
            return await asyncio.wait_for(run(), self.timeout)
        except self._failures as exc:
            self.fail(exc)
            raise LinkDown from None

    def fail(self, exc: BaseException) -> None:
        self.last_error = self._describe(exc)
        self._failed.set()

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {self.timeout:g}s"
        return self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def run(self) -> None:
        """Connect, listen, reconnect: until cancelled."""
        pause = RETRY_FIRST
        while True:
            client = self._connect(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout, health_check_interval=0
            )
            pubsub = client.pubsub()
            try:
                await asyncio.wait_for(client.ping(), self.timeout)
                await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout)
                self._failed.clear()
                self._client = client
                summary = await self._on_connect()  # subscribed first: nothing said meanwhile is missed
                if self._failed.is_set():
                    raise LinkDown
                self._up(summary)
                pause = RETRY_FIRST
                await self._listen(pubsub, client)
            except asyncio.CancelledError:
                raise
            except self._losses as exc:
                if not isinstance(exc, LinkDown):
                    self.last_error = self._describe(exc)
                self._down()
            except Exception as exc:  # a bug here must not end sharing for the life of the process
                log.exception("shared state: unexpected error")
                self.last_error = self._describe(exc)
                self._down()
            finally:
                self._client = None
                await self._close(pubsub, client)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _listen(self, pubsub: PubSub, client: Valkey) -> None:
        last_ping = time.monotonic()
        while not self._failed.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(PING_INTERVAL, 0.25))
            if message is not None and message.get("type") == "message":
                try:
                    self._on_message(message["data"])
                except Exception:  # one bad message must not end the subscription
                    log.exception("shared state: a message could not be applied")
            if time.monotonic() - last_ping >= PING_INTERVAL:
                await asyncio.wait_for(client.ping(), self.timeout)
                last_ping = time.monotonic()
        raise LinkDown

    def _up(self, summary: str) -> None:
        self.connected = True
        self.since = time.time()
        if self._lost_at is None:
            log.info("shared state: connected to %s; %s", self.shown_url, summary)
        else:
            log.warning("shared state: %s is back after %.1fs; %s", self.shown_url, time.monotonic() - self._lost_at,
                        summary)
        self._lost_at = None
        self._reported_down = False
        self._on_change(True)

    def _down(self) -> None:
        was_connected = self.connected
        self.connected = False
        if was_connected or self.since is None:
            self.since = time.time()
        if not self._reported_down:
            self._reported_down = True
            self._lost_at = time.monotonic()
            verb = "lost" if was_connected else "cannot reach"
            log.warning("shared state: %s %s (%s); serving on this instance's own state until it is back", verb,
                        self.shown_url, self.last_error or "unknown error")
        if was_connected:
            self._on_change(False)

    async def _close(self, pubsub: PubSub, client: Valkey) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), self.timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), self.timeout)

    async def stop(self) -> None:
        """Closes what is open (the caller cancels run())."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self.timeout)
        self.connected = False
