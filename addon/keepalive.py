"""Keep-alive pings for a committed stream that goes quiet (a model thinking without streaming its reasoning).

Clients abort a stream after a stretch without any byte (Claude Code's stall watchdog); Anthropic's own API sends
`ping` events meanwhile. The relay writes a guarded stream's body, which comes as whole events only, and tells
`Pings` whenever it writes some: a ping is sent only between two writes, never inside an event. The provider
connection is read as before, so its own idle timeout (`stream_idle_timeout`) still ends a stream that is truly
dead, pings or not.

A timer, not a wait beside each read: a stream that flows costs one clock reading per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .anthropic_events import PING

# A timer may fire this much early (the event loop's clock resolution): still due.
_EARLY = 0.001


class Pings:
    """Calls `send(ping)` each time `interval` seconds pass without `heard()`. The first `heard()` starts it (a
    stream's opening goes first); `stop()` ends it, and so does `answered()` once it is true (after the answer's
    `message_delta` only `message_stop` may follow)."""

    def __init__(self, send: Callable[[bytes], None], interval: float, ping: bytes = PING,
                 answered: Callable[[], bool] = lambda: False) -> None:
        self._send = send
        self._answered = answered
        self._interval = interval
        self._ping = ping
        self._loop = asyncio.get_running_loop()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self.sent = 0

    def heard(self) -> None:
        """Something went to the client just now."""
        self._last = self._loop.time()
        if self._timer is None and not self._stopped:
            self._timer = self._loop.call_at(self._last + self._interval, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._answered():
            self.stop()
            return
        now = self._loop.time()
        quiet_until = self._last + self._interval
        if now + _EARLY >= quiet_until:
            self._send(self._ping)
            self.sent += 1
            self._last = now
            quiet_until = now + self._interval
        self._timer = self._loop.call_at(quiet_until, self._due)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
