"""Descriptors for the relay hop, held back per API request until mitmproxy connects to the relay.

mitmproxy answers a failed connection to the relay with its own HTML 502, and no addon can change that answer.
So each API request first holds back the two descriptors its hop will need (mitmproxy's end and the relay's);
one is given up in `server_connect`, right before mitmproxy creates that socket, the other when the relay's
accept finds no free descriptor. A request that cannot hold them is answered 503 in Anthropic's shape before
any provider is asked. Registered before the gateway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from .open_files import DescriptorReserve, open_file_limit
from .responses import error_response

log = logging.getLogger("balancer.open_files")

# What one relayed answer needs beyond the client's connection and the provider's: both ends of the relay hop.
HOP_DESCRIPTORS = 2
# A flow whose end was never seen stops holding descriptors back after this long (a safety net).
HELD_FOR_AT_MOST = 600.0
_LOOPBACK = ("127.0.0.1", "localhost")


def exhaustion_message(limit: int | None) -> str:
    figure = f" (limit {limit})" if limit is not None else ""
    return f"the balancer has run out of open files{figure}; try again shortly"


def exhausted_response(limit: int | None) -> http.Response:
    return error_response(503, "overloaded_error", exhaustion_message(limit), **{"retry-after": "1"})


class RelayHeadroom:
    def __init__(self, reserve: DescriptorReserve, relay_port: Callable[[], int | None]):
        self.reserve = reserve
        self._relay_port = relay_port
        self._holding: dict[str, float] = {}  # flow id -> when its descriptors were taken

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not flow.request.path.startswith("/v1/"):
            return
        self._expire()
        if self.reserve.take(HOP_DESCRIPTORS):
            self._holding[flow.id] = time.monotonic()
            return
        limit = open_file_limit()
        log.warning("request refused: %s", exhaustion_message(limit))
        flow.response = exhausted_response(limit)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Synchronous on purpose: mitmproxy creates the socket right after this hook returns, in the same turn of
        # the event loop, so the slot given up here is the one that socket gets.
        address = data.server.address
        port = self._relay_port()
        if address is not None and port is not None and address[1] == port and address[0] in _LOOPBACK:
            self.reserve.release(1)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._done(flow)  # the hop is up: what it did not use goes back

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def done(self) -> None:
        self._holding.clear()
        self.reserve.close()

    @property
    def holding(self) -> int:
        """Requests holding descriptors back right now."""
        return len(self._holding)

    def _done(self, flow: http.HTTPFlow) -> None:
        if self._holding.pop(flow.id, None) is not None:
            self.reserve.trim(HOP_DESCRIPTORS * len(self._holding))

    def _expire(self) -> None:
        cutoff = time.monotonic() - HELD_FOR_AT_MOST
        stale = [flow_id for flow_id, since in self._holding.items() if since < cutoff]
        for flow_id in stale:
            del self._holding[flow_id]
        if stale:
            self.reserve.trim(HOP_DESCRIPTORS * len(self._holding))
