"""docs/grafana-dashboard.json: every PromQL expression in it parses (as far as this test reads PromQL) and names
only metrics the balancer exports, as seen on /metrics of a running balancer after some traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from balancer_proc import REPO, BalancerProcess
from fakes import FakeProvider, Message, Status
from helpers import anthropic_provider

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"

FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "max", "min", "avg", "count", "topk", "clamp_max"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; fails on what this reading does not know."""
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, f"unbalanced {char!r} in {expr}"
    assert not any(depth.values()), f"unbalanced brackets in {expr}"
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges ([$__rate_interval], [5m])
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown function {word} in {expr}"
        elif word not in KEYWORDS:
            names.add(word)
    assert names, f"no metric in {expr}"
    return names


def exported(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names on /metrics after traffic of every kind the dashboard shows: a failover, answers, a quota
    refusal, client usage, a key's headroom and a key passed over for its limit."""
    workdir = tmp_path_factory.mktemp("dashboard")
    limits = {"anthropic-ratelimit-requests-limit": "100", "anthropic-ratelimit-requests-remaining": "60",
              "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z"}
    with FakeProvider(Status(529)) as busy, FakeProvider(Message(headers=limits)) as good:
        process = BalancerProcess(workdir)
        pool = [{"value": "sk-pool-key-one-1111", "rpm": 1}, {"value": "sk-pool-key-two-2222", "rpm": 1}]
        process.write_providers(
            [anthropic_provider("busy", busy.url, priority=0),
             anthropic_provider("good", good.url, priority=1, auth_value=pool)],
            client_keys=[{"name": "alice", "key": "sk-alice-123456789", "requests_per_minute": 1,
                          "budget_per_month": 10}, {"name": "bob", "key": "sk-bob-987654321"}],
        )
        with process:
            body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"x-api-key": "sk-alice-123456789"}
            # requests_per_minute 1: the second is refused, or the third when a minute ended between them.
            statuses = [httpx.post(process.url + "/v1/messages", json={**body, "stream": stream}, headers=headers,
                                   timeout=30).status_code for stream in (True, False, False)]
            assert statuses[0] == 200 and 429 in statuses
            # Both keys of the pool used their one request a minute: the next requests pass a key over.
            for _ in range(2):
                answer = httpx.post(process.url + "/v1/messages", json=body, headers={"x-api-key": "sk-bob-987654321"},
                                    timeout=30)
                assert answer.status_code == 200
            text = httpx.get(process.url + "/metrics", headers=headers, timeout=10).text
    return exported(text)


def test_the_dashboard_is_a_grafana_dashboard_with_unique_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all("gridPos" in panel for panel in dashboard["panels"])
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in dashboard["templating"]["list"])
    assert len(expressions(dashboard)) >= 10


def test_every_query_of_the_dashboard_names_a_metric_the_balancer_exports(scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expr in expressions(dashboard):
        names = metric_names(expr)
        missing = names - scraped
        assert not missing, f"{expr} names {sorted(missing)}, which the balancer does not export"
        used |= names
    # What the dashboard is for: traffic, failovers, first byte, cooldowns, key headroom, client quotas.
    assert {"balancer_requests_total", "balancer_failovers_total", "balancer_time_to_first_byte_seconds_bucket",
            "balancer_provider_cooldown_remaining_seconds", "balancer_key_headroom_ratio",
            "balancer_client_quota_used_ratio"} <= used


@pytest.mark.parametrize("expr", ["rate(balancer_nonesuch_total[5m])", "sum(rate(balancer_requests_total[5m])"])
def test_a_wrong_query_is_caught(expr, scraped):
    with pytest.raises(AssertionError):
        assert not metric_names(expr) - scraped


def test_the_scrape_is_read_by_name():
    assert exported('# HELP x y\nbalancer_a_total{k="v"} 1.0\nbalancer_b 2\n') == {"balancer_a_total", "balancer_b"}


def test_dashboard_file_is_in_docs():
    assert Path(DASHBOARD).is_file()
