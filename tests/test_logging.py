"""The log: one line per request with what happened, JSON lines on request, and never a credential."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from balancer_proc import BalancerProcess
from fakes import FakeProvider, Message, Status, Stream
from helpers import anthropic_provider

SECRETS = {"alpha": "sk-ant-SECRET-alpha-0001", "beta": "sk-ant-SECRET-beta-0002", "env": "sk-ENVSECRET-0003"}
CLIENT_KEY = "sk-ant-CLIENTKEY-0004"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A balancer at DEBUG with a JSON-lines log file, driven through failovers, errors and streams."""
    workdir = tmp_path_factory.mktemp("logging")
    log_file = workdir / "balancer.jsonl"
    with FakeProvider(Status(401)) as refusing, FakeProvider(Message("hi")) as good, FakeProvider() as overloaded:
        overloaded.default = Status(529)
        good.then(Message("hi"), Stream(pieces=["a", "b", "c"]))
        process = BalancerProcess(workdir, env={"BALANCER_TEST_SECRET": SECRETS["env"]})
        process.write_providers(
            [
                {**anthropic_provider("alpha", refusing.url), "auth_value": SECRETS["alpha"]},
                {**anthropic_provider("beta", overloaded.url), "auth_value": SECRETS["beta"]},
                {**anthropic_provider("gamma", good.url), "auth_value": "${BALANCER_TEST_SECRET}"},
            ],
            log_level="DEBUG", log_file=str(log_file), count_tokens="local",
        )
        with process, anthropic.Anthropic(base_url=process.url, api_key=CLIENT_KEY, max_retries=0) as client:
            client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=[{"role": "user", "content": "x"}])
            with client.messages.stream(model="claude-sonnet-4", max_tokens=8,
                                        messages=[{"role": "user", "content": "y"}]) as stream:
                stream.get_final_message()
            client.messages.count_tokens(model="claude-sonnet-4", messages=[{"role": "user", "content": "z"}])
            providers = httpx.get(process.url + "/providers", timeout=10).text
            good.default = Status(500)
            with pytest.raises(anthropic.APIStatusError):  # every provider fails or cools down now
                client.messages.create(model="claude-sonnet-4", max_tokens=8,
                                       messages=[{"role": "user", "content": "w"}])
    return process.log, log_file.read_text(), providers


def request_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " req " in line and " | attempts: " in line]


def test_one_line_per_request_says_what_happened(logged_run):
    log, _, _ = logged_run
    lines = request_lines(log)
    assert len(lines) == 4
    first, streamed, counted, failed = lines
    assert "messages claude-sonnet-4 -> gamma/claude-sonnet-4 200" in first
    assert "attempts: alpha HTTP 401 authentication_error" in first
    assert "beta HTTP 529 overloaded_error" in first and "gamma 200" in first
    assert "ttfb " in first and "total " in first and "tokens in 12 out 5" in first and "end_turn" in first
    assert " stream 200" in streamed and "tokens in 12 out 3" in streamed
    assert "count_tokens claude-sonnet-4 -> local 200" in counted
    # alpha is out for its credential; beta, cooling down after its 529, is still tried after gamma.
    assert " 529 " in failed and "gamma HTTP 500" in failed and "beta HTTP 529" in failed


def test_a_relayed_stream_gets_no_line_of_mitmproxys(logged_run):
    """The summary line says it was a stream; mitmproxy's `Streaming response from` line would repeat it."""
    log, _, _ = logged_run
    assert len([line for line in request_lines(log) if " stream 200" in line]) == 1
    assert "Streaming response from" not in log
    assert "Loading script" in log  # mitmproxy's other lines stay


def test_debug_logs_the_payloads_in_the_log_and_the_json_lines(logged_run):
    log, json_lines, _ = logged_run
    for text in (log, json_lines):
        assert '"content":"y"' in text or '\\"content\\":\\"y\\"' in text


def test_json_lines_file_carries_the_request_fields(logged_run):
    _, json_lines, _ = logged_run
    entries = [json.loads(line) for line in json_lines.splitlines()]
    requests = [e["request"] for e in entries if "request" in e]
    assert len(requests) == 4
    first = requests[0]
    assert first["provider"] == "gamma" and first["status"] == 200 and first["stream"] is False
    assert [a["provider"] for a in first["attempts"]] == ["alpha", "beta", "gamma"]
    assert first["usage"] == {"input_tokens": 12, "output_tokens": 5}
    assert first["ttfb_ms"] > 0 and first["total_ms"] >= first["ttfb_ms"]
    assert requests[1]["stop_reason"] == "end_turn"


def test_no_credential_in_the_log_the_json_lines_or_the_providers_listing(logged_run):
    log, json_lines, providers = logged_run
    for text in (log, json_lines, providers):
        for secret in [*SECRETS.values(), CLIENT_KEY]:
            assert secret not in text
