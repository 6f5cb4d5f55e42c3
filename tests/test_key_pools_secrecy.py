"""No key of a pool anywhere: seeded keys (echoed by the provider in error bodies and headers) are searched for in
the log and the JSON log file, every admin answer, /metrics, `balancer.status`, and every flow `mitmdump -w`
saved (attempt flows included); the keys must still reach the provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from mitmproxy import io
from mitmproxy.test import taddons

from addon.attempt_marker import ATTEMPT, is_attempt_flow
from addon.commands import BalancerCommands
from addon.providers import Providers
from balancer_proc import BalancerProcess, providers_yaml
from fakes import FakeProvider, Status
from test_key_pools import FIRST, Answer, ByKey, anthropic_limits

POOL = ["sk-ant-pool-seed-AAAA1111aaaa", "sk-ant-pool-seed-BBBB2222bbbb", "sk-ant-pool-seed-CCCC3333cccc"]
SECRET = "fingerprint-secret-DDDD4444dddd"
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}


def echoing(status: int, key: str) -> Status:
    return Status(status, {"type": "error", "error": {"type": "rate_limit_error", "message": f"key {key} is limited"}},
                  headers={"x-echo": key, "retry-after": "600"})


def flow_text(flow: Any) -> str:
    parts = [repr(flow.get_state())]
    for message in (flow.request, flow.response):
        if message is not None and message.raw_content:
            parts.append(message.get_text(strict=False) or "")
    return "\n".join(parts)


def assert_no_key(where: str, text: str) -> None:
    for secret in [*POOL, SECRET]:
        for piece in (secret, secret[-12:], secret[:16]):
            assert piece not in text, f"{piece!r} in {where}"


def test_no_pool_key_in_logs_admin_answers_metrics_or_saved_flows(tmp_path: Path):
    flows_file, log_file = tmp_path / "flows.mitm", tmp_path / "balancer.jsonl"
    fake = ByKey({POOL[0]: echoing(429, POOL[0]), POOL[1]: echoing(401, POOL[1]),
                  POOL[2]: Answer({**anthropic_limits(remaining=1), "x-echo": POOL[2]})})
    process = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file), "--set", "flow_detail=3"))
    with FakeProvider(fake) as upstream:
        process.write_providers(
            [{"name": "pool", "base_url": upstream.url,
              "auth_value": [{"value": POOL[0], "weight": FIRST}, {"value": POOL[1], "weight": 1000.0, "rpm": 5},
                             POOL[2]]}],
            log_level="DEBUG", log_file=str(log_file), attempt_flows="all", key_fingerprint_secret=SECRET,
        )
        answers: list[str] = []
        with process, httpx.Client(base_url=process.url, timeout=30) as http:
            for stream in (False, True, False):
                response = http.post("/v1/messages", json={**BODY, "stream": stream}, headers={"x-api-key": "c"})
                answers.append(f"{response.status_code} {response.headers} {response.text}")
            for path in ("/", "/providers", "/metrics"):
                answers.append(http.get(path).text)
            keys = http.get("/providers").json()["providers"][0]["keys"]
        assert fake.seen[:3] == POOL  # every key reached the provider as it is

    assert [k["key"] for k in keys] == ["#1", "#2", "#3"]
    assert all(len(k["fingerprint"]) == 6 for k in keys)
    assert keys[2]["passed_over"] == "headroom"
    assert_no_key("the answers", "\n".join(answers))
    assert_no_key("the log", process.log)
    assert "pool#1 HTTP 429" in process.log and "pool#2 HTTP 401" in process.log
    assert_no_key("the log file", log_file.read_text())
    with flows_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert len(flows) >= 9  # three requests and their six attempts, the admin calls
    for flow in flows:
        assert_no_key(f"the saved flow {flow.request.path}", flow_text(flow))
    attempts = [f.metadata[ATTEMPT] for f in flows if is_attempt_flow(f)]
    assert {(a["key"], a["outcome"][:8]) for a in attempts} >= {("#1", "HTTP 429"), ("#2", "HTTP 401"), ("#3", "200")}
    assert_no_key("the saved flows' file", flows_file.read_bytes().decode("utf-8", "replace"))


def test_no_pool_key_in_balancer_status(tmp_path: Path):
    file = tmp_path / "providers.yaml"
    file.write_text(providers_yaml(
        [{"name": "pool", "base_url": "http://127.0.0.1:9", "auth_value": POOL}], key_fingerprint_secret=SECRET))
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=str(file))
        subjects = providers.config.providers[0].key_subjects
        providers.board.record_failure(subjects[0], "HTTP 429 rate_limit_error", 60)
        providers.keys.observe(subjects[1], list(anthropic_limits(remaining=1).items()))
        text = tctx.master.commands.execute("balancer.status")
    lines = text.splitlines()
    assert lines[1].startswith("pool: healthy")
    assert lines[2].startswith("  #1 ") and "cooling down" in lines[2]
    assert lines[3].startswith("  #2 ") and "passed over (headroom)" in lines[3]
    fingerprint = providers.keys.fingerprints[subjects[2]]
    assert lines[4] == f"  #3 {fingerprint}: healthy | open 0"
    assert_no_key("balancer.status", text)
    assert_no_key("GET /providers", json.dumps(providers.keys.fingerprints))
