"""Descriptors for the relay hop, held back from the moment a provider's answer is parked until mitmproxy has
connected to the relay.

mitmproxy answers a failed connection to the relay with its own HTML 502, and no addon can change that answer.
So once the gateway has parked an answer, the two descriptors its hop will need (mitmproxy's end and the
relay's) are taken at once; one is given up in `server_connect`, right before mitmproxy creates that socket, the
other when the relay's accept finds no descriptor free. An answer whose hop cannot have them is closed and the
client gets 503 in Anthropic's shape. They are taken only once the provider has answered, not when a request
arrives: taken up front, a burst of requests would hold every descriptor back and leave none for connecting to
the providers, so that no request at all got through. Registered after the gateway.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from .open_files import open_file_limit
from .relay import DEFERRED, PATH_PREFIX, RELAYED, RelayServer
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
    def __init__(self, relay: RelayServer):
        self.relay = relay
        self.reserve = relay.reserve
        self._holding: dict[str, float] = {}  # flow id -> when its descriptors were taken

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or not flow.live or not flow.metadata.get(RELAYED):
            return
        if flow.metadata.get(DEFERRED):  # its hop to the relay was opened when the request began
            return
        self._expire()
        if self.reserve.take(HOP_DESCRIPTORS):
            self._holding[flow.id] = time.monotonic()
            return
        path = flow.request.path
        if path.startswith(PATH_PREFIX):
            await self.relay.discard(path[len(PATH_PREFIX):])  # the provider stops generating for nobody
        message = exhaustion_message(open_file_limit())
        log.warning("answer dropped: %s", message)
        flow.response = exhausted_response(open_file_limit())
        flow.comment = f"not relayed: {message}"

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Synchronous on purpose: mitmproxy creates the socket right after this hook returns, in the same turn of
        # the event loop, so the slot given up here is the one that socket gets.
        address = data.server.address
        port = self.relay.port
        if address is not None and port is not None and address[1] == port and address[0] in _LOOPBACK:
            self.reserve.release(1)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._done(flow)  # the hop is up: what it did not use goes back

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    @property
    def holding(self) -> int:
        """Answers holding descriptors back for their hop right now."""
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
