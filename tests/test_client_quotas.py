"""Client keys with names and quotas, through the running balancer: a client over a quota gets 429
rate_limit_error with retry-after and a message naming the quota, before any provider is tried; tokens and spend
are counted from the answers' usage (streamed or not); GET /usage and /metrics show clients by name; the request
log carries the name; and no client key appears in any log, admin answer, metric or saved flow."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import helpers
from balancer_proc import BalancerProcess
from fakes import Behavior, FakeProvider, Raw
from helpers import anthropic_message, anthropic_provider, anthropic_stream_events, openai_provider, openai_sse, sse
from test_credentials_in_flows import flow_text, read_flows

KEYS = {
    "rpm": "sk-client-rpm-1010101010",
    "tok-json": "sk-client-tokjson-2020202020",
    "tok-stream": "sk-client-tokstream-3030303030",
    "budget": "sk-client-budget-4040404040",
    "free": "sk-client-free-5050505050",
    "batcher": "sk-client-batcher-8080808080",
}
PLAIN_KEY = "sk-client-plain-6060606060"
ADMIN_KEY = "sk-admin-7070707070"
ADMIN = {"x-api-key": ADMIN_KEY}
USAGE = {"input_tokens": 40, "output_tokens": 30, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 500}
COUNTED = 40 + 30 + 20  # what tokens_per_day counts of USAGE: cache reads are not counted
# $1 a token of any kind for the models the test asks for.
PRICES = {"claude-priced-*": {"input": 1_000_000, "output": 1_000_000, "cache_write": 1_000_000,
                              "cache_read": 1_000_000}}
BODY = {"model": "claude-priced-sonnet", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class WithUsage(Behavior):
    """An answer (JSON, or a stream when asked for one) whose usage is `usage`."""

    usage: dict[str, int]

    def run(self, handler, request, fake):
        body = request.json()
        model = body.get("model", "m")
        if body.get("stream"):
            events = anthropic_stream_events(model, ["Hi"])
            events[0][1]["message"]["usage"] = {**self.usage, "output_tokens": 1}
            events[-2][1]["usage"] = {"output_tokens": self.usage["output_tokens"]}
            handler.stream([sse(name, data) for name, data in events])
        else:
            handler.reply(200, {**anthropic_message(model, "Hi"), "usage": self.usage})


def client_keys() -> list[Any]:
    return [
        {"name": "rpm", "key": KEYS["rpm"], "requests_per_minute": 2},
        {"name": "tok-json", "key": KEYS["tok-json"], "tokens_per_day": COUNTED + 1},
        {"name": "tok-stream", "key": KEYS["tok-stream"], "tokens_per_day": COUNTED + 1},
        {"name": "budget", "key": KEYS["budget"], "budget_per_month": 1000},
        PLAIN_KEY,
        {"name": "free", "key": KEYS["free"]},
        {"name": "batcher", "key": KEYS["batcher"], "requests_per_minute": 1},
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BalancerProcess, FakeProvider, Path]]:
    workdir = tmp_path_factory.mktemp("quotas")
    log_file = workdir / "balancer.jsonl"
    with FakeProvider(WithUsage(USAGE)) as fake:
        process = BalancerProcess(workdir)
        process.write_providers([anthropic_provider("a", fake.url)], client_keys=client_keys(),
                                admin_keys=[ADMIN_KEY], prices=PRICES, log_file=str(log_file),
                                count_tokens="local")
        with process:
            yield process, fake, log_file


def ask(process: BalancerProcess, key: str, stream: bool = False, path: str = "/v1/messages") -> httpx.Response:
    return httpx.post(process.url + path, json={**BODY, "stream": stream}, headers={"x-api-key": key}, timeout=30)


def usage_of(process: BalancerProcess, name: str) -> dict[str, Any]:
    answer = httpx.get(process.url + "/usage", headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    client = next(c for c in answer.json()["clients"] if c["name"] == name)
    return {q["quota"]: q for q in client["quotas"]} | {"over_quota": client["over_quota"]}


def metric(process: BalancerProcess, name: str, **labels: str) -> float | None:
    return helpers.metric(process, name, ADMIN, **labels)


def assert_quota_refusal(answer: httpx.Response, quota: str, longest: int) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "rate_limit_error"
    assert quota in answer.json()["error"]["message"]
    assert 1 <= int(answer.headers["retry-after"]) <= longest
    assert answer.headers["x-balancer-provider"] == "none"
    assert not any(key in answer.text for key in [*KEYS.values(), PLAIN_KEY])


def test_a_client_over_its_requests_per_minute_gets_429_naming_the_quota_before_any_provider(setup):
    process, fake, _ = setup
    for _ in range(3):  # a minute that ends between the requests starts a fresh window: try again
        minute = time.time() // 60
        before = len(fake.message_requests)
        answers = [ask(process, KEYS["rpm"]) for _ in range(3)]
        if time.time() // 60 == minute:
            break
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_quota_refusal(answers[2], "requests_per_minute", 60)
    assert len(fake.message_requests) - before == 2  # the refused request reached no provider
    assert "client rpm" in answers[2].json()["error"]["message"]
    assert ask(process, KEYS["free"]).status_code == 200  # other clients go on
    # Counting tokens is not refused.
    assert ask(process, KEYS["rpm"], path="/v1/messages/count_tokens").status_code == 200
    assert usage_of(process, "rpm")["over_quota"] == ["requests_per_minute"]


def test_requests_whose_cost_is_not_metered_are_refused_to_a_client_with_a_spend_quota(setup):
    process, fake, _ = setup
    before = len(fake.requests)
    refused = ask(process, KEYS["budget"], path="/v1/messages/batches")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["type"] == "permission_error"
    assert "client budget" in refused.json()["error"]["message"] and "/v1/messages/batches" in refused.text
    assert ask(process, KEYS["tok-json"], path="/v1/complete").status_code == 403
    assert len(fake.requests) == before  # nothing reached a provider
    # A client without quotas is not concerned; one with only a request quota spends requests on it.
    assert ask(process, KEYS["free"], path="/v1/messages/batches").status_code == 200
    for _ in range(3):  # a minute that ends between the requests starts a fresh window: try again
        minute = time.time() // 60
        answers = [ask(process, KEYS["batcher"], path="/v1/messages/batches") for _ in range(2)]
        if time.time() // 60 == minute:
            break
    assert [a.status_code for a in answers] == [200, 429]
    assert "requests_per_minute" in answers[1].json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tokens_per_day_are_counted_from_the_answers_usage(setup, stream):
    process, _, _ = setup
    key, name = (KEYS["tok-stream"], "tok-stream") if stream else (KEYS["tok-json"], "tok-json")
    first = ask(process, key, stream=stream)
    assert first.status_code == 200
    # The answer's usage is counted once the flow is over: poll for it.
    deadline = time.monotonic() + 30
    while usage_of(process, name)["tokens_per_day"]["used"] < COUNTED:
        assert time.monotonic() < deadline, "the answer's tokens were never counted"
        time.sleep(0.05)
    tokens = usage_of(process, name)["tokens_per_day"]
    assert tokens["used"] == COUNTED and tokens["limit"] == COUNTED + 1
    assert ask(process, key, stream=stream).status_code == 200  # 90 of 91: still room
    deadline = time.monotonic() + 30
    while (answer := ask(process, key, stream=stream)).status_code == 200:  # until the second answer is counted
        assert time.monotonic() < deadline, "the client was never refused"
    assert_quota_refusal(answer, "tokens_per_day", 86400)
    assert answer.headers["x-should-retry"] == "false"  # no retry helps before the day ends


def test_budget_per_month_counts_estimated_spend_and_usage_shows_it(setup):
    process, fake, _ = setup
    spent_per_request = sum(USAGE.values())  # $1 a token, cache reads included
    assert ask(process, KEYS["budget"]).status_code == 200
    deadline = time.monotonic() + 30
    while usage_of(process, "budget")["budget_per_month"]["used"] < spent_per_request:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    budget = usage_of(process, "budget")["budget_per_month"]
    assert budget["used"] == pytest.approx(spent_per_request) and budget["limit"] == 1000
    assert budget["share_used"] == pytest.approx(spent_per_request / 1000, abs=1e-4)
    assert budget["window"] == "month" and re.fullmatch(r"\d{4}-\d\d-01T00:00:00Z", budget["resets_at"])
    assert 0 < budget["resets_in"] <= 31 * 86400
    assert metric(process, "balancer_client_spend_usd_total", client="budget") == pytest.approx(spent_per_request)
    assert metric(process, "balancer_client_quota_used_ratio", client="budget", quota="budget_per_month") \
        == pytest.approx(spent_per_request / 1000)
    for kind, count in (("input", 40), ("output", 30), ("cache_write", 20), ("cache_read", 500)):
        assert metric(process, "balancer_client_tokens_total", client="budget", kind=kind) == count
    assert metric(process, "balancer_client_requests_total", client="budget") == 1
    # A spend past the budget: the next request is refused.
    process.write_providers([anthropic_provider("a", fake.url)], client_keys=[
        *client_keys()[:3], {"name": "budget", "key": KEYS["budget"], "budget_per_month": spent_per_request},
        *client_keys()[4:]], admin_keys=[ADMIN_KEY], prices=PRICES, log_file=str(setup[2]), count_tokens="local")
    assert httpx.post(process.url + "/providers/reload", headers=ADMIN, timeout=10).status_code == 200
    assert_quota_refusal(ask(process, KEYS["budget"]), "budget_per_month", 31 * 86400)
    assert metric(process, "balancer_client_quota_refusals_total", client="budget", quota="budget_per_month") == 1


def test_usage_lists_every_client_by_name_with_its_quotas(setup):
    process, _, _ = setup
    assert ask(process, PLAIN_KEY).status_code == 200
    answer = httpx.get(process.url + "/usage", headers=ADMIN, timeout=10)
    clients = {c["name"]: c for c in answer.json()["clients"]}
    assert list(clients) == ["rpm", "tok-json", "tok-stream", "budget", "client-5", "free", "batcher"]
    rpm = {q["quota"]: q for q in clients["rpm"]["quotas"]}
    assert rpm["requests_per_minute"]["limit"] == 2 and rpm["tokens_per_day"]["limit"] is None
    assert rpm["requests_per_minute"]["window"] == "minute" and 0 < rpm["requests_per_minute"]["resets_in"] <= 60
    plain = {q["quota"]: q for q in clients["client-5"]["quotas"]}
    assert plain["requests_per_minute"]["used"] == 0  # no quota: requests are not counted against one
    assert plain["tokens_per_day"]["used"] == COUNTED and plain["tokens_per_day"]["share_used"] is None
    # Admin only.
    assert httpx.get(process.url + "/usage", headers={"x-api-key": KEYS["free"]}, timeout=10).status_code == 401
    assert httpx.post(process.url + "/usage", headers=ADMIN, timeout=10).status_code == 405


def test_the_request_log_and_the_metrics_carry_the_clients_name(setup):
    process, _, log_file = setup
    assert ask(process, KEYS["free"], stream=True).status_code == 200
    deadline = time.monotonic() + 30
    while not any(line.endswith("| client free") and " stream 200" in line for line in process.log_lines):
        assert time.monotonic() < deadline, "no request line with the client's name"
        time.sleep(0.05)
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(e.get("request", {}).get("client") == "free" for e in entries)
    assert (metric(process, "balancer_client_requests_total", client="free") or 0) >= 1
    assert metric(process, "balancer_client_tokens_total", client="free", kind="output") is not None


def test_an_openai_type_provider_is_priced_by_the_model_it_was_asked_for(tmp_path):
    answer = openai_sse(
        {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
        "[DONE]",
    )
    with FakeProvider(Raw(answer)) as fake:
        process = BalancerProcess(tmp_path)
        process.write_providers([openai_provider("oa", fake.url)], client_keys=[{"name": "oa", "key": KEYS["free"]}],
                                admin_keys=[ADMIN_KEY], prices={"gpt-big": {"input": 2, "output": 10}})
        with process:
            assert ask(process, KEYS["free"], stream=True).status_code == 200
            expected = (1000 * 2 + 100 * 10) / 1_000_000  # gpt-big's price, not a Claude model's
            deadline = time.monotonic() + 30
            while metric(process, "balancer_client_spend_usd_total", client="oa") is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert metric(process, "balancer_client_spend_usd_total", client="oa") == pytest.approx(expected)
            assert usage_of(process, "oa")["budget_per_month"]["used"] == pytest.approx(expected)


def test_no_client_key_in_logs_admin_answers_metrics_or_saved_flows(tmp_path):
    flows_file, log_file = tmp_path / "flows.mitm", tmp_path / "balancer.jsonl"
    secrets = [*KEYS.values(), PLAIN_KEY, ADMIN_KEY]
    answers: list[httpx.Response] = []
    with FakeProvider(WithUsage(USAGE)) as fake:
        process = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file), "--set", "flow_detail=3"))
        process.write_providers([anthropic_provider("a", fake.url)], client_keys=client_keys(),
                                admin_keys=[ADMIN_KEY], prices=PRICES, log_file=str(log_file), log_level="DEBUG")
        with process:
            for key in [*KEYS.values(), PLAIN_KEY]:
                for stream in (False, True):
                    answers.append(ask(process, key, stream=stream))
            answers += [ask(process, KEYS["rpm"]) for _ in range(3)]  # a quota refusal among them
            for path in ("/usage", "/metrics", "/providers", "/"):
                answers.append(httpx.get(process.url + path, headers=ADMIN, timeout=10))
            bad = {"name": "x", "key": KEYS["rpm"]}  # a clash: the reload is refused, its error shown
            process.write_providers([anthropic_provider("a", fake.url)], client_keys=[*client_keys(), bad],
                                    admin_keys=[ADMIN_KEY])
            answers.append(httpx.post(process.url + "/providers/reload", headers=ADMIN, timeout=10))
    assert any(a.status_code == 429 for a in answers)
    assert answers[-1].status_code == 400 and "same key" in answers[-1].text
    assert any("balancer_client_requests_total" in a.text for a in answers)
    for answer in answers:
        for secret in secrets:
            assert secret not in answer.text and secret not in str(answer.headers)
    flows = read_flows(flows_file)
    assert len(flows) >= len(answers)
    raw = flows_file.read_bytes()
    whole_log = process.log + "\n" + log_file.read_text()
    assert "client rpm" in whole_log
    for secret in secrets:
        assert secret.encode() not in raw and secret not in whole_log
        assert all(secret not in flow_text(flow) for flow in flows)


def test_a_budget_is_not_bypassed_by_a_model_without_a_price_and_the_log_names_few(tmp_path):
    big = {"input_tokens": 100_000, "output_tokens": 20_000}  # $3.00 at the highest built-in price (15 and 75)
    budgeted = {"name": "budget", "key": KEYS["budget"], "budget_per_month": 5}
    free = {"name": "free", "key": KEYS["free"]}
    with FakeProvider(WithUsage(big)) as fake:
        process = BalancerProcess(tmp_path)
        process.write_providers([anthropic_provider("a", fake.url)], client_keys=[budgeted, free],
                                admin_keys=[ADMIN_KEY])

        def ask_for(key: str, model: str) -> httpx.Response:
            return httpx.post(process.url + "/v1/messages", json={**BODY, "model": model},
                              headers={"x-api-key": key}, timeout=30)

        with process:
            # A real model in Bedrock's spelling is priced as Claude Sonnet 4.5: 0.1 * $3 + 0.02 * $15.
            assert ask_for(KEYS["budget"], "us.anthropic.claude-sonnet-4-5-20250929-v1:0").status_code == 200
            assert usage_of(process, "budget")["budget_per_month"]["used"] == pytest.approx(0.6)
            # Made-up names cost the highest price: $3 each, over the $5 budget after two.
            answers = [ask_for(KEYS["budget"], f"made-up-{n}") for n in range(3)]
            assert [a.status_code for a in answers[:2]] == [200, 200]
            assert usage_of(process, "budget")["budget_per_month"]["used"] == pytest.approx(6.6)
            assert_quota_refusal(answers[2], "budget_per_month", 31 * 86400)
            # A client without a budget is not charged for them; the log names 20 models, then says it stops.
            assert all(ask_for(KEYS["free"], f"invented-{n}").status_code == 200 for n in range(30))
    named = [line for line in process.log.splitlines() if "no price for model" in line]
    assert len(named) == 20 and "made-up-0" in named[0]
    assert process.log.count("more models without a price") == 1
