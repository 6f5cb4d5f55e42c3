"""`balancer.explain` under mitmproxy's test harness, for a flow as mitmweb's `@focus` passes it: the same dry run
as `POST /routes/explain`, as lines of text (route_explain.py)."""

from __future__ import annotations

import json

import yaml
from mitmproxy.test import taddons, tflow

from addon.affinity import SessionAffinity
from addon.attempt_marker import ATTEMPT
from addon.commands import BalancerCommands
from addon.providers import Providers
from addon.route_explain import RouteExplain
from addon.route_plan import RoutePlanner
from addon.routing import Router
from helpers import anthropic_provider


def messages_flow(body: dict, path: str = "/v1/messages") -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", path
    flow.request.content = json.dumps(body).encode()
    flow.request.headers["x-team"] = "red-1\nreq 00000000 forged"
    return flow


def test_explain_names_the_route_the_conditions_and_the_order_and_moves_nothing(tmp_path):
    file = tmp_path / "providers.yaml"
    file.write_text(yaml.safe_dump({
        "providers": [anthropic_provider("a", "http://127.0.0.1:9"), anthropic_provider("b", "http://127.0.0.1:9"),
                      anthropic_provider("c", "http://127.0.0.1:9", enabled=False)],
        "routes": [{"name": "team", "when": {"header": {"x-team": "blue-*"}}, "providers": ["a"]},
                   {"name": "small", "when": {"model_tier": "small"},
                    "providers": ["c", {"name": "b", "model": "b-small"}, "a"]}],
        "settings": {"strategy": "round_robin"},
    }))
    providers = Providers()
    router = Router(seed=1)
    explainer = RouteExplain(providers, RoutePlanner(router), SessionAffinity())
    commands = BalancerCommands(providers, explain=explainer.explain_flow)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=str(file))
        flow = messages_flow({"model": "claude-haiku-4-5", "max_tokens": 8,
                              "messages": [{"role": "user", "content": "Hi"}]})
        text = tctx.master.commands.call("balancer.explain", [flow])
        again = tctx.master.commands.call("balancer.explain", [flow])
        other = tctx.master.commands.call("balancer.explain", [messages_flow({}, path="/providers")])
        attempt = messages_flow({"model": "b-small", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
        attempt.metadata[ATTEMPT] = {"provider": "b"}  # what provider b received, with its mapped model
        of_attempt = tctx.master.commands.call("balancer.explain", [attempt])
    lines = text.splitlines()
    assert lines[:3] == [
        f"flow {flow.id[:8]}:",
        "route: small",
        "  team: no - header x-team: blue-*: no (x-team: red-1\\nreq 00000000 forged)",  # escaped: one line
    ]
    assert lines[3] == "  small: matched - model_tier small: yes (small)"
    assert lines[4] == "order: b (b-small, usable), a (claude-haiku-4-5, usable)"
    assert lines[5] == "skipped: c (disabled)"
    assert again == text and router.turn == 0  # the round-robin turn did not move
    assert providers.board.get("a").requests == 0 and providers.board.get("b").requests == 0
    assert "not a POST /v1/messages request" in other
    assert "it is an attempt (what a provider received); explain its client's flow" in of_attempt
