"""CPU per event of a streamed answer through the balancer's stream pipeline alone: no sockets, no mitmproxy.

The provider's bytes go through what production uses: the adapter's `open_answer` (commit point, event checks,
model echo or translation, the guarded tail) and the usage watch the relay hand-off wires; the relay would write
what comes out. The stream has `--events` events (text deltas between the opening and the end), sent one event
per chunk, or packed into 16 KiB chunks (`anthropic-packed`).

Run: `.venv/bin/python scripts/bench_stream.py [--events 5000] [--rounds 15]`; prints the best CPU time per event
of each case (the least disturbed round: other work on the machine only ever adds time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from addon.anthropic_adapter import AnthropicAdapter  # noqa: E402
from addon.config import ProviderConfig  # noqa: E402
from addon.exchange import Exchange, ProviderAdapter  # noqa: E402
from addon.openai_adapter import OpenAIAdapter  # noqa: E402
from addon.relay_handoff import watched_answer  # noqa: E402
from benchkit.fake_provider import MODEL, anthropic_events, openai_events  # noqa: E402

REQUESTED = "claude-requested-model"  # differs from MODEL, so an Anthropic provider's model is echoed
PACKED_CHUNK = 16 * 1024


class _Response:
    """What `open_answer` reads of an httpx response: status, headers and the body's chunks."""

    def __init__(self, content_type: str, chunks: list[bytes]):
        self.status_code = 200
        self.headers = httpx.Headers({"content-type": content_type})
        self._chunks = chunks

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _exchange() -> Exchange:
    body = {"model": REQUESTED, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[],
                    body=json.dumps(body).encode(), parsed=body, requested_model=REQUESTED, stream=True,
                    idle_timeout=300, on_committed_failure=lambda *failure: None)


def _packed(events: list[bytes]) -> list[bytes]:
    stream = b"".join(events)
    return [stream[i : i + PACKED_CHUNK] for i in range(0, len(stream), PACKED_CHUNK)]


async def _one_stream(adapter: ProviderAdapter, provider: ProviderConfig, chunks: list[bytes]) -> tuple[bytes, Any]:
    call = adapter.prepare(provider, _exchange())
    response = _Response("text/event-stream", chunks)
    answer = await call.open_answer(cast(httpx.Response, response), time.monotonic() + 60)
    watch, body = watched_answer(answer)
    out = [chunk async for chunk in body]
    watch.finish()
    return b"".join(out), watch


async def _best_of(rounds: int, adapter: ProviderAdapter, provider: ProviderConfig, chunks: list[bytes]) -> float:
    """The least CPU time one stream took (other work on the machine only ever adds time)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        await _one_stream(adapter, provider, chunks)
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    deltas = args.events - 6  # message_start, content_block_start and -stop, message_delta, message_stop, ping
    anthropic = ProviderConfig(name="a", base_url="http://127.0.0.1:9", auth_value="k", big_model=MODEL)
    openai = ProviderConfig(name="o", type="openai", base_url="http://127.0.0.1:9/v1", auth_value="k",
                            big_model=MODEL)
    anthropic_stream = anthropic_events(deltas)
    anthropic_stream.insert(2, b'event: ping\ndata: {"type": "ping"}\n\n')
    cases: dict[str, tuple[ProviderAdapter, ProviderConfig, list[bytes]]] = {
        "anthropic": (AnthropicAdapter(), anthropic, anthropic_stream),
        "anthropic-packed": (AnthropicAdapter(), anthropic, _packed(anthropic_stream)),
        "openai": (OpenAIAdapter(), openai, openai_events(deltas)),
    }
    for name, (adapter, provider, chunks) in cases.items():
        out, watch = asyncio.run(_one_stream(adapter, provider, chunks))  # also a check that it did its work
        assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n'), out[-200:]
        assert REQUESTED.encode() in out[:1000] and watch.stop_reason == "end_turn", name
        assert watch.usage.get("output_tokens") == deltas, (name, watch.usage)
        events = out.count(b"\n\n")
        best = asyncio.run(_best_of(args.rounds, adapter, provider, chunks))
        print(f"{name:18} {events} events  {best * 1e6 / events:6.2f} µs CPU per event  ({best * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
