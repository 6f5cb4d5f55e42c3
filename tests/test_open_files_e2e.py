"""Open files and bursts through the real balancer: mitmdump started under a given open-file limit, a slow fake
provider in its own process (benchkit's: one event every half second, so streams stay open), and many streams
opened at once from this one process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from addon.listen_backlog import listen_backlog
from balancer_proc import ADDON, MITMDUMP, BalancerProcess, providers_yaml
from benchkit.processes import FakeProvider as ProviderProcess
from benchkit.processes import rss_mb
from helpers import anthropic_provider

# Starts a program with the given soft and hard open-file limits (what `prlimit --nofile=S:H` does).
WITH_LIMIT = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), "
              "int(sys.argv[2]))); os.execv(sys.argv[3], sys.argv[3:])")
STREAM_BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                          "messages": [{"role": "user", "content": "Hi"}]}).encode()
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.fixture(scope="module", autouse=True)
def descriptors_for_this_process() -> Iterator[None]:
    """This process opens the client side of every stream, and the fake provider it starts inherits its limit."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before[1], before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.fixture(scope="module")
def slow_provider() -> Iterator[ProviderProcess]:
    with ProviderProcess() as provider:
        yield provider


def limited_balancer(workdir: Path, provider_url: str, soft: int, hard: int) -> BalancerProcess:
    providers_file = workdir / "providers.yaml"
    providers_file.write_text(providers_yaml([anthropic_provider("slow", provider_url)]))
    command = [sys.executable, "-c", WITH_LIMIT, str(soft), str(hard), str(MITMDUMP), "-s", str(ADDON),
               "--mode", "reverse:https://api.anthropic.com", "--listen-host", "127.0.0.1", "--listen-port", "0",
               "--set", f"providers={providers_file}"]
    return BalancerProcess(workdir, providers_file, command=command)


def wait_until_serving(balancer: BalancerProcess, deadline: float = 60.0) -> None:
    """mitmproxy listens before the addon's start-up has finished: wait for the health answer."""
    end = time.monotonic() + deadline
    while True:
        try:
            if httpx.get(balancer.url + "/", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, balancer.log
        time.sleep(0.1)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def balancer_pid(balancer: BalancerProcess) -> int:
    assert balancer._proc is not None
    return balancer._proc.pid  # the wrapper exec()s mitmdump: same process


@dataclass
class Outcome:
    status: int
    content_type: str
    body: bytes  # a stream's first event (in its chunk), or the whole answer


class Outcomes(list[Outcome]):
    """The outcomes noted so far; `complete` is set once `expected` of them are in."""

    def __init__(self, expected: int):
        super().__init__()
        self.expected = expected
        self.complete = asyncio.Event()

    def append(self, outcome: Outcome) -> None:
        super().append(outcome)
        if len(self) >= self.expected:
            self.complete.set()


async def _one_stream(port: int, outcomes: Outcomes, release: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as exc:
        outcomes.append(Outcome(0, "", f"connect: {exc}".encode()))
        return
    try:
        writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: balancer\r\ncontent-type: application/json\r\n"
                     b"anthropic-version: 2023-06-01\r\nx-api-key: client-key\r\ncontent-length: %d\r\n\r\n%b"
                     % (len(STREAM_BODY), STREAM_BODY))
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        status = int(head[0].split(" ")[1])
        if status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
            outcomes.append(Outcome(status, headers["content-type"], await reader.readuntil(b"\n\n")))
            await release.wait()  # the stream stays open
        elif "content-length" in headers:
            outcomes.append(Outcome(status, headers.get("content-type", ""),
                                    await reader.readexactly(int(headers["content-length"]))))
        else:
            outcomes.append(Outcome(status, headers.get("content-type", ""), await reader.read(65536)))
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        outcomes.append(Outcome(0, "", f"broken: {exc!r}".encode()))
    finally:
        writer.close()


@dataclass
class Burst:
    outcomes: list[Outcome]
    seconds: float  # until every stream had its first event or its answer
    descriptors: int  # the balancer's, at that moment
    rss_mb: float


def burst(port: int, count: int, pid: int, deadline: float = 180.0) -> Burst:
    """Opens `count` streams at once; once each has its first event (or an error answer), notes the balancer's
    descriptors and memory, then closes them all."""

    async def run() -> Burst:
        outcomes = Outcomes(count)
        release = asyncio.Event()
        started = time.monotonic()
        tasks = [asyncio.create_task(_one_stream(port, outcomes, release)) for _ in range(count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outcomes.complete.wait(), deadline)
        seconds = time.monotonic() - started
        measured = Burst(list(outcomes), seconds, open_descriptors(pid), rss_mb(pid))
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return measured

    return asyncio.run(run())


def is_anthropic_error(outcome: Outcome) -> bool:
    if not outcome.content_type.startswith("application/json"):
        return False
    body = json.loads(outcome.body)
    return body.get("type") == "error" and isinstance(body.get("error", {}).get("message"), str)


def listen_backlogs(pid: int) -> dict[int, int]:
    """Port -> backlog of each TCP socket process `pid` listens on (ss: Send-Q of a listening socket)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        if f"pid={pid}," in line:
            fields = line.split()
            found[int(fields[3].rsplit(":", 1)[1])] = int(fields[2])
    return found


def assert_all_streamed(result: Burst, count: int) -> None:
    """Every one of the `count` streams got a 200 and its first event."""
    not_streaming = [o for o in result.outcomes if o.status != 200]
    assert len(result.outcomes) == count and not not_streaming, not_streaming[:3]
    assert all(b"event: message_start" in o.body for o in result.outcomes)


@pytest.mark.slow
@pytest.mark.skipif(HARD < 4000, reason="needs a hard open-file limit of at least 4000")
def test_600_streams_work_when_started_with_a_soft_limit_of_1024(tmp_path, slow_provider):
    balancer = limited_balancer(tmp_path, slow_provider.anthropic("slow"), soft=1024, hard=HARD)
    with balancer:
        wait_until_serving(balancer)
        assert f"open-file limit raised from 1024 to {HARD}" in balancer.log
        pid = balancer_pid(balancer)
        idle = open_descriptors(pid)
        idle_rss = rss_mb(pid)
        result = burst(balancer.port, 600, pid)
    assert_all_streamed(result, 600)
    per_stream = (result.descriptors - idle) / 600
    print(f"\n600 streams: {per_stream:.2f} descriptors per stream ({idle} idle, {result.descriptors} open), "
          f"RSS {idle_rss:.0f} MB idle, {result.rss_mb:.0f} MB with 600 open; all first events in "
          f"{result.seconds:.1f}s")
    assert per_stream <= 4.1  # client, relay client, relay server, provider: nothing more, nothing leaked


@pytest.mark.parametrize("streams", [
    # clients and providers fit, the relay hops do not: mitmproxy's connection to the relay would fail
    pytest.param(20, marks=pytest.mark.slow),
    # the clients alone take every descriptor: connecting to the provider fails
    pytest.param(150, marks=pytest.mark.slow),
])
def test_out_of_descriptors_the_client_gets_anthropic_errors_and_the_balancer_keeps_serving(tmp_path,
                                                                                             slow_provider, streams):
    balancer = limited_balancer(tmp_path, slow_provider.anthropic("slow"), soft=64, hard=64)  # about 12 streams
    with balancer:
        wait_until_serving(balancer)
        pid = balancer_pid(balancer)
        assert burst(balancer.port, 1, pid).outcomes[0].status == 200  # warm: as after serving for a while
        result = burst(balancer.port, streams, pid)
        assert len(result.outcomes) == streams
        html = [o for o in result.outcomes if "html" in o.content_type or b"<html" in o.body]
        assert not html, html[:1]
        served = [o for o in result.outcomes if o.status == 200]
        refused = [o for o in result.outcomes if o.status != 200]
        assert all(b"event: message_start" in o.body for o in served)
        assert refused, "the burst never ran out of descriptors: the test proves nothing"
        assert all(o.status == 503 and is_anthropic_error(o) for o in refused), refused[:3]
        assert all("out of open files" in json.loads(o.body)["error"]["message"] for o in refused)

        # Afterwards it serves again, and the provider was never blamed for the balancer's shortage.
        end = time.monotonic() + 60
        while True:
            again = burst(balancer.port, 1, pid)
            if again.outcomes and again.outcomes[0].status == 200:
                break
            assert time.monotonic() < end, again.outcomes
            time.sleep(0.5)
        provider = balancer.provider_status("slow")
        # (Streams this test closes mid-way may count as stream errors; running out must count as nothing.)
        assert not {"transport", "local"} & set(provider["failures_by_class"]), provider
        assert "Traceback" not in balancer.log


@pytest.mark.slow
@pytest.mark.skipif(HARD < 6000, reason="needs a hard open-file limit of at least 6000")
def test_1000_streams_opened_at_once_all_get_their_first_event(tmp_path, slow_provider):
    balancer = limited_balancer(tmp_path, slow_provider.anthropic("slow"), soft=1024, hard=HARD)
    with balancer:
        wait_until_serving(balancer)
        pid = balancer_pid(balancer)
        if shutil.which("ss"):
            backlogs = listen_backlogs(pid)
            assert len(backlogs) == 3, backlogs  # mitmproxy's listener, the relay's and the 413 sink's
            assert set(backlogs.values()) == {listen_backlog()}, backlogs
        result = burst(balancer.port, 1000, pid)
    assert_all_streamed(result, 1000)
    print(f"\n1000 streams opened at once: all first events in {result.seconds:.1f}s, "
          f"{result.descriptors} descriptors, RSS {result.rss_mb:.0f} MB")
