"""Listen backlogs sized for bursts: a team's clients may open hundreds of streams in the same instant.

asyncio listens with a backlog of 100, mitmproxy's listeners included; connections beyond it are dropped by the
kernel and the client only retries its connect a second or more later. The relay's listener is created with the
larger backlog; mitmproxy's are widened once they run (listen() again on a listening socket sets its backlog),
and again whenever mitmproxy restarts them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mitmproxy import ctx

log = logging.getLogger("balancer.listen")

# Asked for; the kernel caps it at net.core.somaxconn (Linux) or kern.ipc.somaxconn (macOS).
WANTED_BACKLOG = 4096
_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def effective_backlog(wanted: int, kernel_cap: int | None) -> int:
    """The backlog a listener really gets: what is asked for, capped by the kernel's limit when known."""
    return wanted if kernel_cap is None or kernel_cap <= 0 else min(wanted, kernel_cap)


def kernel_cap() -> int | None:
    try:
        return int(_SOMAXCONN.read_text().strip())
    except (OSError, ValueError):
        return None


def listen_backlog() -> int:
    return effective_backlog(WANTED_BACKLOG, kernel_cap())


def widen(sockets: Iterable[Any], backlog: int) -> int:
    """listen() again with `backlog` on each listening TCP socket, through a duplicate of its descriptor (asyncio
    hands out wrappers that cannot listen themselves); how many were widened."""
    widened = 0
    for sock in sockets:
        if getattr(sock, "type", None) != socket.SOCK_STREAM:
            continue
        try:
            with sock.dup() as copy:
                copy.listen(backlog)
        except OSError:
            continue
        widened += 1
    return widened


def mitmproxy_listeners() -> list[Any]:
    """The sockets of mitmproxy's running TCP listeners (none if mitmproxy's insides ever differ)."""
    found: list[Any] = []
    for instance in getattr(ctx.master.addons.get("proxyserver"), "servers", None) or []:
        for server in getattr(instance, "_servers", []):
            found.extend(getattr(server, "sockets", None) or [])
    return found


class ListenBacklog:
    def __init__(self) -> None:
        self.backlog = listen_backlog()

    def running(self) -> None:
        self._widen()
        servers = getattr(ctx.master.addons.get("proxyserver"), "servers", None)
        changed = getattr(servers, "changed", None)
        if changed is not None:
            changed.connect(self._widen)  # mitmproxy restarted a listener (new mode or port)

    def _widen(self) -> None:
        if count := widen(mitmproxy_listeners(), self.backlog):
            log.info("listen backlog %d on %d of mitmproxy's listening sockets", self.backlog, count)
