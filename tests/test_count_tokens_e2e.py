"""POST /v1/messages/count_tokens through the real mitmdump: local, upstream and auto modes."""

from __future__ import annotations

import httpx
import pytest

from addon.token_count import count_input_tokens
from fakes import FakeProvider, Hang, Status
from helpers import anthropic_provider, free_port, openai_provider

BODY = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Count me, please."}],
        "system": "Be brief.", "tools": [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}]}


def count(balancer) -> httpx.Response:
    return httpx.post(balancer.url + "/v1/messages/count_tokens?beta=true", json=BODY, timeout=30)


def test_local_mode_never_asks_a_provider(balancer, fakes, unique):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url)], count_tokens="local")
    response = count(balancer)
    assert response.status_code == 200
    assert response.json() == {"input_tokens": count_input_tokens(BODY)}
    assert response.headers["x-balancer-provider"] == "local"
    assert fakes[0].requests == []


def test_upstream_and_auto_modes_ask_the_provider(balancer, fakes, unique):
    for mode in ("upstream", "auto"):
        balancer.use([anthropic_provider(f"a-{mode}-{unique}", fakes[0].url)], count_tokens=mode)
        response = count(balancer)
        assert response.json() == {"input_tokens": 42}  # the fake's exact count
        assert response.headers["x-balancer-provider"] == f"a-{mode}-{unique}"
    assert len(fakes[0].requests) == 2


@pytest.mark.parametrize("failure", ["404", "500", "refused", "hang"])
def test_auto_mode_falls_back_to_the_local_count(balancer, unique, failure):
    behavior = {"404": Status(404), "500": Status(500), "hang": Hang()}.get(failure)
    with FakeProvider(behavior) as fake:
        url = fake.url if behavior else f"http://127.0.0.1:{free_port()}"
        balancer.use([anthropic_provider(f"a-{unique}", url)], count_tokens="auto", count_tokens_timeout=0.5)
        response = count(balancer)
        assert response.status_code == 200
        assert response.json() == {"input_tokens": count_input_tokens(BODY)}
        health = balancer.provider_status(f"a-{unique}")
        assert (health["healthy"], health["failures"]) == (True, 0)  # a failing count never cools a provider


def test_only_openai_providers_count_locally(balancer, fakes, unique):
    balancer.use([openai_provider(f"o-{unique}", fakes[0].url)])
    response = count(balancer)
    assert response.json() == {"input_tokens": count_input_tokens(BODY)}
    assert fakes[0].requests == []


def test_upstream_mode_reports_failure(balancer, unique):
    balancer.use([anthropic_provider(f"a-{unique}", f"http://127.0.0.1:{free_port()}")], count_tokens="upstream")
    assert count(balancer).status_code == 503
