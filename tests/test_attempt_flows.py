"""Every provider attempt as a flow of its own (issue 19), through the real mitmdump with `-w`: the client flow
shows what the client sent and which attempt served it; each attempt's flow holds the request as the provider got
it and the provider's answer as it came (or the error that kept it from coming), linked both ways, no credential.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
from mitmproxy import io

from addon.attempt_marker import ATTEMPT, is_attempt_flow
from balancer_proc import BalancerProcess, anthropic_provider
from fakes import FakeProvider, Raw, Status, closed_port
from openai_golden import GOLDEN
from test_openai_e2e import openai_provider

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
        {**anthropic_provider("down", f"http://127.0.0.1:{closed_port()}"), "auth_value": KEYS["down"]},
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
    assert "[redacted]" in (client_flow.request.headers.get("x-api-key"), client_flow.request.headers.get("authorization"))
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
