"""mitmweb's flow list at a glance: the balancer's own answers show its own address (not the reverse target's) and
say who answered, a served flow names its provider in the comment column, and scripts/web shows that column."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from mitmproxy import io, options
from mitmproxy.tools.web.app import flow_to_json

from _mitm_args import WEB_COLUMNS, has_web_columns, mitm_args
from addon.attempt_marker import is_attempt_flow
from addon.own_answers import authority
from balancer_proc import BalancerProcess
from fakes import FakeProvider
from helpers import anthropic_provider

MESSAGE = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}


def listed_url(flow: Any) -> str:
    """The URL mitmweb's flow list shows: its `pretty_url` of the flow state the browser gets."""
    request = flow_to_json(flow)["request"]
    port = "" if {"http": 80, "https": 443}.get(request["scheme"]) == request["port"] else f":{request['port']}"
    return f"{request['scheme']}://{request['pretty_host']}{port}{request['path']}"


def test_the_balancers_own_answers_show_its_address_and_served_flows_their_provider(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeProvider() as fake:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([anthropic_provider("a", fake.url)], count_tokens="local")
        with balancer, httpx.Client(base_url=balancer.url, headers={"x-api-key": "client-key"}, timeout=30) as http:
            own = {
                "/": http.get("/").status_code,
                "/providers": http.get("/providers").status_code,
                "/metrics": http.get("/metrics").status_code,
                "/nowhere": http.get("/nowhere").status_code,
                "/v1/messages/count_tokens": http.post("/v1/messages/count_tokens", json=MESSAGE).status_code,
            }
            invalid = http.post("/v1/messages", json={"model": "claude-sonnet-4"})
            served = http.post("/v1/messages", json=MESSAGE)
            port = balancer.port
    assert own == {"/": 200, "/providers": 200, "/metrics": 200, "/nowhere": 404, "/v1/messages/count_tokens": 200}
    assert invalid.status_code == 400 and served.status_code == 200

    with flows_file.open("rb") as f:
        saved = list(io.FlowReader(f).stream())
    clients = [flow for flow in saved if not is_attempt_flow(flow)]
    by_path = {flow.request.path: flow for flow in clients if flow.response.status_code != 400}
    (invalid_flow,) = [flow for flow in clients if flow.response.status_code == 400]
    for path in own:
        flow = by_path[path]
        assert listed_url(flow) == f"http://127.0.0.1:{port}{path}"
        assert (flow.request.host, flow.request.port, flow.request.host_header) == ("127.0.0.1", port,
                                                                                   f"127.0.0.1:{port}")
        assert flow.request.headers["x-api-key"] == "[redacted]"  # the saved flow still hides the client's key
    assert by_path["/providers"].comment == "answered by the balancer"
    assert by_path["/v1/messages/count_tokens"].comment == "counted locally by the balancer"
    assert listed_url(invalid_flow) == f"http://127.0.0.1:{port}/v1/messages"
    assert invalid_flow.comment == "answered by the balancer"

    # A flow a provider served keeps the client's request as mitmproxy gave it, and names the provider.
    served_flow = by_path["/v1/messages"]
    assert served_flow.response.status_code == 200 and served_flow.comment == "served by a"
    assert served_flow.request.host == "api.anthropic.com"
    (attempt,) = [flow for flow in saved if is_attempt_flow(flow)]
    assert listed_url(attempt) == f"{fake.url}/v1/messages" and attempt.request.headers["x-api-key"] == "[redacted]"


@pytest.mark.parametrize(("scheme", "host", "port", "shown"), [
    ("http", "127.0.0.1", 8080, "127.0.0.1:8080"),
    ("http", "127.0.0.1", 80, "127.0.0.1"),
    ("https", "::1", 8443, "[::1]:8443"),
    ("https", "10.0.0.5", 443, "10.0.0.5"),
])
def test_authority_brackets_ipv6_and_leaves_out_default_ports(scheme, host, port, shown):
    assert authority(scheme, host, port) == shown


@pytest.mark.skipif(not has_web_columns(), reason="this mitmproxy's mitmweb has no web_columns option")
def test_scripts_web_shows_the_comment_column_in_mitmweb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no providers.yaml: the built-in default
    args = mitm_args([], "mitmweb")
    # Set as mitmweb sets them: its own option, from repeated --set, becomes the list with the comment column.
    from mitmproxy.tools.web.webaddons import WebAddon

    opts = options.Options()
    WebAddon().load(opts)
    opts.set(*[value for flag, value in itertools.pairwise(args)
               if flag == "--set" and value.startswith("web_columns=")])
    assert list(opts.web_columns) == list(WEB_COLUMNS) and opts.web_columns[-1] == "comment"

    assert not [a for a in mitm_args([], "mitmdump") if a.startswith("web_columns=")]
    own = mitm_args(["--set", "web_columns=path"], "mitmweb")  # the user's choice wins
    assert not [a for a in own if a.startswith("web_columns=")]
