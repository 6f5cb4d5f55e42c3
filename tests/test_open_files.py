"""Open files: the limit raised at start-up, running out classified as the balancer's own shortage, descriptors
held back for the relay hop, listen backlogs. Limits are per process: whatever needs a low one runs in a child
Python with that limit."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from addon.config import Settings
from addon.failover import record_failure
from addon.health import HealthBoard
from addon.listen_backlog import effective_backlog, widen
from addon.open_files import (
    LOCAL,
    UNLIMITED_FALLBACKS,
    ExhaustionLogFilter,
    is_descriptor_exhaustion,
    soft_limits_to_try,
)
from addon.upstream import describe_exception
from helpers import free_port

REPO = Path(__file__).resolve().parent.parent
INF = -1  # how the resource module spells "unlimited" on Linux


# What every child starts with: its limit, and `fill()`, which opens descriptors until none is left and returns
# them (close some to free slots).
PRELUDE = """
import os, resource, sys
sys.path.insert(0, {repo!r})
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))

def fill():
    held = []
    while True:
        try:
            held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return held
"""


def run_limited(code: str, soft: int, hard: int | None = None) -> Any:
    """Runs `code` in a child Python whose open-file limit is (soft, hard); returns what it printed as JSON."""
    prelude = PRELUDE.format(repo=str(REPO), soft=soft, hard=hard if hard is not None else soft)
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the limit ---------------------------------------------------------------------------------------------------
def test_the_soft_limit_is_raised_to_the_hard_limit():
    assert soft_limits_to_try(1024, 524288, INF) == [524288]


def test_an_unlimited_hard_limit_asks_for_large_limits_the_kernel_grants():
    assert soft_limits_to_try(1024, INF, INF) == list(UNLIMITED_FALLBACKS)
    assert soft_limits_to_try(100000, INF, INF) == [n for n in UNLIMITED_FALLBACKS if n > 100000]


def test_the_soft_limit_is_never_lowered():
    assert soft_limits_to_try(4096, 4096, INF) == []
    assert soft_limits_to_try(INF, INF, INF) == []


def test_raise_open_file_limit_in_a_process_started_with_a_low_soft_limit():
    before, after, now = run_limited("""
        import json, resource
        from addon.open_files import raise_open_file_limit
        before, after = raise_open_file_limit()
        print(json.dumps([before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
    """, soft=256, hard=2048)
    assert (before, after, now) == (256, 2048, 2048)


def test_raise_open_file_limit_when_soft_and_hard_are_equal_keeps_it():
    assert run_limited("""
        import json
        from addon.open_files import raise_open_file_limit
        print(json.dumps(raise_open_file_limit()))
    """, soft=512) == [512, 512]


# -- running out is a local failure --------------------------------------------------------------------------------
def test_a_real_connect_without_a_free_descriptor_is_classified_as_exhaustion():
    """httpx wraps the operating system's EMFILE (through httpcore and anyio); the chain still says so."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run_limited(f"""
            import asyncio, json, httpx
            from addon.open_files import is_descriptor_exhaustion
            from addon.upstream import describe_exception

            async def main():
                async with httpx.AsyncClient() as client:
                    try:  # once with descriptors to spare: the modules httpx imports on first use are loaded
                        await client.get("http://127.0.0.1:{free_port()}/")
                    except httpx.ConnectError:
                        pass
                    held = fill()
                    try:
                        await client.get("http://127.0.0.1:{port}/")
                    except httpx.HTTPError as exc:
                        return [type(exc).__name__, is_descriptor_exhaustion(exc), describe_exception(exc)]
                    finally:
                        for fd in held:
                            os.close(fd)

            print(json.dumps(asyncio.run(main())))
        """, soft=64)
    assert result == ["ConnectError", True, "out of open files in the balancer"]


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE])
def test_exhaustion_is_found_behind_wrappers_and_exception_groups(error):
    try:
        try:
            raise ExceptionGroup("all connection attempts failed", [OSError(error, "no descriptor")])
        except ExceptionGroup as group:
            raise httpx.ConnectError("connect failed") from group
    except httpx.ConnectError as wrapped:
        assert is_descriptor_exhaustion(wrapped)


def test_other_transport_failures_are_not_exhaustion():
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
    assert not is_descriptor_exhaustion(refused.value)
    assert describe_exception(refused.value) == "connection refused"


def test_a_provider_attempt_without_a_free_descriptor_fails_locally_and_the_provider_stays_usable():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        outcome, kind, usable, failures = run_limited(f"""
            import asyncio, json, httpx
            from addon.config import ProviderConfig, Settings
            from addon.failover import attempt_in_turn
            from addon.health import HealthBoard
            from addon.routing import Plan
            from addon.upstream import ClientPool

            async def main():
                board, pool = HealthBoard(), ClientPool()
                provider = ProviderConfig(name="p", base_url="http://127.0.0.1:{port}", auth_value="k")
                build = lambda p: httpx.Request("POST", p.base_url + "/v1/messages")
                try:  # once with descriptors to spare: the modules httpx imports on first use are loaded
                    await pool.get(None).get("http://127.0.0.1:{free_port()}/")
                except httpx.ConnectError:
                    pass
                held = fill()
                try:
                    result = await attempt_in_turn(Plan([provider], []), build, pool, board, Settings(), None)
                finally:
                    for fd in held:
                        os.close(fd)
                await pool.aclose()
                attempt = result.attempts[0]
                return [attempt.outcome, attempt.kind, board.is_available("p"), board.get("p").failures]

            print(json.dumps(asyncio.run(main())))
        """, soft=64)
    assert (outcome, kind) == ("out of open files in the balancer", LOCAL)
    assert usable and failures == 0


def test_a_local_failure_neither_cools_the_provider_down_nor_leaves_it_probing():
    board = HealthBoard()
    board.record_failure("p", "HTTP 500", 0.0, "server_error")  # an earlier failure: the next attempt is a probe
    assert board.record_attempt("p")
    record_failure(board, Settings(), "p", "out of open files in the balancer", LOCAL)
    health = board.get("p")
    assert not board.is_cooling_down("p")
    assert not health.probing
    assert health.failures == 1  # only the earlier one


def test_the_loop_errors_of_an_exhausted_listener_become_one_short_warning():
    clock = [0.0]
    quiet = ExhaustionLogFilter(quiet=10.0, clock=lambda: clock[0])

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("mitmproxy.master", logging.ERROR, __file__, 1, "Unhandled error in task.", (),
                                 (type(exc), exc, None))

    first = record(OSError(errno.EMFILE, "Too many open files"))
    assert quiet.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert "out of open files" in first.getMessage()
    assert not quiet.filter(record(OSError(errno.EMFILE, "Too many open files")))  # within the quiet time
    other = record(ValueError("a real bug"))
    assert quiet.filter(other) and other.exc_info is not None  # anything else is left alone
    clock[0] = 11.0
    assert quiet.filter(record(OSError(errno.EMFILE, "Too many open files")))


# -- descriptors held back ---------------------------------------------------------------------------------------
def test_a_reserve_takes_all_or_nothing_and_a_released_slot_goes_to_the_next_socket():
    result = run_limited("""
        import json, socket
        from addon.open_files import DescriptorReserve
        reserve = DescriptorReserve()
        assert reserve.take(3)
        held = fill()
        os.close(held.pop())  # one slot free: not enough for two
        partial = reserve.take(2)
        after_partial = len(reserve)
        os.open(os.devnull, os.O_RDONLY)  # the slot is still free: nothing was left half-taken
        try:
            socket.socket()
            without = "socket"
        except OSError:
            without = "EMFILE"
        reserve.release(1)
        with socket.socket():
            pass  # gets the released slot
        print(json.dumps([partial, after_partial, without, len(reserve)]))
    """, soft=64)
    assert result == [False, 3, "EMFILE", 2]


def test_the_relay_accepts_with_a_held_back_descriptor_when_none_is_free():
    """mitmproxy's connection is already in the relay's accept queue when the last descriptor goes: the relay
    gives up one held back for it, accepts, and answers."""
    answer = run_limited("""
        import asyncio, json, socket
        from addon.relay import PATH_PREFIX, Parked, RelayServer

        async def body():
            yield b"hello"

        async def close():
            pass

        async def main():
            relay = RelayServer()
            port = await relay.start()
            token = relay.park(Parked(200, [("content-type", "text/plain")], body(), close))
            assert relay.reserve.take(1)
            client = socket.socket()
            client.setblocking(False)
            held = fill()
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(20):
                    await loop.sock_connect(client, ("127.0.0.1", port))
                    await loop.sock_sendall(client, f"GET {PATH_PREFIX}{token} HTTP/1.1\\r\\n\\r\\n".encode())
                    data = b""
                    while not data.endswith(b"0\\r\\n\\r\\n"):
                        data += await loop.sock_recv(client, 4096)
            finally:
                for fd in held:
                    os.close(fd)
                client.close()
                await relay.stop()
            return data.decode()

        print(json.dumps(asyncio.run(main())))
    """, soft=64)
    assert answer.startswith("HTTP/1.1 200 OK\r\n")
    assert "hello" in answer


def test_an_answer_whose_hop_cannot_have_its_descriptors_is_closed_and_the_client_gets_503_json():
    status, headers, body, closed, held = run_limited("""
        import asyncio, json
        from mitmproxy.test import tflow
        from addon.relay import PATH_PREFIX, RELAYED, Parked, RelayServer
        from addon.relay_headroom import RelayHeadroom

        async def main():
            relay = RelayServer()
            headroom = RelayHeadroom(relay)
            closed = asyncio.Event()

            async def body():
                yield b"never relayed"

            async def close():
                closed.set()

            flow = tflow.tflow()
            flow.response = None
            flow.request.path = PATH_PREFIX + relay.park(Parked(200, [], body(), close))
            flow.metadata[RELAYED] = True
            kept = fill()
            await headroom.request(flow)
            r = flow.response
            return [r.status_code, dict(r.headers), json.loads(r.content), closed.is_set(), len(relay.reserve)]

        print(json.dumps(asyncio.run(main())))
    """, soft=64)
    assert status == 503
    assert headers["content-type"] == "application/json" and headers["retry-after"] == "1"
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert "out of open files (limit 64)" in body["error"]["message"]
    assert closed  # the provider's answer was closed: it stops generating
    assert held == 0


def relayed_flow() -> Any:
    from mitmproxy.test import tflow

    from addon.relay import PATH_PREFIX, RELAYED

    flow = tflow.tflow()
    flow.response = None
    flow.request.path = PATH_PREFIX + "token"
    flow.metadata[RELAYED] = True
    return flow


def test_the_hop_descriptors_are_given_back_as_the_hop_comes_up_and_the_flow_ends():
    from mitmproxy.connection import Server
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData
    from mitmproxy.test import tflow

    from addon.relay import RelayServer
    from addon.relay_headroom import RelayHeadroom

    relay = RelayServer()
    relay.port = 4321  # as if started: only the port matters here
    headroom = RelayHeadroom(relay)
    flows = [relayed_flow() for _ in range(3)]
    for flow in flows:
        asyncio.run(headroom.request(flow))
    assert len(relay.reserve) == 6 and headroom.holding == 3
    client = flows[0].client_conn
    headroom.server_connect(ServerConnectionHookData(client=client, server=Server(address=("10.0.0.1", 4321))))
    assert len(relay.reserve) == 6  # not the relay: nothing given up
    headroom.server_connect(ServerConnectionHookData(client=client, server=Server(address=("127.0.0.1", 4321))))
    assert len(relay.reserve) == 5
    headroom.responseheaders(flows[0])
    assert len(relay.reserve) == 4  # two for each answer still waiting for its hop
    headroom.error(flows[1])
    headroom.response(flows[1])  # a flow's end seen twice gives nothing back twice
    assert len(relay.reserve) == 2
    headroom.response(flows[2])
    assert len(relay.reserve) == 0 and headroom.holding == 0
    not_relayed = tflow.tflow()
    not_relayed.response = None
    asyncio.run(headroom.request(not_relayed))
    assert headroom.holding == 0  # only answers handed to the relay need a hop
    relay.reserve.close()


# -- listen backlog ----------------------------------------------------------------------------------------------
def listen_backlog_of(port: int) -> int:
    """The backlog of the TCP socket listening on 127.0.0.1:`port`, as the kernel reports it (ss: Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


def test_the_backlog_asked_for_is_capped_by_the_kernel():
    assert effective_backlog(4096, 4096) == 4096
    assert effective_backlog(4096, 128) == 128
    assert effective_backlog(4096, None) == 4096


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read a listener's backlog")
def test_widen_sets_a_larger_backlog_on_a_socket_already_listening():
    with socket.create_server(("127.0.0.1", 0), backlog=5) as listener:
        port = listener.getsockname()[1]
        assert listen_backlog_of(port) == 5
        assert widen([listener], 100) == 1
        assert listen_backlog_of(port) == 100
