"""Every provider attempt as a flow of its own (issue 19), through the real mitmdump with `-w`: the client flow
shows what the client sent and which attempt served it; each attempt's flow holds the request as the provider got
it and the provider's answer as it came (or the error that kept it from coming), linked both ways, no credential.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import io
from mitmproxy.tools.web import webaddons
from prometheus_client.parser import text_string_to_metric_families

from addon.attempt_marker import ATTEMPT, is_attempt_flow
from balancer_proc import ADDON, MITMDUMP, BalancerProcess
from fakes import FakeProvider, Hang, Message, Raw, RawStream, Status, openai_json
from fuzzing import depths
from helpers import FIRST_DELTA, anthropic_provider, free_port, openai_provider, stream_events, wait_until
from openai_golden import GOLDEN

KEYS = {"busy": "sk-ant-busy-key-1111111111", "down": "sk-ant-down-key-2222222222", "oa": "sk-oa-key-3333333333"}
CLIENT_KEY = "sk-ant-client-own-key-4444444444"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
TEXT_ONLY = next(g for g in GOLDEN if g.name == "text_only")


def read_flows(path: Path) -> list[Any]:
    with path.open("rb") as f:
        return list(io.FlowReader(f).stream())


def failover_balancer(tmp_path: Path, busy: FakeProvider, oa: FakeProvider, *extra: str, **settings: Any):
    flows_file = tmp_path / "flows.mitm"
    balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file), *extra))
    balancer.write_providers([
        {**anthropic_provider("busy", busy.url), "auth_value": KEYS["busy"]},
        {**anthropic_provider("down", f"http://127.0.0.1:{free_port()}"), "auth_value": KEYS["down"]},
        {**openai_provider("oa", oa.url), "auth_value": KEYS["oa"]},
    ], **settings)
    return balancer, flows_file


def ask_streamed(balancer: BalancerProcess) -> str:
    with anthropic.Anthropic(base_url=balancer.url, api_key=CLIENT_KEY, max_retries=0, timeout=30) as client, \
            client.messages.stream(model="claude-sonnet-4", max_tokens=64,
                                   messages=[{"role": "user", "content": "Say hello."}]) as stream:
        return stream.get_final_text()


def test_a_failover_saves_the_client_flow_and_one_flow_per_attempt(tmp_path):
    with FakeProvider(Status(529, OVERLOADED, headers={"x-echo": KEYS["busy"]})) as busy, \
            FakeProvider(Raw(TEXT_ONLY.stream, piece=7)) as oa:
        balancer, flows_file = failover_balancer(tmp_path, busy, oa)
        with balancer:
            text = ask_streamed(balancer)
    assert text  # the client got its answer, from the OpenAI-type provider

    flows = read_flows(flows_file)
    (client_flow,) = [f for f in flows if not is_attempt_flow(f)]
    attempts = sorted((f for f in flows if is_attempt_flow(f)), key=lambda f: f.metadata[ATTEMPT]["attempt"])
    assert len(attempts) == 3
    request_id = client_flow.id[:8]

    # The client flow shows what the client sent (not the provider's request), and who served it.
    assert client_flow.request.host == "api.anthropic.com" and client_flow.request.path == "/v1/messages"
    sent_credentials = (client_flow.request.headers.get("x-api-key"), client_flow.request.headers.get("authorization"))
    assert "[redacted]" in sent_credentials
    assert json.loads(client_flow.request.content)["model"] == "claude-sonnet-4"
    assert client_flow.response.status_code == 200
    assert client_flow.comment.startswith("served by oa (attempt 3 of 3) after busy: HTTP 529 overloaded_error")
    linked = [a.get("flow") for a in client_flow.metadata["balancer"]["attempts"]]
    assert linked == [f.id for f in attempts]

    busy_flow, down_flow, oa_flow = attempts
    for position, f in enumerate(attempts, start=1):
        meta = f.metadata[ATTEMPT]
        assert (meta["client_flow"], meta["request_id"], meta["attempt"], meta["of"]) == \
            (client_flow.id, request_id, position, 3)
        assert f.comment.startswith(f"attempt {position} of 3 for req {request_id}: ")
        assert not f.live

    # 1: the 529 as it came, to busy's own URL, with busy's (redacted) credential and the model as mapped.
    assert busy_flow.request.url == f"{busy.url}/v1/messages"
    assert busy_flow.request.headers["x-api-key"] == "[redacted]"
    assert json.loads(busy_flow.request.content)["model"] == "claude-sonnet-4"
    assert busy_flow.response.status_code == 529
    assert json.loads(busy_flow.response.content) == OVERLOADED
    assert busy_flow.response.headers["x-echo"] == "[redacted]"  # the provider echoed its key
    assert busy_flow.comment == f"attempt 1 of 3 for req {request_id}: HTTP 529 overloaded_error: Overloaded"
    assert busy_flow.metadata[ATTEMPT]["failed"] is True and busy_flow.metadata[ATTEMPT]["served"] is False

    # 2: nothing answered: the flow's error says why.
    assert down_flow.response is None
    assert "refused" in down_flow.error.msg
    assert down_flow.request.headers["x-api-key"] == "[redacted]"
    assert down_flow.comment.startswith(f"attempt 2 of 3 for req {request_id}: connection refused")

    # 3: the translated request and the raw OpenAI chunks, byte for byte.
    assert oa_flow.request.url == f"{oa.url}/v1/chat/completions"
    assert oa_flow.request.headers["authorization"] == "[redacted]"
    sent = json.loads(oa_flow.request.content)
    assert sent["model"] == "gpt-big" and sent["stream"] is True
    assert sent["messages"] == [{"role": "user", "content": "Say hello."}]
    assert oa_flow.response.status_code == 200
    assert oa_flow.response.raw_content == TEXT_ONLY.stream
    assert oa_flow.metadata[ATTEMPT]["served"] is True
    assert oa_flow.metadata[ATTEMPT]["answer_bytes"] == {
        "kept": len(TEXT_ONLY.stream), "read": len(TEXT_ONLY.stream), "cut": False
    }
    assert oa_flow.comment == f"attempt 3 of 3 for req {request_id}: 200 (served the client)"
    assert oa.requests[0].json() == sent  # what the flow shows is what the provider received

    raw = flows_file.read_bytes()
    for secret in (*KEYS.values(), CLIENT_KEY):
        assert secret.encode() not in raw
        assert secret not in balancer.log


def test_a_streamed_answer_over_the_bound_is_cut_and_says_so(tmp_path):
    limit = 100
    with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(TEXT_ONLY.stream, piece=7)) as oa:
        balancer, flows_file = failover_balancer(tmp_path, busy, oa, attempt_body_limit=limit)
        with balancer:
            assert ask_streamed(balancer)
    served = next(f for f in read_flows(flows_file) if is_attempt_flow(f) and f.metadata[ATTEMPT]["served"])
    assert served.response.raw_content == TEXT_ONLY.stream[:limit]
    assert served.metadata[ATTEMPT]["answer_bytes"] == {"kept": limit, "read": len(TEXT_ONLY.stream), "cut": True}
    assert served.comment.endswith(f"; answer body cut at {limit} of {len(TEXT_ONLY.stream)} bytes read")


def test_a_long_answer_within_the_bound_is_kept_whole(tmp_path):
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "word "}}]}
    last = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    long_stream = (b"data: " + json.dumps(chunk).encode() + b"\n\n") * 1500 \
        + b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n"
    assert 100_000 < len(long_stream) < 256 * 1024
    with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(long_stream, piece=4096)) as oa:
        balancer, flows_file = failover_balancer(tmp_path, busy, oa)
        with balancer:
            assert ask_streamed(balancer) == "word " * 1500
    served = next(f for f in read_flows(flows_file) if is_attempt_flow(f) and f.metadata[ATTEMPT]["served"])
    assert served.response.raw_content == long_stream
    assert served.comment.endswith("200 (served the client)")

def test_only_failed_attempts_get_flows_when_told_and_none_when_off(tmp_path):
    for mode, expected in (("failed", [1, 2]), ("none", [])):
        workdir = tmp_path / mode
        workdir.mkdir()
        with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(TEXT_ONLY.stream)) as oa:
            balancer, flows_file = failover_balancer(workdir, busy, oa, attempt_flows=mode)
            with balancer:
                assert ask_streamed(balancer)
        flows = read_flows(flows_file)
        assert sorted(f.metadata[ATTEMPT]["attempt"] for f in flows if is_attempt_flow(f)) == expected
        (client_flow,) = [f for f in flows if not is_attempt_flow(f)]
        assert [("flow" in a) for a in client_flow.metadata["balancer"]["attempts"]] == \
            [n in expected for n in (1, 2, 3)]


def test_a_timeout_a_client_that_left_and_a_failure_mid_stream_each_show_on_their_attempt(tmp_path):
    """With `failed`: a provider silent past request_timeout (the flow's error says so), an attempt cancelled
    because the client left, and a stream that broke after it reached the client (the attempt that served it,
    flowed once the request is over, with what it sent before breaking)."""
    flows_file = tmp_path / "flows.mitm"
    opening = stream_events(pieces=["partial"])[: FIRST_DELTA + 1]
    silent, silent_too, breaking = Hang(), Hang(), RawStream(opening, ending="drop")
    with FakeProvider(silent) as slow, FakeProvider(Message()) as good, FakeProvider(silent_too) as hanging, \
            FakeProvider(breaking) as broken:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([anthropic_provider("slow", slow.url), anthropic_provider("good", good.url)],
                                 request_timeout=1, attempt_flows="failed")
        body = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with balancer, httpx.Client(base_url=balancer.url, timeout=30) as client:
                assert client.post("/v1/messages", json=body).status_code == 200  # slow timed out, good served
                balancer.use([anthropic_provider("hanging", hanging.url)], request_timeout=60, attempt_flows="failed")
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(balancer.url + "/v1/messages", json=body, timeout=1)
                wait_until(lambda: "status client gone" in balancer.log or " client gone |" in balancer.log)
                balancer.use([anthropic_provider("broken", broken.url)], attempt_flows="failed")
                with client.stream("POST", "/v1/messages", json={**body, "stream": True}) as answer:
                    streamed = b"".join(answer.iter_bytes())
                assert b"event: error" in streamed
                wait_until(lambda: "failed mid-stream" in balancer.log)
        finally:
            silent.release.set()
            silent_too.release.set()
    attempts = {f.metadata[ATTEMPT]["provider"]: f for f in read_flows(flows_file) if is_attempt_flow(f)}
    assert set(attempts) == {"slow", "hanging", "broken"}  # not good's, which served its request
    assert attempts["slow"].error.msg == "no response headers within 1s" and attempts["slow"].response is None
    assert attempts["hanging"].error.msg == "the client left before an answer: the attempt was cancelled"
    mid_stream = attempts["broken"]
    assert mid_stream.response.status_code == 200 and mid_stream.response.raw_content == b"".join(opening)
    assert mid_stream.metadata[ATTEMPT]["served"] and mid_stream.metadata[ATTEMPT]["failed"]
    assert ", then stream_error: " in mid_stream.comment

WEB_TOKEN = "web-token-for-attempt-flows"


def under_mitmweb(balancer: BalancerProcess, web_port: int) -> BalancerProcess:
    web_auth = ["--set", f"web_password={WEB_TOKEN}"] if hasattr(webaddons, "WebAuth") else []
    balancer.command = [
        str(MITMDUMP.with_name("mitmweb")), "-s", str(ADDON), "--mode", "reverse:https://api.anthropic.com",
        "--listen-host", "127.0.0.1", "--listen-port", "0", "--set", f"providers={balancer.providers_file}",
        "--set", f"web_port={web_port}", "--set", "web_open_browser=false", *web_auth,
    ]
    return balancer


def web_client(balancer: BalancerProcess, web_port: int) -> httpx.Client:
    """mitmweb's API (what its UI uses); the balancer's port taken from mitmweb's start-up line."""
    proxy_line = next(line for line in balancer.log_lines if "reverse proxy" in line)
    balancer.port = int(proxy_line.rsplit(":", 1)[1].rstrip("."))
    # Tornado's XSRF check on posts: the header must match the cookie.
    return httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=10, headers={
        "authorization": f"Bearer {WEB_TOKEN}", "x-xsrftoken": "x", "cookie": "_mitmproxy_xsrf=x"})


def finished_flows(web: httpx.Client, count: int) -> list[dict[str, Any]]:
    flows = web.get("/flows").json()
    return flows if len([f for f in flows if f.get("response") or f.get("error")]) == count else []


def test_mitmweb_lists_every_attempt_by_default(tmp_path):
    """Under mitmweb (which keeps flows) every attempt gets its flow without any setting; the client flow's
    comment says which attempt served it, each attempt's comment whose request it belongs to."""
    web_port = free_port()
    with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(TEXT_ONLY.stream)) as oa:
        balancer = under_mitmweb(failover_balancer(tmp_path, busy, oa)[0], web_port)
        with balancer, web_client(balancer, web_port) as web:
            assert ask_streamed(balancer)
            wait_until(lambda: finished_flows(web, 4))
            flows = finished_flows(web, 4)
    (client_flow,) = [f for f in flows if f["comment"].startswith("served by")]
    request_id = client_flow["id"][:8]
    assert client_flow["comment"].startswith("served by oa (attempt 3 of 3) after busy: HTTP 529")
    attempts = sorted(f["comment"] for f in flows if f is not client_flow)
    assert [c.split(":")[0] for c in attempts] == [f"attempt {n} of 3 for req {request_id}" for n in (1, 2, 3)]
    by_comment = {f["comment"].split(":")[0]: f for f in flows}
    assert by_comment[f"attempt 1 of 3 for req {request_id}"]["response"]["status_code"] == 529
    assert "refused" in by_comment[f"attempt 2 of 3 for req {request_id}"]["error"]["msg"]
    assert by_comment[f"attempt 3 of 3 for req {request_id}"]["request"]["path"] == "/v1/chat/completions"


def test_a_replayed_attempt_goes_to_its_provider_as_shown_and_the_balancer_leaves_it_alone(tmp_path):
    """mitmweb's Replay of an attempt's flow sends that request to that provider as the flow shows it (its
    credentials `[redacted]`: whoever replays edits them in first): the balancer neither refuses it (client keys),
    nor answers, balances, logs or counts it."""
    web_port = free_port()
    with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(TEXT_ONLY.stream)) as oa:
        balancer = under_mitmweb(failover_balancer(tmp_path, busy, oa, client_keys=[CLIENT_KEY])[0], web_port)
        with balancer, web_client(balancer, web_port) as web:
            assert ask_streamed(balancer)
            wait_until(lambda: finished_flows(web, 4))
            first = next(f for f in finished_flows(web, 4) if f["comment"].startswith("attempt 1 of 3"))
            metrics_before = counted(httpx.get(balancer.url + "/metrics", timeout=10,
                                               headers={"x-api-key": CLIENT_KEY}).text)
            web.post(f"/flows/{first['id']}/replay").raise_for_status()
            wait_until(lambda: len(busy.requests) == 2)
            wait_until(lambda: finished_flows(web, 5))  # the replay's own flow, answered by busy
            replayed_flow = next(f for f in finished_flows(web, 5) if f["is_replay"] == "request")
            metrics_after = counted(httpx.get(balancer.url + "/metrics", timeout=10,
                                              headers={"x-api-key": CLIENT_KEY}).text)
            log = balancer.log
    original, replayed = busy.requests
    assert replayed.path == "/v1/messages" and replayed.headers["x-api-key"] == "[redacted]"
    assert replayed.json() == original.json()
    assert replayed_flow["response"]["status_code"] == 529  # busy's own answer, not one of the balancer's
    assert len(oa.requests) == 1  # nothing was balanced
    assert log.count(" | attempts: ") == 1  # one request line: the original request's
    assert metrics_after == metrics_before


def test_a_bare_mitmdump_shows_only_the_failed_attempts(tmp_path):
    """mitmdump without -w keeps no flow: by default it gets (and prints) the failed attempts only."""
    with FakeProvider(Status(529, OVERLOADED)) as busy, FakeProvider(Raw(TEXT_ONLY.stream)) as oa:
        balancer, _ = failover_balancer(tmp_path, busy, oa)
        balancer.extra_args = ()  # no -w
        with balancer:
            assert ask_streamed(balancer)
            # The request's log line comes once every attempt flow that was made has gone through the hooks.
            wait_until(lambda: "| attempts: busy HTTP 529" in balancer.log and "<< 529" in balancer.log)
        printed = balancer.log
    assert f"POST {busy.url}/v1/messages\n" in printed  # the failed attempts, as mitmdump prints a flow
    assert "<< connection refused" in printed
    assert f"{oa.url}/v1/chat/completions" not in printed  # the attempt that served the client: no flow


# -- the property: attempt flows change nothing the balancer logs or counts ---------------------------------------

BEHAVIORS = ("529", "500", "refused", "anthropic", "openai", "openai 429")


def provider_for(kind: str, name: str, stream: bool, started: list[FakeProvider]) -> dict[str, Any]:
    if kind == "refused":
        return anthropic_provider(name, f"http://127.0.0.1:{free_port()}")
    behavior: Any = {
        "529": Status(529, OVERLOADED),
        "500": Status(500),
        "anthropic": Message(),
        "openai": Raw(TEXT_ONLY.stream, piece=11) if stream else openai_json(TEXT_ONLY.completion or {}),
        "openai 429": openai_json({"error": {"message": "slow down"}}, status=429),
    }[kind]
    fake = FakeProvider(behavior).start()
    started.append(fake)
    if kind.startswith("openai"):
        return openai_provider(name, fake.url)
    return anthropic_provider(name, fake.url)


def counted(metrics_text: str) -> Counter[str]:
    """Every counter and histogram count, summed over its labels (the providers' names differ between runs)."""
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")):
                totals[sample.name] += sample.value
    return totals


@depths(30)
def test_attempt_flows_change_no_log_line_and_no_metric(tmp_path, examples):
    """The same requests with attempt flows off and on: as many log lines and the same metric increments (and
    with them on, the attempts' flows really were made: one per attempt in the saved file)."""
    flows_file, log_file = tmp_path / "flows.mitm", tmp_path / "balancer.jsonl"
    balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
    balancer.write_providers([anthropic_provider("placeholder", "http://127.0.0.1:9")], log_file=str(log_file))
    runs = iter(range(1_000_000))
    attempts_made_with_flows_on = 0

    def log_lines() -> list[str]:
        return log_file.read_text().splitlines() if log_file.exists() else []

    def run(kinds: list[str], stream: bool, mode: str) -> tuple[int, Counter[str], int]:
        """(log lines, metric increments, attempts) of one request through providers that behave as `kinds`."""
        started: list[FakeProvider] = []
        try:
            n = next(runs)
            providers = [provider_for(kind, f"r{n}-{i}", stream, started) for i, kind in enumerate(kinds)]
            balancer.use(providers, log_file=str(log_file), attempt_flows=mode)
            lines_before = len(log_lines())
            metrics_before = counted(httpx.get(balancer.url + "/metrics", timeout=10).text)
            body = {"model": "claude-sonnet-4", "max_tokens": 16, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(timeout=30) as client:
                answer = client.post(balancer.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY})
                answer.read()
            wait_until(lambda: any('"request"' in line for line in log_lines()[lines_before:]))
            new = log_lines()[lines_before:]
            request_line = json.loads(next(line for line in new if '"request"' in line))["request"]
            metrics_after = counted(httpx.get(balancer.url + "/metrics", timeout=10).text)
            return len(new), metrics_after - metrics_before, len(request_line["attempts"])
        finally:
            for fake in started:
                fake.stop()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(kinds=st.lists(st.sampled_from(BEHAVIORS), min_size=1, max_size=3), stream=st.booleans(),
           on_first=st.booleans())
    def same_with_and_without(kinds: list[str], stream: bool, on_first: bool) -> None:
        nonlocal attempts_made_with_flows_on
        modes = ["all", "none"] if on_first else ["none", "all"]
        results = {mode: run(kinds, stream, mode) for mode in modes}
        assert results["all"] == results["none"], (kinds, stream)
        attempts_made_with_flows_on += results["all"][2]

    with balancer:
        same_with_and_without()
    saved = read_flows(flows_file)
    assert len([f for f in saved if is_attempt_flow(f)]) == attempts_made_with_flows_on > 0


