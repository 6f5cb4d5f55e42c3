"""Measuring instrument, not product code (`scripts/bench --floor`): the least an addon that owns provider I/O can
do with a standard HTTP client, httpx on the balancer's asyncio network backend (addon/network_backend.py). A
mitmdump script.

The request hook sends the body as the client sent it and reads the answer's head. A JSON answer is read whole
and set on the flow. A stream is held until its first `content_block_delta` (the balancer holds it that long, so
that it can still fail over), then handed to the loopback relay (floor_relay.py) with the rest. No failover, no
parsing of the body, no headers kept.

    mitmdump -s scripts/benchkit/floor_httpx.py --mode reverse:http://127.0.0.1:9 --set floor_upstream=http://127.0.0.1:PORT/ok
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from floor_relay import Relay, error_answer, stream_relayed
from mitmproxy import ctx, http

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from addon.network_backend import AsyncioBackend

MARKER = b"content_block_delta"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "floor"}


def new_client() -> httpx.AsyncClient:
    """A pooled client like the balancer's: keep-alive connections, no environment, asyncio's streams below."""
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0), trust_env=False, follow_redirects=False,
                               limits=httpx.Limits(max_connections=None, max_keepalive_connections=200))
    client._transport._pool._network_backend = AsyncioBackend()  # type: ignore[attr-defined]  # httpx has no parameter
    return client


class HttpxFloor:
    def __init__(self) -> None:
        self.relay = Relay()
        self.client = new_client()
        self.upstream = ""

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("floor_upstream", str, "", "The provider's base URL, e.g. http://127.0.0.1:PORT/ok")

    def configure(self, updated: set[str]) -> None:
        if "floor_upstream" in updated:
            self.upstream = ctx.options.floor_upstream.rstrip("/")

    async def running(self) -> None:
        await self.relay.start()

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._exchange(flow)
        except httpx.HTTPError as exc:
            flow.response = error_answer(exc)

    async def _exchange(self, flow: http.HTTPFlow) -> None:
        request = self.client.build_request("POST", self.upstream + flow.request.path, headers=HEADERS,
                                            content=flow.request.raw_content or b"")
        response = await self.client.send(request, stream=True)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            data = await response.aread()
            flow.response = http.Response.make(response.status_code, data, {"content-type": "application/json"})
            return
        pieces = response.aiter_raw()
        held = b""
        async for piece in pieces:
            held += piece
            if MARKER in held:
                break
        self.relay.hand_off(flow, response.status_code, held, self._rest(response, pieces))

    @staticmethod
    async def _rest(response: httpx.Response, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for piece in pieces:
                yield piece
        finally:
            await response.aclose()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        stream_relayed(flow)


addons = [HttpxFloor()]
