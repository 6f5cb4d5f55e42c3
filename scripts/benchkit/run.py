"""One benchmark run: starts the processes, measures every row with the targets taking turns in rounds, returns
the results as a dict (see report.py)."""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import loadgen, procstat, stats
from .bodies import SIZES, body
from .processes import REPO, Balancer, BareMitmdump, FakeProvider, free_port, provider, rss_mb, start_together
from .targets import ANTHROPIC, OPENAI, Balancers, Direct, Fixed, Peer, Route, Target
from .turns import turns

PEERS = ("litellm", "ccr")


@dataclass(frozen=True)
class Plan:
    """How much of everything. `Plan.full()` is the published run, `Plan.quick()` one well under 90 s."""

    # per target and row, over all rounds (a peer takes up to half a second a request at 1 MB)
    requests: dict[str, int] = field(default_factory=lambda: {"2 KB": 600, "100 KB": 240, "1 MB": 50})
    c32_requests: int = 1600
    paced_streams: int = 60  # streams of 50 events 1 ms apart, for the delay between events
    failover_requests: int = 600  # per failing kind (a dozen for the one that hangs past request_timeout)
    hang_requests: int = 12  # 0: no row for the provider that hangs
    throughput_seconds: float = 10.0  # per target, split over the rounds
    open_streams: int = 1000
    stream_timeout: float = 60.0  # seconds the streams have to open
    warm_up: int = 100  # small requests per target and kind before the rows
    stream_rounds: int = 2  # turns at opening `open_streams` streams at once
    stall_streams: int = 50  # streams open while big requests go through (issue 17, point 2)
    stall_requests: int = 5
    stall_mb: int = 10
    stall_rounds: int = 3  # 0: no such row
    memory_requests: int = 10000
    translation_seconds: float = 3.0
    rounds: int = 5  # targets take turns this many times per row, so drift in the machine's load hits all alike
    peers: tuple[str, ...] = ()
    name: str = "full"

    @classmethod
    def full(cls, peers: tuple[str, ...] = ()) -> Plan:
        return cls(peers=peers)

    @classmethod
    def quick(cls, peers: tuple[str, ...] = ()) -> Plan:
        return cls(requests={"2 KB": 120, "100 KB": 45, "1 MB": 12}, c32_requests=240, paced_streams=6,
                   failover_requests=45, hang_requests=0, throughput_seconds=1.5, open_streams=300,
                   stream_timeout=15, stream_rounds=1, stall_rounds=0, memory_requests=500,
                   translation_seconds=0.3, rounds=3, warm_up=20, peers=peers, name="quick")


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

    def done(self) -> float:
        took = time.monotonic() - self.started
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"done in {took:.0f} s\n")
        self.stream.flush()
        return took


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def raise_open_file_limit() -> None:
    """Up to the hard limit, for this process and the targets it starts: a thousand streams need both ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Bench:
    def __init__(self, plan: Plan, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.plan, self.say = plan, say
        self.rows: dict[str, Any] = {}
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.peer_versions: dict[str, str] = {}

    # -- rows --------------------------------------------------------------------------------------------------
    def latency_row(self, key: str, targets: list[Target], kind: str, stream: bool, size: int, count: int,
                    concurrency: int = 1, profile: str = "ok") -> None:
        """p50/p99 of latency (or of time to first content when `stream`), and CPU ms per request, per target;
        also each round's p50 and CPU, for the noise margin."""
        per_turn = max(1, count // self.plan.rounds)
        rounds = self.plan.rounds
        values: dict[str, list[float]] = {t.name: [] for t in targets}
        round_p50 = {t.name: [float("nan")] * rounds for t in targets}
        round_cpu = {t.name: [float("nan")] * rounds for t in targets}
        cpu_total = dict.fromkeys(values, 0.0)
        errors = dict.fromkeys(values, 0)
        for r, target in turns(targets, rounds):
            route = target.route(profile, kind)
            data = body(size, stream, route.model)
            pids = route.pids()
            before = procstat.cpu_seconds(pids)
            timings, failed = asyncio.run(loadgen.measure(route.url, route.path, data, per_turn, concurrency))
            used = procstat.cpu_seconds(pids) - before
            got = _ms([t.first_content if stream else t.total for t in timings])
            values[target.name] += got
            errors[target.name] += failed
            cpu_total[target.name] += used
            round_p50[target.name][r] = stats.percentile(got, 50)
            round_cpu[target.name][r] = used * 1000 / len(timings) if timings else float("nan")
        row: dict[str, Any] = {}
        for name, got in values.items():
            row[name] = {**stats.summary(got, errors[name]), "rounds": round_p50[name],
                         "cpu_ms": cpu_total[name] * 1000 / len(got) if got else float("nan"),
                         "cpu_rounds": round_cpu[name]}
        self.rows[key] = row
        self.samples[key] = values

    def gap_row(self, key: str, targets: list[Target]) -> None:
        """Delays between events of streams whose provider sends one event a millisecond."""
        rounds = self.plan.rounds
        per_turn = max(1, self.plan.paced_streams // rounds)
        values: dict[str, list[float]] = {t.name: [] for t in targets}
        round_p99 = {t.name: [float("nan")] * rounds for t in targets}
        errors = dict.fromkeys(values, 0)
        for r, target in turns(targets, rounds):
            route = target.route("paced", ANTHROPIC)
            timings, failed = asyncio.run(loadgen.measure(route.url, route.path, body(SIZES["2 KB"], True,
                                                                                          route.model), per_turn, 1))
            got = [g for t in timings for g in _ms(stats.gaps(t.event_times))]
            values[target.name] += got
            errors[target.name] += failed
            round_p99[target.name][r] = stats.percentile(got, 99)
        self.rows[key] = {name: {**stats.summary(v, errors[name]), "rounds_p99": round_p99[name]}
                          for name, v in values.items()}

    def throughput_row(self, key: str, targets: list[Target], concurrency: int) -> None:
        rounds = self.plan.rounds
        seconds = self.plan.throughput_seconds / rounds
        ok = dict.fromkeys((t.name for t in targets), 0)
        errors = dict.fromkeys(ok, 0)
        took = dict.fromkeys(ok, 0.0)
        round_rps = {t.name: [float("nan")] * rounds for t in targets}
        for r, target in turns(targets, rounds):
            route = target.route("ok", ANTHROPIC)
            started = time.perf_counter()
            rate, done, failed = asyncio.run(loadgen.throughput(route.url, route.path, body(SIZES["2 KB"], False,
                                                                                            route.model),
                                                                concurrency, seconds))
            took[target.name] += time.perf_counter() - started
            ok[target.name] += done
            errors[target.name] += failed
            round_rps[target.name][r] = rate
        self.rows[key] = {name: {"rps": ok[name] / took[name] if took[name] else 0.0, "ok": ok[name],
                                 "errors": errors[name], "rounds": round_rps[name]} for name in ok}

    def stall_row(self, key: str, targets: list[Target]) -> None:
        """What back-to-back big requests add to the worst gap between events of other open streams: each turn
        runs `stall_streams` streams of events 10 ms apart alone, then again with `stall_requests` requests of
        `stall_mb` MB sent one after the other meanwhile; the figure is the p50 over streams of the worst gap."""
        rounds = self.plan.stall_rounds
        big = body(self.plan.stall_mb * 1_000_000, False)
        row: dict[str, Any] = {t.name: {"idle": [], "loaded": [], "errors": 0} for t in targets}
        for _, target in turns(targets, rounds):
            route = target.route("ticking", ANTHROPIC)
            big_route = target.route("ok", ANTHROPIC)
            stream_body = body(SIZES["2 KB"], True, route.model)

            async def big_requests(big_route: Route = big_route, entry: dict[str, Any] = row[target.name]) -> None:
                _, failed = await loadgen.measure(big_route.url, big_route.path, big, self.plan.stall_requests, 1)
                entry["errors"] += failed

            for phase, meanwhile in (("idle", None), ("loaded", big_requests)):
                gaps, failed = asyncio.run(loadgen.worst_gaps(route.url, route.path, stream_body,
                                                              self.plan.stall_streams, meanwhile))
                row[target.name][phase].append(stats.percentile(_ms(gaps), 50))
                row[target.name]["errors"] += failed
        for entry in row.values():
            entry["added_rounds"] = [b - a for a, b in zip(entry["idle"], entry["loaded"], strict=True)]
            entry["added_ms"] = stats.percentile(entry["added_rounds"], 50)
            entry["idle_ms"] = stats.percentile(entry["idle"], 50)
            entry["loaded_ms"] = stats.percentile(entry["loaded"], 50)
        self.rows[key] = row

    def open_streams_row(self, key: str, targets: list[Target]) -> None:
        """Time to open `open_streams` streams at once, how many opened, descriptors per stream, memory."""
        count = self.plan.open_streams
        row: dict[str, Any] = {}
        for _, target in turns(targets, self.plan.stream_rounds):
            route = target.route("slow", ANTHROPIC)
            pids = route.pids()
            idle_fds, idle_mb = procstat.open_fds(pids), procstat.rss_mb(pids)
            loaded: dict[str, float] = {}

            async def measure(open_now: int, pids: list[int] = pids, loaded: dict[str, float] = loaded) -> None:
                loaded.update(fds=procstat.open_fds(pids), mb=procstat.rss_mb(pids))

            opened, seconds = asyncio.run(loadgen.hold_streams(route.url, route.path, count, measure,
                                                               timeout=self.plan.stream_timeout,
                                                               body=body(SIZES["2 KB"], True, route.model)))
            turn = {"opened": opened, "seconds": seconds, "idle_mb": idle_mb, "rss_mb": loaded["mb"],
                    "fds_per_stream": (loaded["fds"] - idle_fds) / opened if opened else float("nan")}
            row.setdefault(target.name, {"streams": count, "turns": []})["turns"].append(turn)
            time.sleep(1)  # let the target close the streams before the next one is measured
        for entry in row.values():
            done = entry["turns"]
            entry.update(opened=min(t["opened"] for t in done),
                         seconds=stats.percentile([t["seconds"] for t in done], 50),
                         fds_per_stream=stats.percentile([t["fds_per_stream"] for t in done], 50),
                         rss_mb=max(t["rss_mb"] for t in done), idle_mb=done[0]["idle_mb"])
        self.rows[key] = row

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan = self.plan
        raise_open_file_limit()
        load_at_start = list(os.getloadavg())
        with ExitStack() as stack:
            self.say("starting the fake provider, bare mitmdump and the balancer")
            fake = stack.enter_context(FakeProvider())
            direct = Direct("direct", fake)
            bare = Direct("mitmdump", stack.enter_context(BareMitmdump(fake.url)))
            balancer = Balancers(stack, fake)
            balancer.start([("ok", ANTHROPIC), ("ok", OPENAI), ("paced", ANTHROPIC), ("slow", ANTHROPIC)])
            peers = [self._start_peer(name, fake, stack) for name in plan.peers]
            anthropic = [direct, bare, balancer, *peers]
            openai = [direct, balancer, *peers]
            proxies = [bare, balancer, *peers]

            steps: list[tuple[str, Callable[[], None]]] = []
            add = lambda label, fn: steps.append((label, fn))  # noqa: E731
            add("warming up every path", lambda: self._warm_up(anthropic, openai))
            for size_name, size in SIZES.items():
                n = plan.requests[size_name]
                add(f"latency, {size_name} bodies", lambda s=size, n=n, k=size_name: self.latency_row(
                    f"latency.{k}", anthropic, ANTHROPIC, False, s, n))
                add(f"time to first text, {size_name} bodies", lambda s=size, n=n, k=size_name: self.latency_row(
                    f"ttft.{k}", anthropic, ANTHROPIC, True, s, n))
            for size_name, size in SIZES.items():
                n = plan.requests[size_name]
                add(f"OpenAI-type provider (translated), {size_name} bodies",
                    lambda s=size, n=n, k=size_name: (
                        self.latency_row(f"latency_openai.{k}", openai, OPENAI, False, s, n),
                        self.latency_row(f"ttft_openai.{k}", openai, OPENAI, True, s, n)))
            add("latency, concurrency 32", lambda: self.latency_row("latency_c32", anthropic, ANTHROPIC, False,
                                                                    SIZES["2 KB"], plan.c32_requests, 32))
            add("delay between events", lambda: self.gap_row("event_gap", anthropic))
            add("throughput, concurrency 32", lambda: self.throughput_row("throughput_c32", proxies, 32))
            failing = ("refused", "overloaded", "hang")[: 3 if plan.hang_requests else 2]
            add(f"failover cost: first provider {', '.join(failing)}", lambda: self._failover(fake, failing))
            if plan.stall_rounds:
                add(f"{plan.stall_mb} MB requests beside {plan.stall_streams} open streams",
                    lambda: self.stall_row("stall", [bare, balancer]))
            add(f"{plan.open_streams} streams open at once", lambda: self.open_streams_row("open_streams", proxies))
            add(f"memory over {plan.memory_requests} requests", lambda: self._memory_series(balancer))
            add("OpenAI->Anthropic stream translation alone", self._translation)

            progress = Progress(len(steps))
            for label, fn in steps:
                progress.step(label)
                fn()
            seconds = progress.done()
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": plan.name,
            "seconds": seconds,
            "load": {"start": load_at_start, "end": list(os.getloadavg())},
            "machine": machine(),
            "versions": versions(self.peer_versions),
            "rows": self.rows,
            "samples": self.samples,
        }

    def _start_peer(self, name: str, fake: FakeProvider, stack: ExitStack) -> Target:
        from .targets import peer_routes

        if name == "litellm":
            from .peer_litellm import LiteLLMProxy

            litellm = stack.enter_context(LiteLLMProxy(peer_routes(fake), progress=self.say))
            litellm.start()
            self.peer_versions["litellm"] = litellm.version()
            return Peer("litellm", litellm.url, litellm.root_pid, lambda route: route)
        from . import peer_ccr

        router = stack.enter_context(peer_ccr.RouterProxy(peer_routes(fake), progress=self.say))
        self.say(f"starting claude-code-router {peer_ccr.pinned_version()}")
        router.start()
        self.peer_versions["ccr"] = peer_ccr.pinned_version()
        return Peer("ccr", router.url, router.pid, peer_ccr.model_for)

    def _warm_up(self, anthropic: list[Target], openai: list[Target]) -> None:
        for targets, kind in ((anthropic, ANTHROPIC), (openai, OPENAI)):
            for target in targets:
                for stream in (False, True):
                    route = target.route("ok", kind)
                    asyncio.run(loadgen.measure(route.url, route.path, body(SIZES["2 KB"], stream, route.model),
                                                self.plan.warm_up, 2))
                    asyncio.run(loadgen.measure(route.url, route.path, body(SIZES["100 KB"], stream, route.model),
                                                2, 1))

    def _failover(self, fake: FakeProvider, labels: tuple[str, ...]) -> None:
        """Time to first text through a balancer whose first provider fails, against one whose first provider is
        healthy; the cost is the difference."""
        firsts = {"refused": f"http://127.0.0.1:{free_port()}", "overloaded": fake.anthropic("overloaded"),
                  "hang": fake.anthropic("hang")}
        healthy = [provider("healthy", fake.anthropic())]
        settings = {"failure_cooldown": 0, "request_timeout": 1}
        baseline, *chains = start_together([
            lambda: Balancer([*healthy, provider("spare", fake.anthropic())], **settings),
            *[lambda k=k: Balancer([provider("first", firsts[k]), *healthy], **settings) for k in labels]])
        with ExitStack() as stack:
            for process in (baseline, *chains):
                stack.enter_context(process)
            data = body(SIZES["2 KB"], True)
            for label, chain in zip(labels, chains, strict=True):
                for proc in (baseline, chain):  # a fresh process's first requests are slow: not what is measured
                    asyncio.run(loadgen.measure(proc.url, "/v1/messages", data, 1 if label == "hang" else 20, 1))
                count = self.plan.hang_requests if label == "hang" else self.plan.failover_requests
                key = f"failover_{label}"
                self.latency_row(key, [Fixed("healthy_first", baseline), Fixed(label, chain)], ANTHROPIC, True,
                                 SIZES["2 KB"], count)
                row = self.rows[key]
                row["cost_ms"] = {p: row[label][p] - row["healthy_first"][p] for p in ("p50", "p99")}

    def _memory_series(self, balancers: Balancers) -> None:
        balancer = balancers.process("ok", ANTHROPIC)
        data = body(SIZES["2 KB"], False)
        steps = 10
        per_step = max(1, self.plan.memory_requests // steps)
        series = [(0, rss_mb(balancer.pid))]
        errors = 0
        for i in range(1, steps + 1):
            _, failed = asyncio.run(loadgen.measure(balancer.url, "/v1/messages", data, per_step, 32))
            errors += failed
            series.append((i * per_step, rss_mb(balancer.pid)))
        self.rows["rss_over_requests"] = {"series": series, "growth_mb": stats.growth_mb(series), "errors": errors}

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
        self.rows["translation"] = {"events_per_cpu_s": produced / (time.process_time() - started)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "system": platform.platform(),
            "python": platform.python_version()}


def versions(peers: dict[str, str]) -> dict[str, str]:
    import mitmproxy.version

    return {"mitmproxy": mitmproxy.version.VERSION, **peers}
