"""The endpoints the balancer answers itself, and what it says about bad requests."""

from __future__ import annotations

import httpx
import pytest

from fakes import FakeProvider, Status
from helpers import anthropic_provider, free_port


def get(balancer, path: str) -> httpx.Response:
    return httpx.get(balancer.url + path, timeout=10)


def test_health_and_providers_list(balancer, fakes, unique):
    balancer.use([
        anthropic_provider(f"a-{unique}", fakes[0].url, big_model="big", small_model="small"),
        {**anthropic_provider(f"b-{unique}", "https://user:pw@relay.example/api"), "auth_type": "auth_token"},
        anthropic_provider(f"c-{unique}", fakes[2].url, enabled=False),
    ])
    health = get(balancer, "/")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["usable"] == [f"a-{unique}", f"b-{unique}"]

    listing = get(balancer, "/providers")
    assert listing.status_code == 200
    providers = listing.json()["providers"]
    assert [p["name"] for p in providers] == [f"a-{unique}", f"b-{unique}", f"c-{unique}"]
    first = providers[0]
    for key in ("name", "type", "base_url", "enabled", "healthy", "cooldown_remaining", "failures", "last_error"):
        assert key in first
    assert (first["type"], first["enabled"], first["healthy"], first["cooldown_remaining"]) == (
        "anthropic", True, True, 0)
    assert (first["big_model"], first["small_model"]) == ("big", "small")
    assert providers[1]["base_url"] == "https://relay.example/api"  # no user:password
    assert providers[2]["healthy"] is False
    for name in ("a", "b", "c"):
        assert f"key-of-{name}-{unique}" not in listing.text
    assert "pw" not in listing.text.replace("passthrough", "")


def test_health_is_503_when_no_provider_is_usable(balancer, unique):
    balancer.use([anthropic_provider(f"a-{unique}", "http://127.0.0.1:9", enabled=False)])
    response = get(balancer, "/")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_reload_rejects_a_broken_file_and_keeps_running(balancer, fakes, client, unique):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url)])
    balancer.providers_file.write_text("providers:\n  - name: x\n    base_url: ftp://nope\n    auth_value: k\n")
    response = balancer.reload()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "providers[0] (name 'x').base_url" in error["message"]
    assert "http:// or https://" in error["message"]
    assert "Traceback" not in response.text
    # The running configuration still serves.
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=8,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-balancer-provider"] == f"a-{unique}"

    balancer.providers_file.write_text("providers: [\n")
    response = balancer.reload()
    assert response.status_code == 400
    assert "not valid YAML at line" in response.json()["error"]["message"]


def test_reload_keeps_health_of_providers_that_remain(balancer, unique):
    with FakeProvider(Status(500)) as failing, FakeProvider() as other:
        first = anthropic_provider(f"a-{unique}", failing.url)
        second = anthropic_provider(f"b-{unique}", other.url)
        balancer.use([first, second], failure_cooldown=600)
        httpx.post(balancer.url + "/v1/messages", timeout=10,
                   json={"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        assert balancer.provider_status(f"a-{unique}")["healthy"] is False

        balancer.use([first, second, anthropic_provider(f"new-{unique}", other.url)], failure_cooldown=600)
        kept = balancer.provider_status(f"a-{unique}")
        assert (kept["healthy"], kept["failures"]) == (False, 1)
        assert "HTTP 500" in kept["last_error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/messages", 405),
        ("DELETE", "/providers", 405),
        ("GET", "/providers/reload", 405),
        ("GET", "/nothing-here", 404),
        ("POST", "/v2/messages", 404),
    ],
)
def test_a_wrong_method_is_405_and_a_wrong_path_404_in_anthropic_shape(balancer, method, path, status):
    response = httpx.request(method, balancer.url + path, timeout=10)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m", "max_tokens": 5}', "messages: a list"),
        (b'{"model": "m", "max_tokens": 5, "messages": "hi"}', "messages: a list"),
        (b'{"model": "m", "max_tokens": 5, "messages": []}', "at least one message"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}', "messages.0.content"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "stream"),
        (b'{"model": "m", "max_tokens": 5, "system": 3, "messages": [{"role": "user", "content": "x"}]}', "system"),
    ],
)
def test_bad_request_bodies_get_a_clear_400(balancer, fakes, unique, body, problem):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url)])
    response = httpx.post(balancer.url + "/v1/messages", content=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert problem in response.json()["error"]["message"]
    assert fakes[0].requests == []
    # ... and the balancer keeps serving.
    ok = httpx.post(balancer.url + "/v1/messages", timeout=10,
                    json={"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_unknown_keys_are_reported_not_rejected(balancer, fakes, unique):
    provider = {**anthropic_provider(f"a-{unique}", fakes[0].url), "colour": "red"}
    balancer.write_providers([provider], flavour="vanilla")
    response = balancer.reload()
    assert response.status_code == 200
    warnings = response.json()["warnings"]
    assert any("'colour'" in w for w in warnings) and any("'flavour'" in w for w in warnings)


def test_refused_port_helper_really_refuses():
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
