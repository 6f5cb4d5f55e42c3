"""Who may use the balancer, what it refuses, and that keys never travel where they must not."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from mitmproxy.test import taddons

from addon.access import AccessControl, key_matches, presented_key
from addon.config import ConfigError, parse_config
from addon.providers import Providers
from balancer_proc import BalancerProcess
from helpers import anthropic_provider

CLIENT_KEY = "client-key-0123456789"
ADMIN_KEY = "admin-key-9876543210"
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BalancerProcess]:
    """One balancer for the tests here that set keys; each installs its own providers and keys with `install`."""
    process = BalancerProcess(tmp_path_factory.mktemp("security"))
    process.write_providers([anthropic_provider("p", "http://127.0.0.1:9")], admin_keys=[ADMIN_KEY])
    with process:
        yield process


def install(process: BalancerProcess, providers: list[dict[str, Any]], **settings: Any) -> None:
    """Writes the providers file and reloads it, with the key the running configuration takes for its admin
    endpoints (the admin key, or the client key where there is no admin key)."""
    process.write_providers(providers, **settings)
    # The file watcher may apply the new file between two tries (then the key it takes changes under us): the keys
    # are tried in turn until one is taken.
    deadline = time.monotonic() + 30
    for key in itertools.cycle((ADMIN_KEY, CLIENT_KEY)):
        response = httpx.post(process.url + "/providers/reload", headers={"x-api-key": key}, timeout=10)
        if response.status_code != 401 or time.monotonic() > deadline:
            break
    assert response.status_code == 200, response.text


@pytest.fixture
def guarded(keyed, fakes):
    install(keyed, [anthropic_provider("p", fakes[0].url)], client_keys=[CLIENT_KEY, "other-client-key-42"],
            admin_keys=[ADMIN_KEY], max_body_size=2000)
    return keyed, fakes[0]


def post(url: str, headers: dict[str, str] | None = None, **kwargs) -> httpx.Response:
    return httpx.post(url + "/v1/messages", headers=headers or {}, timeout=10, **kwargs)


def test_the_api_needs_a_client_key(guarded):
    process, fake = guarded
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}, {"x-api-key": ADMIN_KEY[:-1]}):
        response = post(process.url, headers, json=BODY)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert fake.requests == []
    for headers in ({"x-api-key": CLIENT_KEY}, {"authorization": f"Bearer {CLIENT_KEY}"}):
        assert post(process.url, headers, json=BODY).status_code == 200
    with anthropic.Anthropic(base_url=process.url, auth_token=CLIENT_KEY, max_retries=0) as client:
        assert client.messages.create(**BODY).content[0].text == "Hello"
    # The client's key is for the balancer: the provider only ever sees its own.
    for received in fake.requests:
        assert received.headers["x-api-key"] == "key-of-p"
        assert CLIENT_KEY not in str(received.headers)


def test_admin_endpoints_need_an_admin_key_and_health_is_open(guarded):
    process, _ = guarded
    for path in ("/providers", "/metrics"):
        assert httpx.get(process.url + path, timeout=10).status_code == 401
        assert httpx.get(process.url + path, headers={"x-api-key": CLIENT_KEY}, timeout=10).status_code == 401
        assert httpx.get(process.url + path, headers={"x-api-key": ADMIN_KEY}, timeout=10).status_code == 200
    assert httpx.post(process.url + "/providers/reload", timeout=10).status_code == 401
    assert httpx.get(process.url + "/", timeout=10).status_code == 200


def test_without_admin_keys_a_client_key_opens_the_admin_endpoints(keyed, fakes):
    install(keyed, [anthropic_provider("p", fakes[0].url)], client_keys=[CLIENT_KEY])
    assert httpx.get(keyed.url + "/providers", timeout=10).status_code == 401
    assert httpx.get(keyed.url + "/providers", headers={"x-api-key": CLIENT_KEY}, timeout=10).status_code == 200


def test_bodies_over_the_limit_are_refused(guarded):
    process, fake = guarded
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post(process.url, {"x-api-key": CLIENT_KEY}, json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"

    def chunks():  # no content-length: the limit still holds
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        yield b"x" * 5000
        yield b'"}]}'

    assert post(process.url, {"x-api-key": CLIENT_KEY}, content=chunks()).status_code == 413
    assert fake.requests == []
    assert post(process.url, {"x-api-key": CLIENT_KEY}, json=BODY).status_code == 200  # and it keeps serving


def test_keys_never_reach_logs_or_answers(guarded):
    process, _ = guarded
    post(process.url, {"x-api-key": CLIENT_KEY}, json=BODY)
    post(process.url, {"x-api-key": "wrong-key-1234567"}, json=BODY)
    listing = httpx.get(process.url + "/providers", headers={"x-api-key": ADMIN_KEY}, timeout=10).text
    metrics = httpx.get(process.url + "/metrics", headers={"x-api-key": ADMIN_KEY}, timeout=10).text
    for text in (process.log, listing, metrics):
        for secret in (CLIENT_KEY, ADMIN_KEY, "key-of-p", "wrong-key-1234567"):
            assert secret not in text


def test_passthrough_with_client_keys_is_refused_with_an_explanation():
    text = ("providers:\n  - {name: own, base_url: 'https://h', auth_type: passthrough}\n"
            "settings:\n  client_keys: [k1]\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "p.yaml", {})
    assert "provider 'own' uses auth_type passthrough" in str(caught.value)
    assert "remove client_keys" in str(caught.value)


def test_client_keys_come_from_the_environment():
    text = "providers:\n  - {name: a, base_url: 'https://h', auth_value: x}\nsettings:\n  client_keys: ['${MY_KEY}']\n"
    assert parse_config(text, "p.yaml", {"MY_KEY": "from-env"}).config.settings.client_key_values == ["from-env"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"x-api-key": "a"}, "a"), ({"authorization": "Bearer b"}, "b"), ({"authorization": "Basic c"}, None), ({}, None)],
)
def test_presented_key_is_the_x_api_key_or_a_bearer_token(headers, expected):
    from mitmproxy import http

    assert presented_key(http.Headers(**{k.replace("-", "_"): v for k, v in headers.items()})) == expected


def test_key_matches_needs_an_exact_key():
    assert key_matches("k1", ["k0", "k1"])
    assert not key_matches("k", ["k1"]) and not key_matches(None, ["k1"]) and not key_matches("", [""])


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("", True), ("192.168.1.5", True),
                                              ("127.0.0.1", False), ("::1", False), ("localhost", False)])
def test_listening_beyond_this_machine_without_client_keys_warns(tmp_path, caplog, host, warned):
    providers = Providers()
    access = AccessControl(providers)
    with taddons.context(providers, access) as tctx:
        tctx.options.add_option("listen_host", str, host, "")
        with caplog.at_level(logging.WARNING, logger="balancer"):
            access.running()
    assert ("anyone who can reach this port" in caplog.text) is warned


def test_a_providers_file_others_can_read_is_warned_about(tmp_path, caplog):
    from addon.providers import file_safety_warnings

    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  - {name: a, base_url: 'https://a', auth_value: sk-written-out-123}\n")
    path.chmod(0o644)
    (warning,) = file_safety_warnings(str(path), ["sk-written-out-123"])
    assert "readable by other users (mode 644)" in warning and "chmod 600" in warning
    path.chmod(0o600)
    assert file_safety_warnings(str(path), ["sk-written-out-123"]) == []
    assert file_safety_warnings(str(tmp_path / "missing.yaml"), ["sk-written-out-123"]) == []


def test_a_readable_file_that_only_names_environment_variables_is_not_warned_about(tmp_path):
    from addon.providers import file_safety_warnings

    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  - {name: a, base_url: 'https://a', auth_value: '${A_KEY}'}\n")
    path.chmod(0o644)
    assert file_safety_warnings(str(path), ["sk-from-the-environment-456"]) == []


def test_a_refused_key_is_final_for_the_sdk_and_says_what_was_wrong(guarded):
    """Claude Code retried the balancer's 401 for three minutes; it honours `x-should-retry: false`."""
    process, fake = guarded
    wrong = post(process.url, {"x-api-key": "wrong-key-0000"}, json=BODY)
    missing = post(process.url, {}, json=BODY)
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.headers["x-should-retry"] == "false"
    assert "not one of its keys" in wrong.json()["error"]["message"]
    assert "no key was sent" in missing.json()["error"]["message"]
    assert fake.requests == []
    # A 429 or 529 stays retryable: no such header there.
    assert "x-should-retry" not in post(process.url, {"x-api-key": CLIENT_KEY}, json=BODY).headers
