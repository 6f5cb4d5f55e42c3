"""What a hostile or odd client can send, against the running balancer: oversized and compressed bodies, paths
that try to escape, odd request lines and Host headers, HEAD, and a provider that redirects."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest
import zstandard

from balancer_proc import BalancerProcess
from fakes import FakeProvider, Status
from helpers import anthropic_provider, read_response

CLIENT_KEY = "client-key-hardening-0123"
ADMIN_KEY = "admin-key-hardening-4567"
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, provider: FakeProvider) -> Iterator[BalancerProcess]:
    """A balancer with client and admin keys and the default max_body_size (32 MiB); its provider has a base path."""
    process = BalancerProcess(tmp_path_factory.mktemp("hardening"))
    process.write_providers([anthropic_provider("p", provider.url + "/api")],
                            client_keys=[CLIENT_KEY], admin_keys=[ADMIN_KEY], count_tokens="local")
    with process:
        warm(process)
        yield process


@pytest.fixture
def fake(provider: FakeProvider) -> FakeProvider:
    provider.requests.clear()
    return provider


def warm(process: BalancerProcess) -> None:
    """Load what the balancer loads on first use (the token vocabulary, in the background at start-up), so that
    memory figures measure the request and not that."""
    response = httpx.post(process.url + "/v1/messages/count_tokens", json=BODY, timeout=60,
                          headers={"x-api-key": CLIENT_KEY})
    assert response.status_code == 200


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (VmHWM) to its current RSS; return that (KiB)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_kib(pid)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def upload(port: int, size: int, chunked: bool, key: str | None) -> tuple[int, bytes]:
    """POST `size` bytes of body (never held in memory here either), then read the answer."""
    piece = b"x" * MiB
    head = ["POST /v1/messages HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    if key:
        head.append(f"x-api-key: {key}")
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        try:
            while sent < size:
                part = piece[: size - sent]
                sock.sendall(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer may come, and the connection close, before the whole upload is read
        status, _, body = read_response(sock)
        return status, body


def test_oversized_uploads_are_refused_413_without_costing_memory(gateway, fake):
    pid = gateway._proc.pid
    before = reset_peak(pid)
    results: list[tuple[int, bytes]] = []
    keys = [CLIENT_KEY, None, "wrong-key", CLIENT_KEY, None]
    threads = [threading.Thread(target=lambda k=k: results.append(upload(gateway.port, 100 * MiB, False, k)))
               for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(results) == 5
    for status, body in results:
        assert status == 413
        assert json.loads(body)["error"]["type"] == "request_too_large"
    peak = rss_kib(pid, "VmHWM")
    assert peak - before < 20 * 1024, f"RSS peak grew by {(peak - before) / 1024:.0f} MiB"
    assert fake.requests == []
    # And the balancer goes on serving.
    response = httpx.post(gateway.url + "/v1/messages", json=BODY, headers={"x-api-key": CLIENT_KEY}, timeout=30)
    assert response.status_code == 200


@pytest.mark.slow
def test_a_chunked_upload_is_no_longer_kept_once_it_passes_the_limit(tmp_path, provider):
    process = BalancerProcess(tmp_path)
    process.write_providers([anthropic_provider("p", provider.url)], max_body_size=MiB, count_tokens="local",
                            client_keys=[CLIENT_KEY])
    with process:
        warm(process)
        pid = process._proc.pid
        before = reset_peak(pid)
        results: list[tuple[int, bytes]] = []
        threads = [threading.Thread(target=lambda k=k: results.append(upload(process.port, 100 * MiB, True, k)))
                   for k in (CLIENT_KEY, None, CLIENT_KEY, None, "wrong-key")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert [status for status, _ in results] == [413] * 5
        assert all(json.loads(body)["error"]["type"] == "request_too_large" for _, body in results)
        peak = rss_kib(pid, "VmHWM")
        assert peak - before < 20 * 1024, f"RSS peak grew by {(peak - before) / 1024:.0f} MiB"
        # Within the limit, a chunked body is served as any other.
        chunks = iter([json.dumps(BODY).encode()])
        response = httpx.post(process.url + "/v1/messages", content=chunks, timeout=30,
                              headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"})
        assert response.status_code == 200, response.text


def gzip_bomb(decoded: int) -> bytes:
    """`decoded` bytes of zeros (whole MiBs) as one gzip member. A full flush after each MiB makes every MiB compress
    to the same bytes: one is compressed and repeated, which takes a fraction of compressing them all."""
    zeros = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(decoded // MiB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name or time, best compression
    return header + block * (decoded // MiB) + compressor.flush() + struct.pack("<II", crc, decoded % 2**32)


def test_a_decompression_bomb_is_refused_without_inflating_it(gateway, fake):
    bomb = gzip_bomb(1024 * MiB)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 * MiB
    pid = gateway._proc.pid
    before = reset_peak(pid)
    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(httpx.post(
        gateway.url + "/v1/messages", content=bomb, timeout=60,
        headers={"x-api-key": CLIENT_KEY, "content-encoding": "gzip", "content-type": "application/json"})))
    sender.start()
    # Other requests are served while it is refused (the decoding runs off the event loop).
    assert httpx.get(gateway.url + "/", timeout=30).status_code == 200
    sender.join(120)
    (answer,) = answers
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "request_too_large"
    assert "decoded" in answer.json()["error"]["message"]
    peak = rss_kib(pid, "VmHWM")
    assert peak - before < 50 * 1024, f"RSS peak grew by {(peak - before) / 1024:.0f} MiB"
    assert fake.requests == []


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("br", brotli.compress),
    ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    ("gzip, br", lambda data: brotli.compress(gzip.compress(data))),
])
def test_compressed_requests_reach_the_provider_decoded(gateway, fake, encoding, encode):
    raw = json.dumps(BODY).encode()
    response = httpx.post(gateway.url + "/v1/messages", content=encode(raw), timeout=30, headers={
        "x-api-key": CLIENT_KEY, "content-encoding": encoding, "content-type": "application/json"})
    assert response.status_code == 200, response.text
    (received,) = fake.requests
    assert received.json()["messages"] == BODY["messages"]
    assert "content-encoding" not in received.headers


@pytest.mark.parametrize("encoding, body, status", [
    ("gzip", b"not gzip at all", 400),
    ("gzip", gzip.compress(json.dumps(BODY).encode(), mtime=0)[:-12], 400),  # cut short
    ("compress", b"\x1f\x9d whatever", 415),
])
def test_undecodable_or_unknown_encodings_get_a_clear_answer(gateway, fake, encoding, body, status):
    response = httpx.post(gateway.url + "/v1/messages", content=body, timeout=30, headers={
        "x-api-key": CLIENT_KEY, "content-encoding": encoding, "content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert fake.requests == []


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return read_response(sock)


def raw_request(method: str, target: str, body: bytes = b"", key: str = CLIENT_KEY, host: str | None = "h") -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"x-api-key: {key}", "Content-Type: application/json", f"Content-Length: {len(body)}",
              "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("method, target, key, status", [
    ("GET", "/v1/../providers", ADMIN_KEY, 400),
    ("GET", "/v1/%2e%2e/providers", ADMIN_KEY, 400),
    ("GET", "/v1/%2E%2E/%2e%2e/etc/passwd", CLIENT_KEY, 400),
    ("POST", "/v1%2fmessages", CLIENT_KEY, 400),
    ("POST", "/v1%5cmessages", CLIENT_KEY, 400),
    ("POST", "/v1\\..\\messages", CLIENT_KEY, 400),
    ("POST", "/v1/./messages", CLIENT_KEY, 400),
    ("POST", "/v1/messages;x", CLIENT_KEY, 404),
    ("GET", "/v1/models;x=1", CLIENT_KEY, 404),
    ("GET", "/v1/files/a%00b", CLIENT_KEY, 400),
])
def test_paths_that_try_to_escape_are_refused_before_routing(gateway, fake, method, target, key, status):
    answer, _, body = raw_exchange(gateway.port, raw_request(method, target, json.dumps(BODY).encode(), key))
    assert answer == status, body
    assert json.loads(body)["type"] == "error"
    assert fake.requests == []


@pytest.mark.parametrize("target", ["//v1/messages", "/v1/messages/", "/v1//messages", "/%761/messages?beta=true"])
def test_near_miss_spellings_of_the_messages_endpoint_get_the_messages_handling(gateway, fake, target):
    answer, headers, body = raw_exchange(gateway.port, raw_request("POST", target, json.dumps(BODY).encode()))
    assert answer == 200, body
    assert headers["x-balancer-provider"] == "p"
    (received,) = fake.requests
    assert received.path.split("?")[0] == "/api/v1/messages"
    assert received.headers["x-api-key"] == "key-of-p"
    # The messages handling validates: the same spelling with a broken body is a 400 that reaches nobody.
    fake.requests.clear()
    answer, _, _ = raw_exchange(gateway.port, raw_request("POST", target, b'{"model": "m"}'))
    assert answer == 400
    assert fake.requests == []


def test_an_absolute_form_request_line_is_served_like_its_origin_form(gateway, fake):
    for target in ("http://127.0.0.2:1/v1/messages", f"http://127.0.0.1:{gateway.port}/v1/messages?beta=true"):
        answer, _headers, body = raw_exchange(gateway.port, raw_request("POST", target, json.dumps(BODY).encode()))
        assert answer == 200, body
        assert json.loads(body)["content"][0]["text"] == "Hello"
    assert [r.path.split("?")[0] for r in fake.requests] == ["/api/v1/messages"] * 2
    listing = httpx.get(gateway.url + "/providers", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
    assert listing["open_streams"] == 0


@pytest.mark.parametrize("host_lines", [
    [],  # no Host header at all
    ["Host: a", "Host: b"],
    ["Host: "],
    ["Host: " + "h" * 5000],
    ["Host: 127.0.0.1:1\r\nX-Forwarded-Host: evil"],
    ["Host: a b c"],
])
def test_odd_host_headers_are_served_or_refused_cleanly(gateway, fake, host_lines):
    body = json.dumps(BODY).encode()
    lines = ["POST /v1/messages HTTP/1.1", *host_lines, f"x-api-key: {CLIENT_KEY}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]
    answer, _headers, payload = raw_exchange(gateway.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    if answer == 200:
        assert json.loads(payload)["content"][0]["text"] == "Hello"
    else:
        assert 400 <= answer < 500, (answer, payload[:200])
        assert fake.requests == []
    listing = httpx.get(gateway.url + "/providers", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
    assert listing["open_streams"] == 0


def test_head_answers_without_a_body_and_the_connection_stays_usable(gateway):
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        for path, headers in (("/", {}), ("/providers", {"x-api-key": ADMIN_KEY}),
                              ("/metrics", {"x-api-key": ADMIN_KEY}),
                              ("/v1/models", {"x-api-key": CLIENT_KEY}), ("/nowhere", {}),
                              ("/v1/messages", {"x-api-key": CLIENT_KEY}), ("/v1/files", {"x-api-key": CLIENT_KEY})):
            connection.request("HEAD", path, headers=headers)
            head = connection.getresponse()
            assert head.read() == b""
            # The next request on the same connection is answered correctly: no stray body bytes in between.
            connection.request("GET", "/")
            after = connection.getresponse()
            assert after.status == 200
            assert json.loads(after.read())["status"] == "ok"
        connection.request("HEAD", "/")
        head = connection.getresponse()
        assert head.status == 200
        assert int(head.getheader("content-length")) > 0  # what GET would have sent
        head.read()
    finally:
        connection.close()


def test_a_provider_redirect_is_never_handed_to_the_client(balancer, unique):
    with FakeProvider() as redirecting, FakeProvider() as second:
        redirecting.default = Status(302, b"", headers={"location": "http://127.0.0.2:1/steal"})
        balancer.use([anthropic_provider(f"redirecting-{unique}", redirecting.url),
                      anthropic_provider(f"second-{unique}", second.url)])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, timeout=30, follow_redirects=False)
        assert response.status_code == 200
        assert response.headers["x-balancer-provider"] == f"second-{unique}"
        assert "location" not in response.headers
        status = balancer.provider_status(f"redirecting-{unique}")
        assert "302" in (status.get("last_error") or "")
        # With nobody else to go to, the client gets an error of the balancer's, not the redirect.
        balancer.use([anthropic_provider(f"redirecting-only-{unique}", redirecting.url)])
        alone = httpx.post(balancer.url + "/v1/messages", json=BODY, timeout=30, follow_redirects=False)
        assert alone.status_code >= 500
        assert "location" not in alone.headers
        assert alone.json()["type"] == "error"
    assert len(second.message_requests) == 1


def test_a_header_value_with_a_control_character_is_the_clients_error_not_the_providers(gateway, fake):
    body = json.dumps(BODY).encode()
    for bad in ("x-note: a\x00b", "x-api-key: " + CLIENT_KEY + "\x01", "x-trace: 1\r\n continued"):
        lines = ["POST /v1/messages HTTP/1.1", "Host: h", f"x-api-key: {CLIENT_KEY}", bad,
                 "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
        status, _, payload = raw_exchange(gateway.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert status == 400, payload
        assert "control character" in json.loads(payload)["error"]["message"]
        assert CLIENT_KEY not in payload.decode()
    assert fake.requests == []
    status = httpx.get(gateway.url + "/providers", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
    assert all(p["healthy"] and not p.get("last_error") for p in status["providers"]), status


def test_a_query_string_with_control_or_raw_non_ascii_characters_is_refused(gateway, fake):
    for query in ("?a=\x01", "?a=\xff", "?" + "a" * 9000):
        status, _, payload = raw_exchange(
            gateway.port, raw_request("POST", "/v1/messages" + query, json.dumps(BODY).encode()))
        assert status == 400, payload
    assert fake.requests == []


def test_more_than_two_content_encodings_are_refused_without_decoding(gateway, fake):
    layered = json.dumps(BODY).encode()
    for _ in range(3):
        layered = gzip.compress(layered)
    response = httpx.post(gateway.url + "/v1/messages", content=layered, timeout=30, headers={
        "x-api-key": CLIENT_KEY, "content-encoding": "gzip, gzip, gzip", "content-type": "application/json"})
    assert response.status_code == 415
    assert fake.requests == []


def test_a_provider_answer_too_large_to_read_whole_fails_over(tmp_path):
    from addon.answer_body import MAX_WHOLE_ANSWER
    from fakes import Raw
    huge = b'{"type": "message", "content": [{"type": "text", "text": "' + b"x" * MAX_WHOLE_ANSWER + b'"}]}'
    with FakeProvider() as flooding, FakeProvider() as second:
        flooding.default = Raw(huge, content_type="application/json", piece=1024 * 1024)
        process = BalancerProcess(tmp_path)
        process.write_providers([anthropic_provider("flooding", flooding.url),
                                 anthropic_provider("second", second.url)])
        with process:
            response = httpx.post(process.url + "/v1/messages", json=BODY, timeout=60)
            assert response.status_code == 200
            assert response.headers["x-balancer-provider"] == "second"
            assert flooding.requests[0].headers["accept-encoding"] == "identity"


def test_an_error_answer_sent_as_an_event_stream_is_redacted_and_bounded(tmp_path):
    from fakes import Raw
    with FakeProvider() as provider:
        echoed = b"event: error\ndata: bad request for key-of-p " + b"y" * 5000 + b"\n\n"
        provider.default = Raw(echoed, content_type="text/event-stream", status=400)
        process = BalancerProcess(tmp_path)
        process.write_providers([anthropic_provider("p", provider.url)])
        with process:
            response = httpx.post(process.url + "/v1/messages", json={**BODY, "stream": True}, timeout=30)
            assert response.status_code == 400
            assert "key-of-p" not in response.text and "[redacted]" in response.text
            assert len(response.content) < 2000


def test_the_session_map_keeps_a_digest_of_a_long_session_id():
    from addon.affinity import session_key
    long_id = "s" * 1_000_000
    key = session_key({"metadata": {"user_id": json.dumps({"session_id": long_id})}}, [])
    assert key is not None and len(key) < 100
    short = session_key({"metadata": {"user_id": json.dumps({"session_id": "4c1d-uuid"})}}, [])
    assert short == "session:4c1d-uuid"
