"""Why two measurements of the balancer's time to first event disagreed (`scripts/bench --ttft-study`).

The same three targets (direct, bare mitmdump, the balancer) are measured behind fakes that write a stream in
different ways, by clients that read it in different ways, taking turns in rounds; each cell is the balancer's
added time as a multiple of bare mitmdump's (p50). Fakes: `burst` (every event in back-to-back writes, what the
bench's fake did), `ok` (one write per event, 1 ms before the first text, what a real provider does), `nagle` (as
`ok` with Nagle's algorithm left on, as a plain Python HTTP server does). Clients: the lean load generator timing
the first event (what the bench reported), the same timing the first text, and the official `anthropic` SDK timing
the first text delta.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

from . import loadgen, stats
from .processes import Balancer, BareMitmdump, FakeProvider, provider, start_together
from .turns import turns
from .verdict import added_ratio

FAKES = ("burst", "ok", "nagle")
CLIENTS = ("lean, first event", "lean, first text", "anthropic SDK, first text")


def sdk_first_text(base_url: str, count: int) -> list[float]:
    """Milliseconds to the first text delta for `count` streamed requests through the official SDK."""
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key="bench-client", max_retries=0)
    out = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            with client.messages.create(model="claude-sonnet-4", max_tokens=16, stream=True,
                                        messages=[{"role": "user", "content": "Hi"}]) as stream:
                for event in stream:
                    if event.type == "content_block_delta":
                        out.append((time.perf_counter() - started) * 1000)
                        break
    finally:
        client.close()
    return out


def measure(base_url: str, client: str, count: int) -> list[float]:
    if client.startswith("anthropic"):
        return sdk_first_text(base_url, count)
    timings, _ = asyncio.run(loadgen.measure(base_url, "/v1/messages", loadgen.request_body(True), count, 1))
    return [(t.first_event if client.endswith("event") else t.first_content) * 1000 for t in timings]


def run(count: int = 100, rounds: int = 5) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        fake = stack.enter_context(FakeProvider())
        bare, *balancers = start_together([lambda: BareMitmdump(fake.url),
                                           *[lambda p=p: Balancer([provider("fake", fake.anthropic(p))])
                                             for p in FAKES]])
        for process in (bare, *balancers):
            stack.enter_context(process)
        for profile, balancer in zip(FAKES, balancers, strict=True):
            urls = {"direct": f"{fake.url}/{profile}", "mitmdump": f"{bare.url}/{profile}", "balancer": balancer.url}
            for url in urls.values():
                measure(url, CLIENTS[0], 30)
                measure(url, CLIENTS[2], 10)
            for client in CLIENTS:
                per_round: dict[str, list[float]] = {name: [] for name in urls}
                pooled: dict[str, list[float]] = {name: [] for name in urls}
                for _, name in turns(list(urls), rounds):
                    got = measure(urls[name], client, count // (3 if client.startswith("anthropic") else 1))
                    per_round[name].append(stats.percentile(got, 50))
                    pooled[name] += got
                p50 = {name: stats.percentile(v, 50) for name, v in pooled.items()}
                results[f"{profile} / {client}"] = {
                    "p50": p50,
                    "ratio": added_ratio(p50["balancer"], p50["mitmdump"], p50["direct"]),
                    "rounds": [added_ratio(b, m, d) for b, m, d in zip(per_round["balancer"], per_round["mitmdump"],
                                                                       per_round["direct"], strict=True)]}
    return results


def render(results: dict[str, Any]) -> str:
    lines = [f"{'fake / client':<40}{'direct':>9}{'mitmdump':>10}{'balancer':>10}   balancer/mitmdump added (rounds)"]
    for key, row in results.items():
        p50 = row["p50"]
        rounds = [r for r in row["rounds"] if r == r]
        spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else "-"
        lines.append(f"{key:<40}{p50['direct']:>9.2f}{p50['mitmdump']:>10.2f}{p50['balancer']:>10.2f}   "
                     f"{row['ratio']:.2f}x ({spread})")
    return "\n".join(lines)
