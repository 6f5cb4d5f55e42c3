"""Benchmark: what the balancer adds, side by side with talking to the provider directly and with bare mitmdump.

Run through `scripts/bench` (it sets up .venv). Everything runs on 127.0.0.1: a fast fake provider in this
process's own event loop thread, mitmdump subprocesses, and httpx clients.

Rows: (a) added latency of a small non-streamed request at concurrency 1 and 32; (b) time to the first event of
a streamed answer, and delay between its events; (c) failover cost with a first provider that refuses, answers
529 or hangs past request_timeout; (d) throughput at concurrency 32 and 128; (e) the balancer's memory with many
streams open and after many requests; (f) the OpenAI->Anthropic stream translation alone, events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MITMDUMP = Path(sys.executable).parent / "mitmdump"

BODY = {"model": "claude-sonnet-4", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
MESSAGE = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
    "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}).encode()


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(pieces: int) -> list[bytes]:
    start = {"type": "message_start", "message": {**json.loads(MESSAGE), "content": [], "stop_reason": None}}
    events = [sse("message_start", start),
              sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})]
    events += [sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": f"word{i} "}})
               for i in range(pieces)]
    events += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                     "usage": {"output_tokens": pieces}}),
               sse("message_stop", {"type": "message_stop"})]
    return events


# -- a fast fake provider ------------------------------------------------------------------------------------
class FastFake:
    """A minimal keep-alive HTTP/1.1 server on its own event loop thread. Behaviour: "ok" (JSON or SSE as the
    request asks), "529", or "hang". Streams send `pieces` deltas `gap` seconds apart."""

    def __init__(self, behaviour: str = "ok", pieces: int = 20, gap: float = 0.0):
        self.behaviour, self.pieces, self.gap = behaviour, pieces, gap
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                if self.behaviour == "hang":
                    await asyncio.sleep(3600)
                if self.behaviour == "529":
                    payload = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
                    writer.write(b"HTTP/1.1 529 Overloaded\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%b" % (len(payload), payload))
                elif b'"stream": true' in body or b'"stream":true' in body:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    for event in stream_events(self.pieces):
                        writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                        await writer.drain()
                        if self.gap:
                            await asyncio.sleep(self.gap)
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%b" % (len(MESSAGE), MESSAGE))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- processes under test ------------------------------------------------------------------------------------
class Mitm:
    """mitmdump as a subprocess: bare (reverse proxy only) or with the balancer addon."""

    def __init__(self, target: str, providers: list[dict[str, Any]] | None = None, **settings: Any):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        args = [str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", "0", "--set", "flow_detail=0",
                "--set", "connection_strategy=lazy"]
        if providers is None:
            args += ["--mode", f"reverse:{target}"]
        else:
            path = self.dir / "providers.yaml"
            path.write_text(yaml.safe_dump({"providers": providers, "settings": {"log_level": "WARNING", **settings}}))
            args += ["-s", str(REPO / "addon" / "balancer.py"), "--mode", "reverse:https://api.anthropic.com",
                     "--set", f"providers={path}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.port: int | None = None
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening at" in line:
                self.port = int(line.rsplit(":", 1)[1].strip().rstrip("."))
                break
            if time.monotonic() > deadline:
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("mitmdump did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def provider(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "type": "anthropic", "base_url": url, "auth_value": f"bench-key-{name}"}


# -- measurements --------------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


async def latencies(url: str, count: int, concurrency: int, stream: bool = False) -> list[float]:
    """Milliseconds per request (to the first event for streams), `count` requests, `concurrency` at a time."""
    body = {**BODY, "stream": True} if stream else BODY
    results: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                if stream:
                    async with client.stream("POST", url + "/v1/messages", json=body, headers={"x-api-key": "k"}) as r:
                        first = None
                        async for _chunk in r.aiter_raw():
                            if first is None:
                                first = time.perf_counter()
                        results.append((first - started) * 1000)
                else:
                    r = await client.post(url + "/v1/messages", json=body, headers={"x-api-key": "k"})
                    r.raise_for_status()
                    results.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return results


async def event_gaps(url: str, count: int) -> list[float]:
    """Milliseconds between consecutive chunks of streamed answers (the provider sends one event per ms)."""
    gaps: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(count):
            async with client.stream("POST", url + "/v1/messages", json={**BODY, "stream": True},
                                     headers={"x-api-key": "k"}) as r:
                last = None
                async for _chunk in r.aiter_raw():
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append((now - last) * 1000)
                    last = now
    return gaps


async def throughput(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    done = errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                try:
                    r = await client.post(url + "/v1/messages", json=BODY, headers={"x-api-key": "k"})
                    done += r.status_code == 200
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    return done / elapsed, errors


async def open_streams(url: str, count: int, opened: list[int], hold: asyncio.Event) -> int:
    """Open `count` streams and keep them open until `hold` is set; returns how many failed."""
    failed = 0
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=count), timeout=120) as client:
        async def one() -> None:
            nonlocal failed
            try:
                async with client.stream("POST", url + "/v1/messages", json={**BODY, "stream": True},
                                         headers={"x-api-key": "k"}) as r:
                    async for _chunk in r.aiter_raw():
                        opened[0] += 1
                        await hold.wait()
                        break
            except httpx.HTTPError:
                failed += 1
        await asyncio.gather(*[one() for _ in range(count)])
    return failed


def translation_rate(seconds: float = 2.0) -> float:
    from addon.openai_request import ToolNames
    from addon.openai_stream import StreamTranslator

    chunks = [b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'] * 200
    tail = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    events = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        translator = StreamTranslator("claude-sonnet-4", ToolNames(), message_id="msg_b")
        out = b"".join(translator.feed(c) for c in chunks) + translator.feed(tail) + translator.finish()
        events += out.count(b"\n\n")
    return events / (time.perf_counter() - started)


# -- the run -------------------------------------------------------------------------------------------------
def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: a run under a minute")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    n = 200 if args.quick else 2000
    seconds = 3.0 if args.quick else 10.0
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}

    fake = FastFake(pieces=20)
    bare = Mitm(fake.url)
    balancer = Mitm("", [provider("fake", fake.url)])
    targets = {"direct": fake.url, "mitmdump": bare.url, "balancer": balancer.url}
    try:
        for name, url in targets.items():  # warm up every path
            asyncio.run(latencies(url, 50, 4))
            asyncio.run(latencies(url, 20, 4, stream=True))
        for concurrency in (1, 32):
            for name, url in targets.items():
                progress(f"(a) latency, concurrency {concurrency}, {name}")
                values = asyncio.run(latencies(url, n, concurrency))
                results[f"a.latency_c{concurrency}.{name}"] = {"p50": pct(values, .5), "p99": pct(values, .99)}
        for name, url in targets.items():
            progress(f"(b) time to first event, {name}")
            values = asyncio.run(latencies(url, n // 2, 1, stream=True))
            results[f"b.ttfe.{name}"] = {"p50": pct(values, .5), "p99": pct(values, .99)}
        paced = FastFake(pieces=50, gap=0.001)
        paced_balancer = Mitm("", [provider("paced", paced.url)])
        paced_bare = Mitm(paced.url)
        for name, url in {"direct": paced.url, "mitmdump": paced_bare.url, "balancer": paced_balancer.url}.items():
            progress(f"(b) delay between events, {name}")
            values = asyncio.run(event_gaps(url, 20 if args.quick else 100))
            results[f"b.event_gap.{name}"] = {"p50": pct(values, .5), "p99": pct(values, .99)}
        for proc in (paced_balancer, paced_bare):
            proc.stop()
        paced.stop()

        refused = f"http://127.0.0.1:{free_port()}"
        overloaded, hanging = FastFake("529"), FastFake("hang")
        for label, first in (("refused", refused), ("529", overloaded.url), ("hang_past_1s_timeout", hanging.url)):
            progress(f"(c) failover cost: first provider {label}")
            chain = Mitm("", [provider("first", first), provider("fake", fake.url)],
                         failure_cooldown=0.0, request_timeout=1)
            count = 5 if label.startswith("hang") else n // 4
            values = asyncio.run(latencies(chain.url, count, 1, stream=True))
            chain.stop()
            results[f"c.ttfe_after_{label}"] = {"p50": pct(values, .5), "p99": pct(values, .99)}
        overloaded.stop()
        hanging.stop()

        for concurrency in (32, 128):
            for name, url in targets.items():
                progress(f"(d) throughput, concurrency {concurrency}, {name}")
                rate, errors = asyncio.run(throughput(url, concurrency, seconds))
                results[f"d.throughput_c{concurrency}.{name}"] = {"rps": rate, "errors": errors}

        progress("(e) memory")
        results["e.rss_idle_mb"] = balancer.rss_mb()
        slow = FastFake(pieces=60, gap=0.5)  # each stream lasts 30 s
        holder = Mitm("", [provider("slow", slow.url)])

        async def measure_open() -> tuple[float, int]:
            hold, opened = asyncio.Event(), [0]
            task = asyncio.create_task(open_streams(holder.url, 500, opened, hold))
            deadline = time.monotonic() + 30
            while opened[0] < 500 and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.1)
            rss = holder.rss_mb()
            hold.set()
            await task
            return rss, opened[0]

        rss, opened = asyncio.run(measure_open())
        results["e.rss_500_open_streams_mb"] = rss
        results["e.streams_open_at_measurement"] = opened
        holder.stop()
        slow.stop()
        before = balancer.rss_mb()
        asyncio.run(latencies(balancer.url, 2000 if args.quick else 10000, 32))
        results["e.rss_after_requests_mb"] = {"before": before, "after": balancer.rss_mb(),
                                              "requests": 2000 if args.quick else 10000}
        progress("(f) stream translation")
        results["f.translation_events_per_s"] = translation_rate(1.0 if args.quick else 3.0)
    finally:
        bare.stop()
        balancer.stop()
        fake.stop()

    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_table(results: dict[str, Any]) -> None:
    def row(label: str, key: str) -> None:
        direct, bare, bal = (results.get(f"{key}.{t}") for t in ("direct", "mitmdump", "balancer"))
        if not bal:
            return
        print(f"{label:<34} {direct['p50']:>8.2f} {bare['p50']:>9.2f} {bal['p50']:>9.2f}   "
              f"p99 {direct['p99']:.2f} / {bare['p99']:.2f} / {bal['p99']:.2f}   "
              f"balancer = {bal['p50'] / bare['p50']:.2f}x mitmdump")

    print(f"\n{'ms (p50)':<34} {'direct':>8} {'mitmdump':>9} {'balancer':>9}")
    row("(a) latency, concurrency 1", "a.latency_c1")
    row("(a) latency, concurrency 32", "a.latency_c32")
    row("(b) time to first event", "b.ttfe")
    row("(b) delay between events", "b.event_gap")
    base = results["b.ttfe.balancer"]["p50"]
    for key in ("c.ttfe_after_refused", "c.ttfe_after_529", "c.ttfe_after_hang_past_1s_timeout"):
        value = results[key]
        print(f"(c) {key[2:]:<30} p50 {value['p50']:.2f} ms (cost {value['p50'] - base:+.2f} ms) "
              f"p99 {value['p99']:.2f}")
    for concurrency in (32, 128):
        cells = [results[f"d.throughput_c{concurrency}.{t}"] for t in ("direct", "mitmdump", "balancer")]
        print(f"(d) throughput c{concurrency:<3} req/s: direct {cells[0]['rps']:.0f}, mitmdump {cells[1]['rps']:.0f}, "
              f"balancer {cells[2]['rps']:.0f} (errors {sum(c['errors'] for c in cells)})")
    after = results["e.rss_after_requests_mb"]
    print(f"(e) RSS: idle {results['e.rss_idle_mb']:.0f} MB, {results['e.streams_open_at_measurement']} open streams "
          f"{results['e.rss_500_open_streams_mb']:.0f} MB, {after['before']:.0f} -> {after['after']:.0f} MB over "
          f"{after['requests']} requests")
    print(f"(f) OpenAI->Anthropic translation: {results['f.translation_events_per_s']:.0f} events/s on one core")


if __name__ == "__main__":
    main()
