"""The shared-state rows of the benchmark (`scripts/bench --shared`): what settings.shared_state costs a request,
and how soon a cooldown one instance sets is in force at another.

- Time to first event through a balancer with sharing off and one with sharing on (a second instance sharing its
  server, both with round-robin routing and session affinity, so that every hook runs), taking turns.
- Propagation: instance A fails on a provider whose port refuses connections (cooldowns of a tenth of a second,
  so that it happens again and again) while this process polls instance B's GET /providers; a sample is the time
  from A recording the failure (`last_error_at`, wall clock) to B showing it. Polling adds its own round trip:
  the figures are upper bounds.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from contextlib import ExitStack
from typing import Any

import httpx

from . import loadgen, stats
from .kv_server import KeyValueServer
from .processes import Balancer, FakeProvider, free_port, provider

ANTHROPIC = "/v1/messages"
TTFE_ADDED_MAX = 0.05  # the target: time to first event with sharing on within 5% of sharing off


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


class SharedBench:
    def __init__(self, requests: int, propagation_samples: int, rounds: int = 10):
        self.requests, self.samples, self.rounds = requests, propagation_samples, rounds

    def run(self) -> dict[str, Any]:
        with ExitStack() as stack:
            fake = stack.enter_context(FakeProvider())
            kv = stack.enter_context(KeyValueServer())
            return {"ttfe": self._ttfe(stack, fake, kv), "propagation": self._propagation(stack, fake, kv)}

    def _ttfe(self, stack: ExitStack, fake: FakeProvider, kv: KeyValueServer) -> dict[str, Any]:
        providers = [provider("one", fake.anthropic()), provider("two", fake.anthropic())]
        routing = {"strategy": "round_robin", "affinity": "session"}
        off = stack.enter_context(Balancer(providers, **routing))
        sharing = {**routing, "shared_state": kv.url, "shared_state_namespace": "bench-ttfe"}
        on = stack.enter_context(Balancer(providers, **sharing))
        stack.enter_context(Balancer(providers, **sharing))  # a peer: what `on` shares is applied somewhere
        _wait_connected(on.url)
        body = loadgen.request_body(True)
        values: dict[str, list[float]] = {"sharing off": [], "sharing on": []}
        errors = dict.fromkeys(values, 0)
        targets = {"sharing off": off.url, "sharing on": on.url}
        for url in targets.values():  # warm-up: a fresh process's first requests are slow
            asyncio.run(loadgen.measure(url, ANTHROPIC, body, 100, 2))
        per_round = max(1, self.requests // self.rounds)
        for _ in range(self.rounds):
            for name, url in targets.items():
                timings, failed = asyncio.run(loadgen.measure(url, ANTHROPIC, body, per_round, 1))
                values[name] += _ms([t.first_event for t in timings])
                errors[name] += failed
        row: dict[str, Any] = {name: stats.summary(v, errors[name]) for name, v in values.items()}
        row["added"] = {p: row["sharing on"][p] / row["sharing off"][p] - 1 for p in ("p50", "p99")}
        return row

    def _propagation(self, stack: ExitStack, fake: FakeProvider, kv: KeyValueServer) -> dict[str, Any]:
        refused = f"http://127.0.0.1:{free_port()}"
        providers = [provider("refusing", refused), provider("ok", fake.anthropic())]
        settings = {"failure_cooldown": 0.1, "cooldown_growth": 1, "max_cooldown": 0.1, "shared_state": kv.url,
                    "shared_state_namespace": "bench-propagation"}
        a = stack.enter_context(Balancer(providers, **settings))
        b = stack.enter_context(Balancer(providers, **settings))
        for url in (a.url, b.url):
            _wait_connected(url)
        stop = threading.Event()

        def keep_failing() -> None:  # requests to A: each time the cooldown ends, A probes and fails again
            with httpx.Client(timeout=10) as client:
                body = loadgen.request_body(False)
                while not stop.is_set():
                    client.post(a.url + ANTHROPIC, content=body, headers={"content-type": "application/json"})
                    time.sleep(0.02)

        sender = threading.Thread(target=keep_failing, daemon=True)
        sender.start()
        delays: list[float] = []
        seen: float | None = None
        deadline = time.monotonic() + 30 + self.samples
        try:
            with httpx.Client(timeout=10) as client:
                while len(delays) < self.samples and time.monotonic() < deadline:
                    state = client.get(b.url + "/providers").json()
                    now = time.time()
                    at = next(p for p in state["providers"] if p["name"] == "refusing")["last_error_at"]
                    if at is not None and at != seen:
                        if seen is not None:  # the first may have been there before polling began
                            delays.append((now - at) * 1000)
                        seen = at
        finally:
            stop.set()
            sender.join(10)
        return {**stats.summary(delays), "max": max(delays) if delays else math.nan}


def _wait_connected(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/providers", timeout=5).json().get("shared_state", {}).get("connected"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not connect to the shared state server")


def render(results: dict[str, Any]) -> str:
    ttfe, propagation = results["ttfe"], results["propagation"]
    lines = ["shared state (settings.shared_state; Valkey on loopback), milliseconds",
             f"{'':34}{'p50':>9}{'p99':>9}{'n':>7}{'errors':>8}"]
    for name in ("sharing off", "sharing on"):
        row = ttfe[name]
        lines.append(f"  time to first event, {name:<12}{row['p50']:9.2f}{row['p99']:9.2f}{row['n']:7d}"
                     f"{row['errors']:8d}")
    added = ttfe["added"]
    verdict = "within" if added["p50"] <= TTFE_ADDED_MAX else "NOT within"
    lines.append(f"  sharing on adds {added['p50'] * 100:+.1f}% at p50, {added['p99'] * 100:+.1f}% at p99 "
                 f"({verdict} the 5% target at p50)")
    lines.append(f"  cooldown set on A, seen on B      {propagation['p50']:9.2f}{propagation['p99']:9.2f}"
                 f"{propagation['n']:7d}   max {propagation['max']:.2f} (target: 100)")
    return "\n".join(lines)
