"""Routes through the real mitmdump: one balancer with a route per condition, fake providers behind it. Each request
names a model of its own, so that its JSON log entry (the flow's metadata) is found by it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from balancer_proc import BalancerProcess
from fakes import FakeProvider, openai_json
from helpers import anthropic_provider, free_port, openai_provider, wait_until

ALICE, BOB, ADMIN = {"x-api-key": "alice-key"}, {"x-api-key": "bob-key"}, {"x-api-key": "admin-key"}
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-big",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "from openai"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
BILLING = "x-anthropic-billing-header: cc_version=2.1.224.b44; cc_entrypoint=cli;"

ROUTES: list[dict[str, Any]] = [
    {"name": "long", "when": {"min_input_tokens": 20000}, "providers": ["sub"]},
    {"name": "team", "when": {"header": {"X-Team": "red-*"}}, "providers": ["sub"]},
    {"name": "subagents", "when": {"subagent": True}, "providers": ["sub"]},
    {"name": "bobs", "when": {"client": "bob"}, "providers": ["oai"]},
    {"name": "search", "when": {"server_tools": ["web_search"]}, "providers": ["oai", "big"]},
    {"name": "thinking", "when": {"thinking": True, "model": "*opus*"},
     "providers": [{"name": "cheap", "model": "cheap-thinker"}]},
    {"name": "small", "when": {"model_tier": "small"}, "providers": ["cheap"]},
    {"name": "pictures", "when": {"images": True}, "providers": ["cheap", "big"]},
    {"name": "roomy", "when": {"model": "roomy-*"}, "providers": ["big", "sub"]},
    {"name": "spill", "when": {"model": "spill-*"}, "providers": ["off"], "fallback": True},
    {"name": "stuck", "when": {"model": "stuck-*"}, "providers": ["off"]},
    {"name": "falls", "when": {"model": "falls-*"}, "providers": ["dead1"], "fallback": True},
    {"name": "dies", "when": {"model": "dies-*"}, "providers": ["dead2"]},
]


class Setup:
    def __init__(self, balancer: BalancerProcess, fakes: dict[str, FakeProvider], log_file: Path):
        self.balancer, self.fakes, self.log_file = balancer, fakes, log_file
        self.closed_port = free_port()

    def providers(self) -> list[dict[str, Any]]:
        return [
            anthropic_provider("big", self.fakes["big"].url, max_context=10000),
            anthropic_provider("cheap", self.fakes["cheap"].url, images=False),
            openai_provider("oai", self.fakes["oai"].url),
            anthropic_provider("sub", self.fakes["sub"].url),
            anthropic_provider("off", "http://127.0.0.1:9", enabled=False),
            # Nothing listens there: each refuses the connection (last, so the default route never needs them).
            anthropic_provider("dead1", f"http://127.0.0.1:{self.closed_port}"),
            anthropic_provider("dead2", f"http://127.0.0.1:{self.closed_port}"),
        ]

    def write(self, routes: list[dict[str, Any]], **settings: Any) -> None:
        document = {
            "providers": self.providers(), "routes": routes,
            "settings": {"client_keys": [{"name": "alice", "key": "alice-key"}, {"name": "bob", "key": "bob-key"}],
                         "admin_keys": ["admin-key"], "log_file": str(self.log_file), **settings},
        }
        self.balancer.providers_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def reload(self) -> httpx.Response:
        return httpx.post(self.balancer.url + "/providers/reload", headers=ADMIN, timeout=10)

    def ask(self, model: str, key: dict[str, str] = ALICE, headers: dict[str, str] | None = None,
            **body: Any) -> httpx.Response:
        payload = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}], **body}
        return httpx.post(self.balancer.url + "/v1/messages", json=payload, headers={**key, **(headers or {})},
                          timeout=30)

    def entry(self, model: str) -> dict[str, Any]:
        """The request's fields in the JSON log (what flow.metadata["balancer"] holds)."""
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
            found[:] = [e["request"] for e in map(json.loads, lines)
                        if e.get("request", {}).get("requested_model") == model]
            return bool(found)

        wait_until(logged, what=f"the log entry of {model}")
        return found[-1]

    def line(self, model: str) -> str:
        wait_until(lambda: any(f" {model} -> " in line for line in self.balancer.log_lines), what="the log line")
        return next(line for line in self.balancer.log_lines if f" {model} -> " in line)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("routes")
    fakes = {"big": FakeProvider(), "cheap": FakeProvider(), "oai": FakeProvider(openai_json(COMPLETION)),
             "sub": FakeProvider()}
    started: list[FakeProvider] = []
    balancer = BalancerProcess(workdir)
    try:
        for fake in fakes.values():
            started.append(fake.start())
        setup = Setup(balancer, fakes, workdir / "balancer.jsonl")
        setup.write(ROUTES)
        balancer.start()
        yield setup
    finally:
        balancer.stop()
        for fake in started:
            fake.stop()


@pytest.fixture
def routes(setup: Setup) -> Setup:
    """The routes above, whatever an earlier test of the module left running."""
    setup.write(ROUTES)
    assert setup.reload().status_code == 200
    return setup


def served(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-balancer-provider"]


def test_each_condition_takes_its_route(routes: Setup):
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        # (model, request, route, provider)
        ("claude-sonnet-4-plain", {}, "default", "big"),
        ("claude-sonnet-4-long", {"messages": [{"role": "user", "content": "word " * 25000}]}, "long", "sub"),
        ("claude-sonnet-4-team", {"headers": {"x-team": "red-5"}}, "team", "sub"),
        ("claude-sonnet-4-blue", {"headers": {"x-team": "blue-5"}}, "default", "big"),
        ("claude-sonnet-4-sub", {"system": [{"type": "text", "text": BILLING + " cc_is_subagent=true;"}]},
         "subagents", "sub"),
        ("claude-sonnet-4-main", {"system": [{"type": "text", "text": BILLING}]}, "default", "big"),
        ("claude-sonnet-4-bob", {"key": BOB}, "bobs", "oai"),
        ("claude-opus-4-8-think", {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048},
         "thinking", "cheap"),
        ("claude-opus-4-8-nothink", {}, "default", "big"),
        ("claude-haiku-4-5-small", {}, "small", "cheap"),
    ]
    for model, extra, route, provider in cases:
        assert served(routes.ask(model, **extra)) == provider, model
        assert routes.entry(model)["route"] == route, model
    # The per-route model: the thinking route asks `cheap` for its own model, whatever the tier.
    assert routes.fakes["cheap"].message_requests[-2].json()["model"] == "cheap-thinker"
    assert routes.fakes["cheap"].message_requests[-1].json()["model"] == "claude-haiku-4-5-small"
    assert "| route thinking" in routes.line("claude-opus-4-8-think")


def test_capabilities_skip_with_their_reasons(routes: Setup):
    before = len(routes.fakes["cheap"].message_requests)
    # Images: `cheap` (images: false) is left out for `big`, and the skip is in the log line and the metadata.
    picture = {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, IMAGE]}]}
    assert served(routes.ask("claude-sonnet-4-picture", **picture)) == "big"
    assert routes.entry("claude-sonnet-4-picture")["skipped"] == [
        {"provider": "cheap", "reason": "has images: false and the request carries images"}]
    assert "route pictures skipped cheap (has images: false" in routes.line("claude-sonnet-4-picture")
    # An image inside a tool result counts too; on the small route nobody can take it: a 400 that says why.
    in_result = {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [IMAGE]}]}]}
    refused = routes.ask("claude-haiku-4-5-picture", **in_result)
    assert refused.status_code == 400
    assert "images: false" in refused.json()["error"]["message"]
    assert len(routes.fakes["cheap"].message_requests) == before
    # Server tools: the OpenAI-type provider comes after the Anthropic-type one, and is named as not needed.
    assert served(routes.ask("claude-sonnet-4-search", tools=[WEB_SEARCH])) == "big"
    (skip,) = routes.entry("claude-sonnet-4-search")["skipped"]
    assert skip["provider"] == "oai" and "cannot run server tools" in skip["reason"]
    # A context above `big`'s max_context (the local estimate): `sub` first, `big` kept as a last resort.
    assert served(routes.ask("roomy-1", messages=[{"role": "user", "content": "word " * 12000}])) == "sub"
    (skip,) = routes.entry("roomy-1")["skipped"]
    assert skip["provider"] == "big" and "exceed its max_context 10000 (a last resort" in skip["reason"]
    assert served(routes.ask("roomy-2")) == "big"  # a short one goes in the route's order


def test_fallback_on_and_off(routes: Setup):
    assert served(routes.ask("spill-1")) == "big"
    entry = routes.entry("spill-1")
    assert entry["route"] == "default" and "no provider of route 'spill'" in entry["fell_back"]
    assert "(fell back: no provider of route 'spill'" in routes.line("spill-1")
    stuck = routes.ask("stuck-1")
    assert stuck.status_code == 503
    assert "off: disabled" in stuck.json()["error"]["message"]
    assert routes.entry("stuck-1")["route"] == "stuck"


def test_fallback_also_when_the_routes_providers_fail_the_request(routes: Setup):
    # The route's provider looked usable when the request was planned, then refused the connection.
    assert served(routes.ask("falls-1")) == "big"
    entry = routes.entry("falls-1")
    assert entry["route"] == "default"
    assert entry["fell_back"].startswith("every provider of route 'falls' failed (all providers of route 'falls' "
                                         "failed: dead1: connection refused")
    assert [a["provider"] for a in entry["attempts"]] == ["dead1", "big"]
    # Without fallback the client is told that only the route's providers were tried.
    dies = routes.ask("dies-1")
    assert dies.status_code in (502, 503), dies.text
    assert dies.json()["error"]["message"] == "all providers of route 'dies' failed: dead2: connection refused"
    # Both are cooling down now: a request they were not needed for names them, and why they were left out.
    assert served(routes.ask("claude-sonnet-4-after-dead")) == "big"
    skipped = {s["provider"]: s["reason"] for s in routes.entry("claude-sonnet-4-after-dead")["skipped"]}
    assert skipped.keys() == {"dead1", "dead2"}
    assert all(r.startswith("cooling down for ") and r.endswith("after connection refused (not needed)")
               for r in skipped.values()), skipped


def test_the_running_routes_are_listed_in_the_reload_summary_and_providers(routes: Setup):
    routes.write([*ROUTES, {"name": "keyed", "when": {"header": {"x-api-key": "team-a-*"}}, "providers": ["big"]}])
    reloaded = routes.reload().json()
    assert reloaded["summary"].endswith("; routes: " + ", ".join(r["name"] for r in ROUTES) + ", keyed (then default)")
    listed = httpx.get(routes.balancer.url + "/providers", headers=ADMIN, timeout=10).json()["routes"]
    assert [r["name"] for r in listed] == [*(r["name"] for r in ROUTES), "keyed"]
    assert listed[0] == {"name": "long", "when": {"min_input_tokens": 20000}, "providers": [{"name": "sub"}]}
    assert listed[-1]["when"] == {"header": {"x-api-key": "(hidden)"}}  # a glob on a credential is not shown


def test_a_reload_with_invalid_routes_keeps_the_running_ones(routes: Setup):
    routes.write([{"name": "team", "when": {"header": {"x-team": "*"}}, "providers": ["nobody"]}])
    refused = routes.reload()
    assert refused.status_code == 400
    assert "route 'team': unknown provider 'nobody'" in refused.json()["error"]["message"]
    assert served(routes.ask("claude-sonnet-4-kept", headers={"x-team": "red-1"})) == "sub"
    assert routes.entry("claude-sonnet-4-kept")["route"] == "team"


def explain(setup: Setup, body: dict[str, Any], key: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.post(setup.balancer.url + "/routes/explain", json=body, headers=key, timeout=30)


def test_explain_says_why_and_sends_nothing(routes: Setup):
    sent = {name: len(fake.requests) for name, fake in routes.fakes.items()}
    body = {"model": "claude-opus-4-8", "max_tokens": 8, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}]}
    answer = explain(routes, {"request": body, "headers": {"x-team": "blue"}, "client": "alice"})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["route"] == "thinking"
    checks = {check["route"]: check for check in found["routes"]}
    assert list(checks)[-1] == "thinking" and checks["thinking"]["matched"]
    assert checks["team"]["conditions"] == [
        {"condition": "header", "wanted": "x-team: red-*", "request": "x-team: blue", "held": False}]
    assert checks["bobs"]["conditions"][0]["request"] == "alice"
    # `cheap` would get it for the route's model, but it takes no images: nobody can serve it there.
    assert found["order"] == [] and "images: false" in found["refusal"]
    assert found["skipped"] == [{"provider": "cheap", "reason": "has images: false and the request carries images"}]
    plain = explain(routes, {"model": "claude-sonnet-4", "max_tokens": 8,
                             "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert plain["route"] == "default"
    assert [e["provider"] for e in plain["order"]] == ["big", "cheap", "oai", "sub", "dead1", "dead2"]
    assert {name: len(fake.requests) for name, fake in routes.fakes.items()} == sent
    # An admin endpoint: a client key is not enough.
    assert explain(routes, body, key=ALICE).status_code == 401


@pytest.mark.parametrize(("wrapper", "said"), [
    ({"headers": [["x-team", "red-1"]]}, "headers: an object of header names to string values"),
    ({"headers": {"x-team": ["red-1"]}}, "headers: an object of header names to string values"),
    ({"client": "nobody"}, 'client: "nobody" is not a client key\'s name (the names: alice, bob)'),
    ({"client": 5}, "client: 5 is not a client key's name"),
    ({"header": {"x-team": "red-1"}}, "unknown key 'header' beside 'request'"),
    ({"request": "claude-sonnet-4"}, "request: a Messages request (a JSON object) is required"),
])
def test_explain_says_what_is_wrong_with_its_wrapper(routes: Setup, wrapper: dict[str, Any], said: str):
    """A wrapper's headers or client that cannot be used are said, not passed over for the caller's own (which
    would explain the request as some other client sends it)."""
    body = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    answer = explain(routes, {"request": body, **wrapper})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert said in answer.json()["error"]["message"]
    assert explain(routes, {"request": body, "client": None, "headers": {"x-team": "red-1"}}).json()["route"] == "team"


def test_explain_predicts_round_robin_without_moving_it(routes: Setup):
    routes.write([{"name": "pair", "when": {"model": "pair-*"}, "providers": ["big", "sub"]}],
                 strategy="round_robin", affinity="none")
    assert routes.reload().status_code == 200
    body = {"model": "pair-1", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    for turn in range(2):
        firsts = {explain(routes, body).json()["order"][0]["provider"] for _ in range(3)}
        assert len(firsts) == 1, firsts  # asking again changes nothing
        assert served(routes.ask(f"pair-{turn}")) == firsts.pop()


def test_a_session_keeps_its_provider_per_route(routes: Setup):
    routes.write([{"name": "pair", "when": {"model": "pair-*"}, "providers": ["big", "sub"]},
                  {"name": "only-big", "when": {"model": "onlybig-*"}, "providers": ["big"]},
                  {"name": "only-sub", "when": {"model": "onlysub-*"}, "providers": ["sub"]}],
                 strategy="round_robin", affinity="session")
    assert routes.reload().status_code == 200
    session = {"metadata": {"user_id": json.dumps({"session_id": "routes-session-1"})}}
    first = served(routes.ask("pair-s1", **session))
    # The same session on another route, served by the pair's other provider...
    other = "onlysub-s" if first == "big" else "onlybig-s"
    assert served(routes.ask(other, **session)) != first
    # ... does not move the session on the pair's route, whatever the round-robin turn says.
    for turn in range(3):
        assert served(routes.ask(f"pair-s{turn + 2}", **session)) == first
