"""No credential in any flow that mitmweb shows or `mitmdump -w` saves, nor in the log, nor in an answer.

The real mitmdump runs with `-w`; every kind of answer is produced once (relayed ones, failovers, and each one the
balancer makes itself), with distinctive keys seeded everywhere a key can be: the providers' credentials, client
and admin keys, a wrong key an unauthorised caller sends, in `x-api-key` and in `Authorization: Bearer`, and
providers that echo their key in response headers and error bodies. Then every saved flow (headers, bodies,
comment, metadata, the raw file) and the whole log are searched for each key.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from mitmproxy import io
from mitmproxy.tools.web import webaddons

from addon.attempt_marker import is_attempt_flow
from addon.errors import MAX_MESSAGE_CHARS
from balancer_proc import ADDON, MITMDUMP, BalancerProcess
from fakes import FakeProvider, Message, Raw, Status, Stream, openai_json
from helpers import anthropic_message, anthropic_provider, free_port, stream_events, wait_until

KEYS = {
    "busy": "sk-prov-busy-1111111111",
    "echo": "sk-prov-echo-2222222222",
    "oa": "sk-prov-openai-3333333333",
}
CLIENT_KEY = "sk-client-4444444444"
ADMIN_KEY = "sk-admin-5555555555"
WRONG_KEY = "sk-wrong-6666666666"  # configured nowhere: only hiding it by header name keeps it out
OWN_KEY = "sk-own-7777777777"  # a passthrough client's own key
EXTRA_SECRET = "sk-extra-8888888888"  # a credential header the client sends besides its key
SECRETS = [*KEYS.values(), CLIENT_KEY, ADMIN_KEY, WRONG_KEY]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
EVIL = (
    "bad request\nreq deadbeef messages claude-sonnet-4 -> echo/claude-sonnet-4 200 | attempts: echo 200 1ms\r\n"
    "\x1b[2K\x1b[31mkey {key} refused\x1b[0m " + "x" * 3000
)


def echo_headers(name: str) -> dict[str, str]:
    return {"x-echo": KEYS[name], "x-echo-bearer": f"Bearer {KEYS[name]}", "x-plain": "nothing secret"}


def client(key: str = CLIENT_KEY, bearer: bool = False) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if bearer else {"x-api-key": key}


def flow_text(flow: Any) -> str:
    """Everything a saved flow holds, as text: its whole serialized state and the decoded bodies."""
    parts = [repr(flow.get_state())]
    for message in (flow.request, flow.response):
        if message is not None and message.raw_content:
            parts.append(message.get_text(strict=False) or "")
    return "\n".join(parts)


def read_flows(path: Path) -> list[Any]:
    with path.open("rb") as f:
        return list(io.FlowReader(f).stream())


@pytest.fixture
def fakes_for_flows():
    busy, echo, oa = FakeProvider(), FakeProvider(), FakeProvider()
    busy.default = Status(529, {"type": "error", "error": {"type": "overloaded_error",
                                                           "message": f"overloaded, key {KEYS['busy']}"}},
                          headers=echo_headers("busy"))
    with busy, echo, oa:
        yield busy, echo, oa


def test_no_credential_in_any_saved_flow_log_or_answer(tmp_path, fakes_for_flows):
    busy, echo, oa = fakes_for_flows
    flows_file, log_file = tmp_path / "flows.mitm", tmp_path / "balancer.jsonl"
    providers = [
        {**anthropic_provider("busy", busy.url), "auth_value": KEYS["busy"]},
        {**anthropic_provider("echo", echo.url), "auth_type": "auth_token", "auth_value": KEYS["echo"]},
    ]
    settings = {"client_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "max_body_size": 4000, "count_tokens": "local",
                    "log_level": "DEBUG", "log_file": str(log_file)}
    echo.then(
        Raw(json.dumps(anthropic_message("claude-sonnet-4", "Hello")).encode(), content_type="application/json",
            headers=echo_headers("echo")),
        Raw(b"".join(stream_events("claude-sonnet-4")), headers=echo_headers("echo")),
        Status(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": EVIL.format(key=KEYS["echo"])}},
               headers=echo_headers("echo")),
        Status(404, {"type": "error", "error": {"type": "not_found_error",
                                                "message": EVIL.format(key=KEYS["echo"])}},
               headers=echo_headers("echo")),
    )
    echo.default = Message()
    # A balancer's own answers are fine; the point is what the flows keep of them.
    process = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file), "--set", "flow_detail=3"))
    process.write_providers(providers, **settings)
    answers: dict[str, httpx.Response] = {}
    with process, httpx.Client(base_url=process.url, timeout=30) as http:
        def call(label: str, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
            answers[label] = http.request(method, path, headers=headers, **kwargs)
            return answers[label]

        # Relayed: a failover past `busy` (529, echoing its key), then a stream, then a 400 passed on.
        assert call("failover", "POST", "/v1/messages", {**client(), "x-title": "t"}, json=BODY).status_code == 200
        assert call("stream", "POST", "/v1/messages", client(bearer=True), json={**BODY, "stream": True}) \
            .status_code == 200
        assert call("relayed 400", "POST", "/v1/messages", client(), json=BODY).status_code == 400
        assert call("relayed 404", "GET", "/v1/files/file_none", client()).status_code == 404  # another endpoint
        # Answered by the balancer itself.
        assert call("count", "POST", "/v1/messages/count_tokens", client(), json=BODY).status_code == 200
        assert call("401 x-api-key", "POST", "/v1/messages", client(WRONG_KEY), json=BODY).status_code == 401
        assert call("401 bearer", "POST", "/v1/messages", client(WRONG_KEY, bearer=True), json=BODY).status_code == 401
        assert call("401 admin", "GET", "/providers", client(CLIENT_KEY)).status_code == 401
        assert call("400", "POST", "/v1/messages", client(), json={"model": "m"}).status_code == 400
        assert call("404", "GET", "/nowhere", client()).status_code == 404
        assert call("404 model", "GET", "/v1/models/none-such", client(bearer=True)).status_code == 404
        assert call("405", "GET", "/v1/messages", client()).status_code == 405
        assert call("405 admin", "POST", "/", client(ADMIN_KEY)).status_code == 405
        assert call("413", "POST", "/v1/messages", client(), content=b"x" * 5000).status_code == 413
        assert call("health", "GET", "/", client(ADMIN_KEY, bearer=True)).status_code == 200
        assert call("providers", "GET", "/providers", client(ADMIN_KEY)).status_code == 200
        assert call("metrics", "GET", "/metrics", client(ADMIN_KEY, bearer=True)).status_code == 200
        assert call("models", "GET", "/v1/models", client()).status_code == 200
        # An OpenAI-type provider: an error inside a 200 answer (OpenRouter's way), echoing its key, then a 529
        # that leaves no provider: the balancer's own 529 (overloaded, issue 12).
        oa.then(openai_json({"error": {"message": f"invalid key {KEYS['oa']}", "code": 401}},
                            **{"x-request-id": KEYS["oa"]}),
                openai_json({"error": {"message": f"overloaded {KEYS['oa']}"}}, status=529))
        process.write_providers([{"name": "oa", "type": "openai", "base_url": oa.url + "/v1",
                                  "auth_value": KEYS["oa"], "big_model": "gpt-big"}], **settings)
        assert call("reload", "POST", "/providers/reload", client(ADMIN_KEY)).status_code == 200
        assert call("openai 401", "POST", "/v1/messages", client(), json=BODY).status_code == 401
        assert call("529", "POST", "/v1/messages", client(bearer=True), json=BODY).status_code == 529

    # What the clients got.
    assert answers["failover"].headers["x-echo"] == "[redacted]"
    assert answers["failover"].headers["x-echo-bearer"] == "Bearer [redacted]"
    assert answers["failover"].headers["x-plain"] == "nothing secret"
    assert answers["stream"].headers["x-echo"] == "[redacted]"
    for label in ("relayed 400", "relayed 404"):
        relayed = answers[label].json()["error"]["message"]
        assert relayed.startswith("bad request\nreq deadbeef") and len(relayed) <= MAX_MESSAGE_CHARS
        assert answers[label].headers["x-echo"] == "[redacted]"
    assert answers["openai 401"].headers["x-request-id"] == "[redacted]"
    for label, answer in answers.items():
        for secret in SECRETS:
            assert secret not in answer.text and secret not in str(answer.headers), (label, secret)

    # What the providers got: each its own key, never a client's.
    assert {r.headers["x-api-key"] for r in busy.requests} == {KEYS["busy"]}
    assert {r.headers["authorization"] for r in echo.requests} == {f"Bearer {KEYS['echo']}"}
    assert {r.headers["authorization"] for r in oa.requests} == {f"Bearer {KEYS['oa']}"}
    for fake in (busy, echo, oa):
        assert all(CLIENT_KEY not in str(r.headers) for r in fake.requests)

    flows = read_flows(flows_file)
    statuses = {flow.response.status_code for flow in flows if flow.response}
    assert {200, 400, 401, 404, 405, 413, 529} <= statuses
    # One flow per request, and one per provider attempt (busy's 529 echoing its key among them). Requests are
    # counted by id: mitmproxy's -w can write a flow twice (a body streamed past max_body_size and answered 413
    # before it is all sent reaches the `request` hook after `response`, and is written again at exit).
    assert len({flow.id for flow in flows if not is_attempt_flow(flow)}) == len(answers)
    attempts = [flow for flow in flows if is_attempt_flow(flow)]
    assert any(flow.response and flow.response.status_code == 529 and flow.request.url.startswith(busy.url)
               for flow in attempts)
    for flow in flows:
        text = flow_text(flow)
        for secret in SECRETS:
            assert secret not in text, (flow.request.method, flow.request.path, secret)
        for name in ("x-api-key", "authorization"):
            assert flow.request.headers.get(name) in (None, "[redacted]"), (flow.request.path, name)
    # The callers' keys were there, and show as redacted: the refused caller's wrong key too.
    refused = [flow for flow in flows if flow.response and flow.response.status_code == 401
               and flow.request.path.startswith("/v1/messages") and "balancer" not in flow.metadata]
    assert sorted(name for flow in refused for name in ("x-api-key", "authorization") if name in flow.request.headers) \
        == ["authorization", "x-api-key"]
    assert all(flow.request.headers.get(n, "[redacted]") == "[redacted]" for flow in refused
               for n in ("x-api-key", "authorization"))

    raw = flows_file.read_bytes()
    whole_log = process.log + "\n" + log_file.read_text()
    for secret in SECRETS:
        assert secret.encode() not in raw
        assert secret not in whole_log
    assert "x-echo: [redacted]" in process.log  # mitmdump printed the answers' headers (flow_detail=3)


def test_a_passthrough_provider_still_gets_the_clients_own_credential(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeProvider() as own:
        process = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file), "--set", "flow_detail=3"))
        process.write_providers([{**anthropic_provider("own", own.url), "auth_value": "passthrough"}])
        with process, httpx.Client(base_url=process.url, timeout=30) as http:
            for headers in (client(OWN_KEY), client(OWN_KEY, bearer=True)):
                answer = http.post("/v1/messages", headers={**headers, "x-goog-api-key": EXTRA_SECRET}, json=BODY)
                assert answer.status_code == 200
            assert http.get("/nowhere", headers=client(OWN_KEY)).status_code == 404  # answered by the balancer
    first, second = own.requests
    assert first.headers["x-api-key"] == OWN_KEY and second.headers["authorization"] == f"Bearer {OWN_KEY}"
    assert first.headers["x-goog-api-key"] == second.headers["x-goog-api-key"] == EXTRA_SECRET
    every_flow = read_flows(flows_file)
    flows = [flow for flow in every_flow if not is_attempt_flow(flow)]
    assert len(flows) == 3 and len(every_flow) == 5  # and each provider attempt's own flow
    for flow in every_flow:
        for secret in (OWN_KEY, EXTRA_SECRET):
            assert secret not in flow_text(flow)
    for secret in (OWN_KEY, EXTRA_SECRET):
        assert secret.encode() not in flows_file.read_bytes() and secret not in process.log
    assert flows[0].request.headers["x-goog-api-key"] == "[redacted]"
    assert flows[2].request.headers["x-api-key"] == "[redacted]"
    assert json.loads(flows[0].response.content)["content"][0]["text"] == "Hello"


def test_mitmweb_never_shows_a_key_even_while_the_providers_are_tried(tmp_path):
    """mitmweb takes a flow when its request headers arrive: from that moment on, through the providers' attempts
    and after the answer, its API (what the UI reads, and its flow dump) holds no key."""
    web_port, token = free_port(), "web-token-for-this-test"
    # mitmweb asks for a token from 11.1 on (the Python 3.11 suite resolves 11.0.2, which has none).
    web_auth = ["--set", f"web_password={token}"] if hasattr(webaddons, "WebAuth") else []
    release = threading.Event()
    with FakeProvider() as slow:
        slow.then(Stream(gate=release, gate_after=0))  # headers, then nothing until released
        process = BalancerProcess(tmp_path, command=[
            str(MITMDUMP.with_name("mitmweb")), "-s", str(ADDON), "--mode", "reverse:https://api.anthropic.com",
            "--listen-host", "127.0.0.1", "--listen-port", "0", "--set", f"providers={tmp_path / 'providers.yaml'}",
            "--set", f"web_port={web_port}", "--set", "web_open_browser=false", *web_auth,
        ])
        process.write_providers([{**anthropic_provider("slow", slow.url), "auth_value": KEYS["echo"]}],
                                client_keys=[CLIENT_KEY])
        with process, httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=10,
                                   headers={"authorization": f"Bearer {token}"}) as web:
            proxy_line = next(line for line in process.log_lines if "reverse proxy" in line)
            process.port = int(proxy_line.rsplit(":", 1)[1].rstrip("."))
            answers: list[httpx.Response] = []
            caller = threading.Thread(target=lambda: answers.append(
                httpx.post(process.url + "/v1/messages", headers=client(), json={**BODY, "stream": True}, timeout=30)))
            caller.start()
            try:
                wait_until(lambda: len(slow.requests) == 1, what="the provider to be asked")
                in_flight = web.get("/flows").json()
                assert len(in_flight) == 1 and in_flight[0].get("response") is None
                assert ["x-api-key", "[redacted]"] in in_flight[0]["request"]["headers"]
                seen = [web.get("/flows").text, web.get("/flows/dump").content]
            finally:
                release.set()
                caller.join(30)
            assert answers[0].status_code == 200
            wait_until(lambda: web.get("/flows").json()[0].get("response") is not None, what="the flow to end")
            seen += [web.get("/flows").text, web.get("/flows/dump").content]
    assert slow.requests[-1].headers["x-api-key"] == KEYS["echo"]
    for text in seen:
        for secret in (CLIENT_KEY, KEYS["echo"]):
            assert (secret.encode() if isinstance(text, bytes) else secret) not in text
