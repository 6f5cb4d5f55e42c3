"""Property: whatever path, method and headers a client sends, no provider is ever asked for a path outside its
base path's `/v1/`, and no seeded credential shows up in the log or in a saved flow."""

from __future__ import annotations

import socket
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import io as mitmproxy_io

from balancer_proc import BalancerProcess
from fakes import FakeProvider
from helpers import anthropic_provider, read_response

CLIENT_KEY = "client-key-fuzzing-a1b2c3d4"
ADMIN_KEY = "admin-key-fuzzing-e5f6a7b8"
PROVIDER_KEY = "provider-key-fuzzing-c9d0e1f2"
WRONG_KEY = "wrong-key-of-a-stranger-77"
SECRETS = (CLIENT_KEY, ADMIN_KEY, PROVIDER_KEY, WRONG_KEY)
BASE = "/base"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BalancerProcess, FakeProvider, Path]]:
    workdir = tmp_path_factory.mktemp("hardening-fuzz")
    flows = workdir / "flows.mitm"
    with FakeProvider() as fake:
        process = BalancerProcess(workdir, extra_args=("-w", str(flows)))
        process.write_providers(
            [anthropic_provider("p", fake.url + BASE, auth_value=PROVIDER_KEY)],
            client_keys=[CLIENT_KEY], admin_keys=[ADMIN_KEY],
        )
        with process:
            yield process, fake, flows


segments = st.lists(
    st.one_of(
        st.sampled_from(["v1", "messages", "count_tokens", "models", "providers", "reload", "metrics", "..", ".",
                         "%2e%2e", "%2E.", "%2f", "%5c", "%2F", "%00", "", "x;y", "a%41", "\\..", "files", "~"]),
        st.text(alphabet=string.ascii_letters + string.digits + "-._~%;:@!$&'()*+,=", max_size=8),
    ),
    max_size=6,
)
paths = st.builds(lambda segs, lead, query: lead + "/".join(segs) + query,
                  segments, st.sampled_from(["/", "//", "/v1/", "/v1/../", "/v1//"]),
                  st.sampled_from(["", "?beta=true", "?a=/../b", "?%2e%2e"]))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
# The caller's own (wrong) key is a credential where a credential goes (x-api-key, authorization, cookies); a
# configured key is one wherever it is.
credential_headers = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["x-api-key", "authorization", "X-Api-Key", "Authorization", "cookie"]),
                  st.sampled_from([CLIENT_KEY, ADMIN_KEY, WRONG_KEY, f"Bearer {CLIENT_KEY}", f"Bearer {WRONG_KEY}",
                                   f"Bearer {ADMIN_KEY}", "Basic " + WRONG_KEY])),
        st.tuples(st.sampled_from(["x-admin", "x-title", "anthropic-beta"]),
                  st.sampled_from([CLIENT_KEY, ADMIN_KEY, PROVIDER_KEY, f"prefix {ADMIN_KEY} suffix"])),
    ),
    max_size=3,
)
BODY = b'{"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}'


def send(port: int, method: str, path: str, headers: list[tuple[str, str]]) -> int:
    body = b"" if method in ("GET", "HEAD", "OPTIONS") else BODY
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers),
             "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status, _, _ = read_response(sock, method)
        return status


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, path=paths, headers=credential_headers)
def test_no_path_escapes_and_no_credential_is_kept(setup, method, path, headers):
    process, fake, _ = setup
    status = send(process.port, method, path, headers)
    assert 100 <= status < 600
    assert status != 502  # never mitmproxy's own error page: the balancer answered or a provider did
    for received in fake.requests:
        target = received.path.split("?", 1)[0]
        assert target.startswith(BASE + "/v1/"), received.path
        assert "/../" not in target and "/./" not in target and "//" not in target
        assert "%" not in target and "\\" not in target


def test_the_log_and_the_saved_flows_hold_no_seeded_credential(setup):
    """Sends requests of its own carrying every seeded credential in every place (so that it holds whichever worker
    runs it, and whether the property above ran first or not), then reads the log and the saved flows."""
    process, _, flows = setup
    for path in ("/v1/messages", "/v1/messages?beta=true", "/providers", "/v1/models", "/nowhere"):
        for key in (CLIENT_KEY, ADMIN_KEY, WRONG_KEY):
            for header in ("x-api-key", "authorization"):
                value = f"Bearer {key}" if header == "authorization" else key
                send(process.port, "POST" if "messages" in path else "GET", path,
                     [(header, value), ("x-title", PROVIDER_KEY), ("x-admin", f"prefix {ADMIN_KEY} suffix")])
    for secret in SECRETS:
        assert secret not in process.log
    process.stop()  # flushes the saved flows
    with flows.open("rb") as handle:
        saved = list(mitmproxy_io.FlowReader(handle).stream())
    assert saved, "no flow was saved"
    for flow in saved:
        text = repr(flow.get_state())
        for secret in SECRETS:
            assert secret not in text, f"{secret} in a saved flow {flow.request.method} {flow.request.path}"
