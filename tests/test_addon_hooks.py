"""The addon classes under mitmproxy's own test harness (taddons/tflow), without a network."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addon.admin import AdminApi
from addon.dispatch import route_of
from addon.gateway import Gateway
from addon.providers import Providers
from balancer_proc import providers_yaml
from helpers import anthropic_provider


def write(tmp_path, *providers, **settings):
    path = tmp_path / "providers.yaml"
    path.write_text(providers_yaml(list(providers), **settings))
    return str(path)


def test_configure_loads_the_file_and_forces_lazy_connections(tmp_path):
    providers = Providers()
    with taddons.context(providers) as tctx:
        # Declared by mitmproxy's proxyserver addon in a real run.
        tctx.options.add_option("connection_strategy", str, "eager", "")
        tctx.configure(providers, providers=write(tmp_path, anthropic_provider("a", "http://127.0.0.1:9")))
        assert tctx.options.connection_strategy == "lazy"
        assert [p.name for p in providers.config.providers] == ["a"]


def test_a_later_bad_file_is_refused_and_the_running_one_kept(tmp_path):
    providers = Providers()
    with taddons.context(providers) as tctx:
        tctx.configure(providers, providers=write(tmp_path, anthropic_provider("a", "http://127.0.0.1:9")))
        bad = tmp_path / "bad.yaml"
        bad.write_text("providers: []\n")
        with pytest.raises(exceptions.OptionsError, match="providers"):
            tctx.configure(providers, providers=str(bad))
        assert [p.name for p in providers.config.providers] == ["a"]


def test_a_bad_file_at_start_up_is_logged_and_nothing_is_served(tmp_path, caplog):
    providers = Providers()
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  - name: a\n")
    with taddons.context(providers) as tctx:
        tctx.configure(providers, providers=str(bad))
        assert "base_url: required key is missing" in providers.startup_error
        assert "cannot load the providers file" in caplog.text


@pytest.mark.anyio
async def test_gateway_answers_503_while_the_configuration_is_unusable(tmp_path):
    providers = Providers()
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: 3\n")
    gateway = Gateway(providers)
    with taddons.context(providers, gateway) as tctx:
        tctx.configure(providers, providers=str(bad))
        flow = tflow.tflow()
        flow.request.method, flow.request.path = "POST", "/v1/messages"
        flow.request.content = json.dumps({"model": "m", "messages": []}).encode()
        await gateway.request(flow)
        assert flow.response.status_code == 503
        assert "no usable configuration" in flow.response.json()["error"]["message"]


def test_admin_leaves_other_paths_alone_and_answers_its_own(tmp_path):
    providers = Providers()
    admin = AdminApi(providers)
    with taddons.context(providers, admin) as tctx:
        tctx.configure(providers, providers=write(tmp_path, anthropic_provider("a", "http://127.0.0.1:9")))
        other = tflow.tflow()
        other.request.path = "/v1/messages"
        admin.request(other)
        assert other.response is None

        listing = tflow.tflow()
        listing.request.method, listing.request.path = "GET", "/providers?x=1"
        admin.request(listing)
        assert listing.response.status_code == 200
        assert listing.response.json()["providers"][0]["name"] == "a"
        assert "key-of-a" not in listing.response.text


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages", ("messages", None)),
        ("POST", "/v1/messages?beta=true", ("messages", None)),
        ("POST", "/v1/messages/count_tokens?beta=true", ("count_tokens", None)),
        ("GET", "/v1/models", ("api", None)),
        ("GET", "/v1/messages", (None, "/v1/messages accepts POST only")),
        ("GET", "/favicon.ico", (None, None)),
    ],
)
def test_route_of_names_the_route_or_why_its_method_is_refused(method, path, expected):
    assert route_of(method, path) == expected
