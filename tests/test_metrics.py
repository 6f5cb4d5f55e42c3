"""GET /metrics: the Metrics addon under mitmproxy's test harness, then through the real mitmdump."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from addon.config import load_config
from addon.fallback import NotFound
from addon.flow_record import AttemptSummary, RequestSummary
from addon.gateway import Gateway
from addon.metrics import Metrics
from addon.providers import Providers
from balancer_proc import providers_yaml
from fakes import FakeProvider, Message, Status
from helpers import anthropic_provider

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for one never exposed (a counter that has not counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def write(tmp_path, *providers, **settings) -> str:
    path = tmp_path / "providers.yaml"
    path.write_text(providers_yaml(list(providers), **settings))
    return str(path)


def scrape(metrics: Metrics, path: str = "/metrics") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "GET", path
    metrics.request(flow)
    return flow


def finished(record: RequestSummary, status: int | None = 200, error: bool = False) -> RequestSummary:
    """The request as the gateway hands it on when its flow is over: the status of its answer, or an error."""
    if error:
        return replace(record, http_status=None, ended=record.ended or "error")
    return replace(record, http_status=status)


def api_record(**fields: Any) -> RequestSummary:
    record = {
        "kind": "messages", "requested_model": "claude-sonnet-4", "provider": "a", "model": "m", "stream": False,
        "attempts": [{"provider": "a", "outcome": "200", "ms": 12.0, "failed": False, "class": None}],
        "ttfb_ms": 250.0, "total_ms": 1500.0, "usage": {"input_tokens": 12, "output_tokens": 5},
        "stop_reason": "end_turn",
    }
    record.update(fields)
    attempts = tuple(
        AttemptSummary(a["provider"], a.get("outcome", ""), a.get("ms", 0.0), a["failed"], a.get("class"))
        for a in record.pop("attempts")
    )
    ended = record.pop("status", None)  # "client gone": the client left before the end
    return RequestSummary(request_id="r", path="/v1/messages", http_status=200, ended=ended, failed_mid_stream=False,
                          attempts=attempts, **record)


@pytest.fixture
def setup(tmp_path):
    providers = Providers()
    metrics = Metrics(providers)
    with taddons.context(providers, metrics) as tctx:
        tctx.configure(providers, providers=write(
            tmp_path, anthropic_provider("a", "http://127.0.0.1:9"), anthropic_provider("b", "http://127.0.0.1:9"),
            anthropic_provider("off", "http://127.0.0.1:9", enabled=False), failure_cooldown=600,
        ))
        yield providers, metrics


def test_get_metrics_answers_prometheus_text_with_provider_health(setup):
    _providers, metrics = setup
    flow = scrape(metrics)
    assert flow.response.status_code == 200
    assert flow.response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = parse(flow.response.text)
    assert value(samples, "balancer_failovers_total") == 0
    assert ("balancer_failovers_total", frozenset()) in samples
    for name, healthy in (("a", 1), ("b", 1), ("off", 0)):
        assert value(samples, "balancer_provider_healthy", provider=name) == healthy
        assert value(samples, "balancer_provider_cooldown_remaining_seconds", provider=name) == 0
        assert value(samples, "balancer_provider_consecutive_failures", provider=name) == 0
    assert value(samples, "balancer_provider_enabled", provider="off") == 0
    assert flow.metadata["balancer"] == {"admin": "metrics"}
    # The scrape itself is not API traffic.
    assert not any(name == "balancer_requests_total" for name, _ in parse(scrape(metrics).response.text))


def test_provider_health_is_read_at_each_scrape(setup, tmp_path):
    providers, metrics = setup
    providers.board.record_failure("a", "HTTP 529 overloaded_error: secret-detail", cooldown=600, kind="overloaded")
    providers.board.record_failure("a", "HTTP 529 overloaded_error: secret-detail", cooldown=600, kind="overloaded")
    text = scrape(metrics).response.text
    samples = parse(text)
    assert value(samples, "balancer_provider_healthy", provider="a") == 0
    assert 590 < value(samples, "balancer_provider_cooldown_remaining_seconds", provider="a") <= 600
    assert value(samples, "balancer_provider_consecutive_failures", provider="a") == 2
    assert value(samples, "balancer_provider_healthy", provider="b") == 1
    assert "secret-detail" not in text

    providers.board.record_success("a")
    samples = parse(scrape(metrics).response.text)
    assert value(samples, "balancer_provider_healthy", provider="a") == 1
    assert value(samples, "balancer_provider_consecutive_failures", provider="a") == 0

    # A provider removed by a reload is no longer exposed.
    providers.apply(load_config(write(tmp_path, anthropic_provider("b", "http://127.0.0.1:9"))))
    samples = parse(scrape(metrics).response.text)
    assert ("balancer_provider_healthy", frozenset({("provider", "a")})) not in samples
    assert value(samples, "balancer_provider_healthy", provider="b") == 1


def test_only_the_metrics_path_is_answered(setup):
    _, metrics = setup
    assert scrape(metrics, "/metrics?name[]=x").response.status_code == 200
    for path in ("/", "/providers", "/v1/messages", "/metrics/x", "/metricsx"):
        assert scrape(metrics, path).response is None

    post = tflow.tflow()
    post.request.method, post.request.path = "POST", "/metrics"
    metrics.request(post)
    assert post.response.status_code == 405
    assert post.response.headers["allow"] == "GET"
    assert post.response.json()["error"]["type"] == "invalid_request_error"

    answered = tflow.tflow(resp=True)
    answered.request.path = "/metrics"
    original = answered.response
    metrics.request(answered)
    assert answered.response is original


@pytest.mark.anyio
async def test_the_gateway_leaves_metrics_to_this_addon(setup):
    """In the balancer's order of addons the gateway's `request` hook runs first: it must leave /metrics alone,
    and whatever nobody answers gets the fallback's 404."""
    providers, metrics = setup
    gateway = Gateway(providers)
    gateway.on_finished.append(metrics.count)
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "GET", "/metrics"
    await gateway.request(flow)
    metrics.request(flow)
    assert flow.response.status_code == 200
    assert "balancer_provider_healthy" in flow.response.text
    await gateway.response(flow)  # the scrape itself is not API traffic
    assert not any(name == "balancer_requests_total" for name, _ in parse(scrape(metrics).response.text))

    other = tflow.tflow()
    other.request.method, other.request.path = "GET", "/nope"
    await gateway.request(other)
    metrics.request(other)
    NotFound().request(other)
    assert other.response.status_code == 404


@pytest.mark.anyio
async def test_a_request_is_counted_from_the_summary_the_gateway_hands_on(tmp_path):
    """Metrics listens to the gateway (as balancer.py wires it): the count does not depend on the order of the
    addons nor on flow.metadata, which keeps the same figures as a plain dict for saved flows."""
    providers = Providers()
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: 3\n")
    metrics, gateway = Metrics(providers), Gateway(providers)
    gateway.on_finished.append(metrics.count)
    with taddons.context(providers, gateway) as tctx:
        tctx.configure(providers, providers=str(bad))
        flow = tflow.tflow()
        flow.request.method, flow.request.path = "POST", "/v1/messages"
        flow.request.content = b'{"model": "m", "messages": []}'
        await gateway.request(flow)
        await gateway.response(flow)
        flow.metadata["balancer"] = {"kind": "messages", "provider": "rewritten later"}  # by some later addon
    samples = parse(scrape(metrics).response.text)
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="503") == 1
    assert value(samples, "balancer_request_duration_seconds_count", kind="messages", provider="none") == 1
    assert not [key for key in samples if key[0] == "balancer_requests_total" and ("provider", "rewritten later")
                in key[1]]


def test_the_flow_keeps_the_summary_as_plain_data():
    summary = finished(api_record(attempts=[
        {"provider": "a", "outcome": "HTTP 529", "ms": 40.0, "failed": True, "class": "overloaded"},
        {"provider": "b", "outcome": "200", "ms": 300.0, "failed": False, "class": None},
    ], provider="b"))
    metadata = summary.as_metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["status"] == 200 and metadata["provider"] == "b" and metadata["kind"] == "messages"
    assert metadata["attempts"][0] == {"provider": "a", "outcome": "HTTP 529", "ms": 40.0, "failed": True,
                                       "class": "overloaded"}
    assert finished(summary, error=True).as_metadata()["status"] == "error"
    assert replace(summary, failed_mid_stream=True).as_metadata()["status"] == "failed mid-stream"


def test_counts_requests_failures_failovers_latency_and_tokens(setup):
    _, metrics = setup
    failed_then_served = api_record(
        provider="b",
        attempts=[
            {"provider": "a", "outcome": "HTTP 529 overloaded_error: Overloaded", "ms": 40.0, "failed": True,
             "class": "overloaded"},
            {"provider": "b", "outcome": "200", "ms": 300.0, "failed": False, "class": None},
        ],
        ttfb_ms=400.0, total_ms=2500.0, usage={"input_tokens": 100, "output_tokens": 30},
    )
    metrics.count(finished(failed_then_served))
    metrics.count(finished(api_record()))
    metrics.count(finished(api_record(stream=True, ttfb_ms=80.0, total_ms=9000.0,
                                         usage={"input_tokens": 7, "output_tokens": 3})))
    metrics.count(finished(api_record(kind="count_tokens", usage=None, ttfb_ms=5.0, total_ms=5.0)))
    exhausted = api_record(
        provider=None, usage=None, ttfb_ms=30.0, total_ms=30.0,
        attempts=[
            {"provider": "a", "outcome": "connection refused", "ms": 1.0, "failed": True, "class": "transport"},
            {"provider": "b", "outcome": "HTTP 429", "ms": 2.0, "failed": True, "class": "rate_limited"},
        ],
    )
    metrics.count(finished(exhausted, status=503))

    samples = parse(scrape(metrics).response.text)
    assert value(samples, "balancer_requests_total", kind="messages", provider="a", status="200") == 2
    assert value(samples, "balancer_requests_total", kind="messages", provider="b", status="200") == 1
    assert value(samples, "balancer_requests_total", kind="count_tokens", provider="a", status="200") == 1
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="503") == 1

    assert value(samples, "balancer_attempt_failures_total", provider="a", **{"class": "overloaded"}) == 1
    assert value(samples, "balancer_attempt_failures_total", provider="a", **{"class": "transport"}) == 1
    assert value(samples, "balancer_attempt_failures_total", provider="b", **{"class": "rate_limited"}) == 1
    assert value(samples, "balancer_failovers_total") == 2  # the served-after-a-failure one and the exhausted one

    duration = "balancer_request_duration_seconds"
    assert value(samples, duration + "_count", kind="messages", provider="a") == 2
    assert value(samples, duration + "_sum", kind="messages", provider="a") == pytest.approx(1.5 + 9.0)
    assert value(samples, duration + "_bucket", kind="messages", provider="a", le="2.5") == 1
    assert value(samples, duration + "_bucket", kind="messages", provider="a", le="10.0") == 2
    assert value(samples, duration + "_sum", kind="messages", provider="b") == pytest.approx(2.5)
    assert value(samples, duration + "_count", kind="count_tokens", provider="a") == 1

    ttfb = "balancer_time_to_first_byte_seconds"
    assert value(samples, ttfb + "_count", provider="a", stream="true") == 1
    assert value(samples, ttfb + "_sum", provider="a", stream="true") == pytest.approx(0.08)
    assert value(samples, ttfb + "_count", provider="a", stream="false") == 2  # messages and count_tokens
    assert value(samples, ttfb + "_sum", provider="b", stream="false") == pytest.approx(0.4)
    assert value(samples, ttfb + "_count", provider="none", stream="false") == 1

    assert value(samples, "balancer_tokens_total", provider="a", direction="in") == 12 + 7
    assert value(samples, "balancer_tokens_total", provider="a", direction="out") == 5 + 3
    assert value(samples, "balancer_tokens_total", provider="b", direction="in") == 100
    assert value(samples, "balancer_tokens_total", provider="b", direction="out") == 30
    assert ("balancer_tokens_total", frozenset({("provider", "none"), ("direction", "in")})) not in samples


def test_a_failed_flow_counts_as_error_even_with_a_response(setup):
    _, metrics = setup
    metrics.count(finished(api_record(stream=True, usage={"input_tokens": 12, "output_tokens": 1}), error=True))
    metrics.count(finished(api_record(provider=None, attempts=[], ttfb_ms=None, usage=None), status=None,
                           error=True))
    samples = parse(scrape(metrics).response.text)
    assert value(samples, "balancer_requests_total", kind="messages", provider="a", status="error") == 1
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="error") == 1
    assert value(samples, "balancer_tokens_total", provider="a", direction="out") == 1
    assert value(samples, "balancer_request_duration_seconds_count", kind="messages", provider="none") == 1


def test_a_client_that_left_is_counted_under_its_own_label(setup):
    _, metrics = setup
    left_mid_stream = api_record(stream=True, status="client gone")
    left_while_tried = api_record(provider=None, attempts=[
        {"provider": "a", "outcome": "client gone", "ms": 800.0, "failed": False, "class": None}], status="client gone")
    metrics.count(finished(left_mid_stream, error=True))
    metrics.count(finished(left_while_tried, status=None, error=True))
    samples = parse(scrape(metrics).response.text)
    assert value(samples, "balancer_requests_total", kind="messages", provider="a", status="client_gone") == 1
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="client_gone") == 1
    assert value(samples, "balancer_requests_total", kind="messages", provider="a", status="error") == 0
    assert not [key for key in samples if key[0] == "balancer_attempt_failures_total"]


@pytest.mark.anyio
async def test_flows_that_are_not_api_requests_are_not_counted(setup):
    providers, metrics = setup
    gateway = Gateway(providers)
    gateway.on_finished.append(metrics.count)
    for method, path, error in (("GET", "/", False), ("GET", "/providers", False), ("POST", "/providers/reload", True),
                                ("GET", "/nope", False), ("GET", "/v1/messages", False)):
        flow = tflow.tflow(resp=not error, err=error)
        flow.request.method, flow.request.path = method, path
        flow.response = None
        await gateway.request(flow)  # GET /v1/messages: answered 405 at once, not an API request
        if error:
            await gateway.error(flow)
        else:
            await gateway.response(flow)
    samples = parse(scrape(metrics).response.text)
    assert not [key for key in samples if key[0].startswith(("balancer_requests", "balancer_tokens"))]


def test_missing_or_odd_fields_are_tolerated_and_never_become_labels(setup):
    _, metrics = setup
    secret = "sk-ant-api03-LEAKED connection refused by 10.0.0.1"
    nothing = {"provider": None, "attempts": [], "ttfb_ms": None, "total_ms": float("nan"), "usage": None,
               "stop_reason": None}
    metrics.count(finished(api_record(**nothing)))  # everything but the kind missing
    metrics.count(finished(api_record(**{**nothing, "total_ms": -1.0}), status=400))
    metrics.count(finished(api_record(
        kind=secret, provider="b", stream="yes",
        attempts=[
            {"provider": "b", "outcome": secret, "failed": True, "class": secret},
            {"provider": "", "failed": True},
            {"provider": "b", "failed": False, "class": "overloaded"},
        ],
        ttfb_ms=-5.0, total_ms=float("nan"),
        usage={"input_tokens": True, "output_tokens": -3, "cache_read_input_tokens": 1000},
    )))
    text = scrape(metrics).response.text
    samples = parse(text)
    assert "LEAKED" not in text and "10.0.0.1" not in text
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="200") == 1
    assert value(samples, "balancer_requests_total", kind="messages", provider="none", status="400") == 1
    assert value(samples, "balancer_requests_total", kind="other", provider="b", status="200") == 1
    assert value(samples, "balancer_attempt_failures_total", provider="b", **{"class": "other"}) == 1
    assert value(samples, "balancer_attempt_failures_total", provider="none", **{"class": "other"}) == 1
    assert value(samples, "balancer_attempt_failures_total", provider="b", **{"class": "overloaded"}) == 0
    assert value(samples, "balancer_failovers_total") == 1  # the one with three attempts
    assert not [key for key in samples if key[0].startswith(("balancer_tokens", "balancer_request_duration",
                                                             "balancer_time_to_first_byte"))]


def test_each_instance_has_its_own_registry(setup):
    providers, metrics = setup
    metrics.count(finished(api_record()))
    again = Metrics(providers)  # as after a script reload: no "duplicated timeseries" error, a fresh count
    samples = parse(scrape(again).response.text)
    assert value(samples, "balancer_requests_total", kind="messages", provider="a", status="200") == 0
    assert value(parse(scrape(metrics).response.text), "balancer_requests_total", kind="messages", provider="a",
                 status="200") == 1


# -- through the real mitmdump ------------------------------------------------------------------------------


def test_metrics_through_the_running_balancer(balancer, unique):
    a, b = f"a-{unique}", f"b-{unique}"

    def metrics() -> tuple[str, Samples]:
        response = httpx.get(balancer.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        return response.text, parse(response.text)

    with FakeProvider(Status(529)) as overloaded, FakeProvider(Message()) as working:
        balancer.use([anthropic_provider(a, overloaded.url), anthropic_provider(b, working.url)],
                     failure_cooldown=600)
        _, before = metrics()
        body = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": "client-own-key"}
        first = httpx.post(balancer.url + "/v1/messages", json=body, headers=headers, timeout=30)
        assert (first.status_code, first.headers["x-balancer-provider"]) == (200, b)
        second = httpx.post(balancer.url + "/v1/messages", json=body, headers=headers, timeout=30)  # a cools down
        assert (second.status_code, second.headers["x-balancer-provider"]) == (200, b)
        with httpx.stream("POST", balancer.url + "/v1/messages", json={**body, "stream": True}, headers=headers,
                          timeout=30) as streamed:
            assert streamed.status_code == 200
            events = streamed.read().decode()
        assert "message_stop" in events
        assert len(overloaded.message_requests) == 1

        # A flow is counted when mitmproxy has finished it, which can be a moment after the client has it all.
        deadline = time.monotonic() + 10
        while True:
            text, samples = metrics()
            served = value(samples, "balancer_requests_total", kind="messages", provider=b, status="200")
            if served >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)

    assert served == 3
    assert value(samples, "balancer_requests_total", kind="messages", provider=a, status="200") == 0
    assert value(samples, "balancer_attempt_failures_total", provider=a, **{"class": "overloaded"}) == 1
    assert not [key for key in samples if key[0] == "balancer_attempt_failures_total" and ("provider", b) in key[1]]
    assert value(samples, "balancer_failovers_total") - value(before, "balancer_failovers_total") == 1
    assert value(samples, "balancer_provider_healthy", provider=a) == 0
    assert value(samples, "balancer_provider_healthy", provider=b) == 1
    assert value(samples, "balancer_provider_consecutive_failures", provider=a) == 1
    assert value(samples, "balancer_provider_cooldown_remaining_seconds", provider=a) > 500
    # Usage from the fake's answers: 12 in / 5 out for each whole message, 12 in / 1 out for the stream.
    assert value(samples, "balancer_tokens_total", provider=b, direction="in") == 3 * 12
    assert value(samples, "balancer_tokens_total", provider=b, direction="out") == 2 * 5 + 1
    assert value(samples, "balancer_time_to_first_byte_seconds_count", provider=b, stream="true") == 1
    assert value(samples, "balancer_time_to_first_byte_seconds_count", provider=b, stream="false") == 2
    assert value(samples, "balancer_request_duration_seconds_count", kind="messages", provider=b) == 3
    for secret in (f"key-of-{a}", f"key-of-{b}", "client-own-key", "fake 529"):
        assert secret not in text
    # The scrapes themselves are not API traffic.
    assert not [key for key in samples if key[0] == "balancer_requests_total" and ("kind", "other") in key[1]]
