"""Open files (descriptors): the limit is raised at start-up, running out is the balancer's own shortage, and a
few can be held back for the moment another socket needs them.

An open stream holds four descriptors: the client's connection, both ends of the loopback relay hop, and the
provider's connection. The soft limit many systems start processes with (1024) runs out at about 250 streams,
and mitmproxy does not raise it; the hard limit is the ceiling an unprivileged process may raise it to.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections.abc import Callable

try:
    import resource
except ImportError:  # Windows: no such limit to raise
    resource = None  # type: ignore[assignment]

log = logging.getLogger("balancer.open_files")

# The errors of a process (EMFILE) or a system (ENFILE) that has no descriptor left to give.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
# Asked for when the hard limit is "unlimited", which the kernel never grants as a soft limit (Linux caps it at
# fs.nr_open, macOS at OPEN_MAX for this call).
UNLIMITED_FALLBACKS = (1024 * 1024, 65536, 10240)
# The failure class of an attempt that failed for lack of descriptors here: not held against the provider.
LOCAL = "local"


def soft_limits_to_try(soft: int, hard: int, unlimited: int) -> list[int]:
    """The soft limits worth asking for, best first: the hard limit, or when that is unlimited the fallbacks
    that fit; never one below the current soft limit (an empty list: nothing to raise)."""
    if soft == unlimited:
        return []
    if hard != unlimited:
        return [hard] if hard > soft else []
    return [n for n in UNLIMITED_FALLBACKS if n > soft]


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise this process's soft open-file limit as far as the hard limit allows: (before, after), or None where
    the platform has no such limit."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for candidate in soft_limits_to_try(soft, hard, resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError):
            continue
        return soft, candidate
    return soft, soft


def open_file_limit() -> int | None:
    """The soft limit now in force (None: none, or unknown)."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups among them (httpx wraps the
    operating system's error; anyio groups one error per address)."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return seen


def is_descriptor_exhaustion(exc: BaseException) -> bool:
    """True when a failure comes from this process (or system) having no descriptor left: the balancer's own
    shortage, never the fault of the provider it was connecting to."""
    return any(isinstance(e, OSError) and e.errno in EXHAUSTION_ERRNOS for e in _chain(exc))


class DescriptorReserve:
    """Descriptors held back (duplicates of one open file) and given up one at a time right before another socket
    is created: the slot closed is the one the next socket() or accept() gets (the event loop runs nothing in
    between)."""

    def __init__(self, opener: Callable[[], int] | None = None):
        self._opener = opener or (lambda: os.open(os.devnull, os.O_RDONLY))
        self._base: int | None = None
        self._held: list[int] = []

    def __len__(self) -> int:
        return len(self._held)

    def take(self, count: int) -> bool:
        """Hold `count` more descriptors back; False (and nothing held) when the process has not that many."""
        taken: list[int] = []
        try:
            if self._base is None:
                self._base = self._opener()
            for _ in range(count):
                taken.append(os.dup(self._base))
        except OSError as exc:
            for fd in taken:
                os.close(fd)
            if exc.errno in EXHAUSTION_ERRNOS:
                return False
            raise
        self._held.extend(taken)
        return True

    def release(self, count: int = 1) -> int:
        """Give up to `count` held descriptors back to the process; how many were."""
        released = 0
        while self._held and released < count:
            os.close(self._held.pop())
            released += 1
        return released

    def trim(self, keep: int) -> None:
        """Hold no more than `keep`."""
        self.release(max(0, len(self._held) - keep))

    def close(self) -> None:
        self.release(len(self._held))
        if self._base is not None:
            os.close(self._base)
            self._base = None


class ExhaustionLogFilter(logging.Filter):
    """asyncio reports a listener's accept() that found no descriptor free as an unhandled error, with a
    traceback, up to a hundred times in one instant (then it waits a second and accepts again): mitmproxy logs
    each. This turns them into one line per `quiet` seconds."""

    def __init__(self, quiet: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.quiet = quiet
        self._clock = clock
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_descriptor_exhaustion(exc):
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.quiet:
            return False
        self._last = now
        limit = open_file_limit()
        record.msg = "out of open files%s: new connections wait until descriptors free up"
        record.args = (f" (limit {limit})" if limit is not None else "",)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# mitmproxy's logger for errors the event loop reports.
_LOOP_ERRORS_LOGGER = "mitmproxy.master"


class OpenFileLimit:
    """At start-up: the soft open-file limit goes up to the hard limit, and the log says what it is."""

    def __init__(self) -> None:
        self.limits: tuple[int, int] | None = None
        self._filter = ExhaustionLogFilter()

    def done(self) -> None:
        logging.getLogger(_LOOP_ERRORS_LOGGER).removeFilter(self._filter)

    def load(self, loader: object) -> None:
        logging.getLogger(_LOOP_ERRORS_LOGGER).addFilter(self._filter)
        self.limits = raise_open_file_limit()
        if self.limits is None:
            return
        before, after = self.limits
        streams = after // 4
        if after > before:
            log.info("open-file limit raised from %d to %d (about %d open streams)", before, after, streams)
        else:
            log.info("open-file limit %d (about %d open streams); the hard limit allows no more", after, streams)
        if sys.platform != "win32" and after < 4096:
            log.warning("open-file limit %d is low for a team; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                        after)
