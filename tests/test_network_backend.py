"""The provider clients' network backend (addon/network_backend.py): asyncio's streams under httpcore, with
httpcore's errors caused by the operating system's, TLS, and the idle-connection test of the connection pool."""

from __future__ import annotations

import asyncio
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import httpcore
import httpx
import pytest

from addon.network_backend import AsyncioBackend
from addon.upstream import ClientPool, describe_exception
from fakes import FakeProvider
from tls import self_signed_server_context


def test_every_provider_client_uses_the_asyncio_backend() -> None:
    async def scenario() -> list[object]:
        pool = ClientPool()
        direct, proxied = pool.get(None), pool.get("http://127.0.0.1:9")
        backends = [direct._transport._pool._network_backend]
        backends += [t._pool._network_backend for t in proxied._mounts.values() if t is not None]
        await pool.aclose()
        return backends

    backends = asyncio.run(scenario())
    assert len(backends) == 2 and all(isinstance(b, AsyncioBackend) for b in backends)


def test_an_idle_connection_the_server_closed_reads_as_readable() -> None:
    """What the connection pool asks before reusing a connection."""

    async def scenario() -> tuple[bool, bool, bool]:
        closing = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await closing.wait()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port)
        open_idle = stream.get_extra_info("is_readable")
        closing.set()
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
            if stream.get_extra_info("is_readable"):
                break
        closed_by_server = stream.get_extra_info("is_readable")
        await stream.aclose()
        gone = stream.get_extra_info("is_readable")
        server.close()
        return open_idle, closed_by_server, gone

    assert asyncio.run(scenario()) == (False, True, True)


def test_errors_are_httpcores_and_name_the_reason() -> None:
    async def scenario() -> None:
        backend = AsyncioBackend()
        # Refused: a port nothing listens on (bound, never listening).
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
            with pytest.raises(httpcore.ConnectError) as refused:
                await backend.connect_tcp("127.0.0.1", port, timeout=5)
        assert describe_exception(refused.value) == "connection refused"
        with pytest.raises(httpcore.ConnectError) as unresolvable:  # a label too long to ask any resolver about
            await backend.connect_tcp("x" * 64 + ".invalid", 80, timeout=5)
        assert describe_exception(unresolvable.value).startswith("DNS error: invalid host name")

        # A server that says nothing: the read times out; then it closes: the read ends with b"".
        release = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        stream = await backend.connect_tcp("127.0.0.1", server.sockets[0].getsockname()[1], timeout=5)
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.05)
        release.set()
        assert await stream.read(100, timeout=10) == b""
        await stream.aclose()
        server.close()

    asyncio.run(scenario())


def test_https_through_the_backend_verifies_the_certificate(tmp_path) -> None:
    with FakeProvider(tls=self_signed_server_context(tmp_path)) as fake:
        async def scenario(verify: ssl.SSLContext | bool) -> httpx.Response:
            pool = ClientPool(verify=verify)
            try:
                return await pool.get(None).post(fake.url + "/v1/messages", json={"model": "m", "max_tokens": 1})
            finally:
                await pool.aclose()

        answer = asyncio.run(scenario(ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))))
        assert answer.status_code == 200 and answer.json()["model"] == "m"
        with pytest.raises(httpx.ConnectError) as refused:
            asyncio.run(scenario(ssl.create_default_context()))  # the test CA is not trusted there
        assert describe_exception(refused.value).startswith("TLS error")


def test_https_through_a_connect_proxy(tmp_path) -> None:
    """A provider's `proxy`: the tunnel is opened in the clear, then TLS starts on the same connection."""
    with FakeProvider(tls=self_signed_server_context(tmp_path)) as fake:
        async def scenario() -> tuple[httpx.Response, list[bytes]]:
            tunnels: list[bytes] = []

            async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                finally:
                    writer.close()

            async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                head = await reader.readuntil(b"\r\n\r\n")
                tunnels.append(head.split(b"\r\n", 1)[0])
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", fake.port)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

            server = await asyncio.start_server(proxy, "127.0.0.1", 0)
            pool = ClientPool(verify=ssl.create_default_context(cafile=str(tmp_path / "cert.pem")))
            try:
                client = pool.get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
                answer = await client.post(fake.url + "/v1/messages", json={"model": "m", "max_tokens": 1})
            finally:
                await pool.aclose()
                server.close()
            return answer, tunnels

        answer, tunnels = asyncio.run(scenario())
    assert answer.status_code == 200 and answer.json()["model"] == "m"
    assert tunnels == [f"CONNECT 127.0.0.1:{fake.port} HTTP/1.1".encode()]


def test_http2_over_tls_through_the_backend_multiplexes_on_one_connection(tmp_path) -> None:
    """What real providers speak (api.anthropic.com negotiates h2 by ALPN): several requests at once, one connection."""
    server_context = self_signed_server_context(tmp_path)
    server_context.set_alpn_protocols(["h2"])
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded):
                        body = b'{"stream": %d}' % event.stream_id
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    async def scenario() -> list[tuple[str, int]]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/messages"
        pool = ClientPool(verify=ssl.create_default_context(cafile=str(tmp_path / "cert.pem")))
        try:
            client = pool.get(None)
            await client.post(url, json={"model": "m"})  # the connection, negotiated once
            answers = await asyncio.gather(*(client.post(url, json={"model": "m"}) for _ in range(5)))
        finally:
            await pool.aclose()
            server.close()
        return [(answer.http_version, answer.json()["stream"]) for answer in answers]

    answers = asyncio.run(scenario())
    assert {version for version, _ in answers} == {"HTTP/2"}
    assert len({stream for _, stream in answers}) == 5 and connections == [1]
