"""One benchmark run: starts the processes, measures every row, returns the results as a dict (see report.py)."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import loadgen, stats
from .processes import REPO, Balancer, BareMitmdump, FakeProvider, free_port, provider, rss_mb

ANTHROPIC = "/v1/messages"
OPENAI = "/v1/chat/completions"


@dataclass(frozen=True)
class Plan:
    """How much of everything. `Plan.full()` is the published run, `Plan.quick()` one under a minute."""

    latency_requests: int = 3000  # per target and row (twice that at concurrency 32)
    paced_streams: int = 60  # streams of 50 events 1 ms apart, for the delay between events
    failover_requests: int = 600  # per failing kind (a dozen for the one that hangs past request_timeout)
    hang_requests: int = 12
    throughput_seconds: float = 8.0
    open_streams: int = 500
    memory_requests: int = 10000
    translation_seconds: float = 3.0
    rounds: int = 3  # targets take turns this many times per row, so drift in the machine's load hits all alike
    peer: str | None = None  # "litellm"
    name: str = "full"

    @classmethod
    def full(cls, peer: str | None = None) -> Plan:
        return cls(peer=peer)

    @classmethod
    def quick(cls, peer: str | None = None) -> Plan:
        return cls(latency_requests=300, paced_streams=10, failover_requests=100, hang_requests=4,
                   throughput_seconds=2.0, memory_requests=2000, translation_seconds=0.5, peer=peer,
                   name="quick")


class Progress:
    """One status line on stderr: step number, what runs, time so far (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.count = total, stream, 0
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def step(self, label: str) -> None:
        self.count += 1
        line = f"[{self.count:>2}/{self.total}] {time.monotonic() - self.started:5.0f} s  {label}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"done in {time.monotonic() - self.started:.0f} s\n")
        self.stream.flush()


@dataclass
class Target:
    name: str
    url: str
    path_prefix: str  # the fake's profile segment when the target forwards paths as they are
    pid: int | None = None
    speaks: str | None = None  # the API path this target always takes (a balancer speaks Anthropic to clients)

    def path(self, api: str) -> str:
        return self.path_prefix + (self.speaks or api)


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


class Bench:
    def __init__(self, plan: Plan, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.plan, self.say = plan, say
        self.rows: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.extra: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _latency_row(self, key: str, targets: list[Target], api: str, stream: bool, concurrency: int,
                     count: int) -> None:
        body = loadgen.request_body(stream)
        per_round = max(1, count // self.plan.rounds)
        values: dict[str, list[float]] = {t.name: [] for t in targets}
        errors = dict.fromkeys(values, 0)
        for _ in range(self.plan.rounds):
            for target in targets:
                timings, failed = asyncio.run(loadgen.measure(target.url, target.path(api), body, per_round,
                                                              concurrency))
                values[target.name] += _ms([t.first_event for t in timings])
                errors[target.name] += failed
        self.rows[key] = {name: stats.summary(v, errors[name]) for name, v in values.items()}
        self.samples[key] = values

    def _gap_row(self, key: str, targets: list[Target], count: int) -> None:
        body = loadgen.request_body(True)
        values: dict[str, list[float]] = {t.name: [] for t in targets}
        errors = dict.fromkeys(values, 0)
        for target in targets:
            asyncio.run(loadgen.measure(target.url, target.path(ANTHROPIC), body, 1, 1))  # warm-up
            timings, failed = asyncio.run(loadgen.measure(target.url, target.path(ANTHROPIC), body, count, 1))
            for timing in timings:
                values[target.name] += _ms(stats.gaps(timing.event_times))
            errors[target.name] += failed
        self.rows[key] = {name: stats.summary(v, errors[name]) for name, v in values.items()}

    def _throughput_row(self, key: str, targets: list[Target], concurrency: int) -> None:
        body = loadgen.request_body(False)
        row = {}
        for target in targets:
            rate, ok, errors = asyncio.run(loadgen.throughput(target.url, target.path(ANTHROPIC), body,
                                                              concurrency, self.plan.throughput_seconds))
            row[target.name] = {"rps": rate, "ok": ok, "errors": errors}
        self.rows[key] = row

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan = self.plan
        with ExitStack() as stack:
            self.say("starting the fake provider, bare mitmdump and the balancer")
            fake = stack.enter_context(FakeProvider())
            bare = stack.enter_context(BareMitmdump(fake.url))
            balancer = stack.enter_context(Balancer([provider("fake", fake.anthropic())]))
            targets = [Target("direct", fake.url, "/ok"), Target("mitmdump", bare.url, "/ok"),
                       Target("balancer", balancer.url, "", balancer.pid)]
            peer_version = None
            if plan.peer == "litellm":
                from .peer_litellm import LiteLLMProxy

                litellm = stack.enter_context(LiteLLMProxy(fake.anthropic(), progress=self.say))
                litellm.start()
                peer_version = litellm.version()
                targets.append(Target("litellm", litellm.url, "", litellm.pid))
            translating = stack.enter_context(Balancer([provider("openai", fake.openai(), "openai")]))
            openai_targets = [
                Target("direct", fake.url, "/ok"),
                Target("balancer", translating.url, "", speaks=ANTHROPIC),
            ]

            steps: list[tuple[str, Callable[[], None]]] = []
            add = lambda label, fn: steps.append((label, fn))  # noqa: E731
            add("warming up every path", lambda: self._warm_up([(t, ANTHROPIC) for t in targets]
                                                               + [(openai_targets[1], OPENAI)]))
            for concurrency in (1, 32):
                count = plan.latency_requests * (2 if concurrency > 1 else 1)
                add(f"(a) latency, concurrency {concurrency}",
                    lambda c=concurrency, n=count: self._latency_row(f"a.latency_c{c}", targets, ANTHROPIC,
                                                                     False, c, n))
            add("(b) time to first event", lambda: self._latency_row("b.ttfe", targets, ANTHROPIC, True, 1,
                                                                     plan.latency_requests))
            add("(b) delay between events", lambda: self._paced(fake))
            add("(b) OpenAI-type provider: latency and time to first event (translated)", lambda: (
                self._latency_row("a.latency_c1_openai", openai_targets, OPENAI, False, 1,
                                  plan.latency_requests),
                self._latency_row("b.ttfe_openai", openai_targets, OPENAI, True, 1, plan.latency_requests)))
            for label in ("refused", "overloaded", "hang"):
                add(f"(c) failover cost: first provider {label}", lambda k=label: self._failover(fake, k))
            for concurrency in (32, 128):
                add(f"(d) throughput, concurrency {concurrency}",
                    lambda c=concurrency: self._throughput_row(f"d.throughput_c{c}", targets, c))
            add(f"(e) memory with {plan.open_streams} open streams", lambda: self._open_streams(fake))
            add(f"(e) memory over {plan.memory_requests} requests", lambda: self._memory_series(balancer))
            add("(f) OpenAI->Anthropic stream translation alone", self._translation)

            progress = Progress(len(steps))
            for label, fn in steps:
                progress.step(label)
                fn()
            progress.done()
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": plan.name,
            "machine": machine(),
            "versions": versions(peer_version),
            "rows": self.rows,
            **self.extra,
            "samples": self.samples,
        }

    def _warm_up(self, paths: list[tuple[Target, str]]) -> None:
        for target, api in paths:
            for stream in (False, True):
                asyncio.run(loadgen.measure(target.url, target.path(api), loadgen.request_body(stream), 200, 4))

    def _paced(self, fake: FakeProvider) -> None:
        """Delay between events of streams whose provider sends one event a millisecond."""
        with ExitStack() as stack:
            bare = stack.enter_context(BareMitmdump(fake.url))
            balancer = stack.enter_context(Balancer([provider("paced", fake.anthropic("paced"))]))
            paced = [Target("direct", fake.url, "/paced"), Target("mitmdump", bare.url, "/paced"),
                     Target("balancer", balancer.url, "")]
            if self.plan.peer == "litellm":
                from .peer_litellm import LiteLLMProxy

                litellm = stack.enter_context(LiteLLMProxy(fake.anthropic("paced"), progress=self.say))
                litellm.start()
                paced.append(Target("litellm", litellm.url, ""))
            self._gap_row("b.event_gap", paced, self.plan.paced_streams)

    def _failover(self, fake: FakeProvider, label: str) -> None:
        first = {"refused": f"http://127.0.0.1:{free_port()}", "overloaded": fake.anthropic("overloaded"),
                 "hang": fake.anthropic("hang")}[label]
        count = self.plan.hang_requests if label == "hang" else self.plan.failover_requests
        healthy = [provider("healthy", fake.anthropic())]
        with Balancer([provider("first", first), *healthy], failure_cooldown=0, request_timeout=1) as chain, \
                Balancer([*healthy, provider("spare", fake.anthropic())], failure_cooldown=0,
                         request_timeout=1) as baseline:
            body = loadgen.request_body(True)
            for proc in (baseline, chain):  # a fresh process's first requests are slow: not what is measured
                asyncio.run(loadgen.measure(proc.url, ANTHROPIC, body, 1 if label == "hang" else 20, 1))
            key = f"c.failover_{label}"
            self._latency_row(key, [Target("healthy_first", baseline.url, ""), Target(label, chain.url, "")],
                              ANTHROPIC, True, 1, count)
        row = self.rows[key]
        row["cost_ms"] = {p: row[label][p] - row["healthy_first"][p] for p in ("p50", "p99")}

    def _open_streams(self, fake: FakeProvider) -> None:
        count = self.plan.open_streams
        row: dict[str, Any] = {}
        with Balancer([provider("slow", fake.anthropic("slow"))]) as balancer, BareMitmdump(fake.url) as bare:
            for name, proc, prefix in (("balancer", balancer, ""), ("mitmdump", bare, "/slow")):
                idle = rss_mb(proc.pid)
                loaded: list[float] = []

                async def measure(open_now: int, pid: int = proc.pid, loaded: list[float] = loaded) -> None:
                    loaded.append(rss_mb(pid))

                opened = asyncio.run(loadgen.hold_streams(proc.url, prefix + ANTHROPIC, count, measure))
                row[name] = {"idle_mb": idle, "open_streams": opened, "rss_mb": loaded[0]}
        self.rows["e.rss_open_streams"] = row

    def _memory_series(self, balancer: Balancer) -> None:
        body = loadgen.request_body(False)
        steps = 10
        per_step = max(1, self.plan.memory_requests // steps)
        series = [(0, rss_mb(balancer.pid))]
        errors = 0
        for i in range(1, steps + 1):
            _, failed = asyncio.run(loadgen.measure(balancer.url, ANTHROPIC, body, per_step, 32))
            errors += failed
            series.append((i * per_step, rss_mb(balancer.pid)))
        self.rows["e.rss_over_requests"] = {"series": series, "growth_mb": stats.growth_mb(series),
                                            "errors": errors}

    def _translation(self) -> None:
        sys.path.insert(0, str(REPO))
        from addon.openai_request import ToolNames
        from addon.openai_stream import StreamTranslator

        from .fake_provider import openai_events

        events = openai_events(200)
        produced = 0
        started = time.process_time()
        while time.process_time() - started < self.plan.translation_seconds:
            translator = StreamTranslator("claude-sonnet-4", ToolNames(), message_id="msg_bench")
            out = b"".join(translator.feed(e) for e in events) + translator.finish()
            produced += out.count(b"\n\n")
        self.rows["f.translation"] = {"events_per_cpu_s": produced / (time.process_time() - started)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "system": platform.platform(),
            "python": platform.python_version()}


def versions(peer: str | None) -> dict[str, str]:
    import mitmproxy.version

    found = {"mitmproxy": mitmproxy.version.VERSION}
    if peer:
        found["litellm"] = peer
    return found
