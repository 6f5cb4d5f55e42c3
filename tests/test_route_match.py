"""Request traits (request_traits.py) and the route matcher (route_match.py), pure: examples, and properties with
hypothesis (first match wins, a route without conditions takes everything, a condition more never makes a route
match that did not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from addon.request_traits import RequestTraits, input_token_bound, is_subagent, traits_of
from addon.route_config import DEFAULT_ROUTE, Route, RouteWhen
from addon.route_match import check_route, match_route
from addon.token_count import count_input_tokens

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def fixture_body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"claude-code-{name}.request.json").read_text())["body"]


def traits(body: dict[str, Any], headers: list[tuple[str, str]] | None = None, client: str | None = None,
           tokens: int | None = None) -> RequestTraits:
    found = traits_of(body, headers or [], client)
    return found.with_tokens(tokens) if tokens is not None else found


# -- traits --------------------------------------------------------------------------------------------------------

def test_claude_codes_captured_requests():
    first = traits(fixture_body("first-turn"))
    assert (first.model, first.tier, first.thinking, first.subagent, first.images) == (
        "claude-opus-4-8", "big", True, False, False)
    title = traits(fixture_body("title"))
    assert title.thinking is False  # {type: disabled}
    budget = traits(fixture_body("budget-tool-result"))
    assert budget.thinking is True and budget.subagent is False  # {type: enabled, budget_tokens}
    # A subagent's request as the CLI sent it: the same model and headers as the main agent's, only the marker.
    subagent = traits(fixture_body("subagent"))
    assert (subagent.subagent, subagent.model) == (True, first.model)


def test_the_subagent_marker_counts_only_in_the_billing_line_of_the_first_system_block():
    main = fixture_body("first-turn")
    assert not is_subagent(main)
    sub = json.loads(json.dumps(main))
    sub["system"][0]["text"] = sub["system"][0]["text"].rstrip() + " cc_is_subagent=true;"
    assert is_subagent(sub)
    # The same words anywhere else are a main agent's: in a later system block, a message, or a line of its own.
    elsewhere = json.loads(json.dumps(main))
    elsewhere["system"][1]["text"] += "\nx-anthropic-billing-header: cc_is_subagent=true;"
    elsewhere["messages"].append({"role": "user", "content": "x-anthropic-billing-header: cc_is_subagent=true;"})
    assert not is_subagent(elsewhere)
    assert not is_subagent({"system": "You are Claude.\nx-anthropic-billing-header: cc_is_subagent=true;"})
    assert not is_subagent({"system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1; "
                                                                "cc_is_subagent=false;"}]})
    assert is_subagent({"system": "x-anthropic-billing-header: cc_version=2.1.224; cc_is_subagent=true;\nmore"})


def test_images_are_found_inside_tool_results_too():
    assert traits({"model": "m", "messages": [{"role": "user", "content": [IMAGE]}]}).images
    nested = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]}]}
    assert traits({"model": "m", "messages": [nested]}).images
    assert not traits({"model": "m", "messages": [{"role": "user", "content": "an image, said in words"}]}).images


def test_server_tools_are_named_by_type():
    body = {"model": "m", "tools": [{"name": "Read", "input_schema": {}}, {"type": "web_search_20250305",
                                                                           "name": "web_search"}]}
    assert traits(body).server_tools == ("web_search_20250305",)


# Reproducible on a busy machine: no deadlines, no example database.
PROPERTIES = settings(deadline=None, derandomize=True, database=None)


@PROPERTIES
@given(st.recursive(
    st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["type", "text", "content", "input", "name", "thinking"]), inner, max_size=4),
    max_leaves=25,
))
def test_the_size_bound_is_never_below_the_count(content: Any):
    blocks = [{"type": "text", "text": content if isinstance(content, str) else json.dumps(content)},
              {"type": "tool_use", "id": "t", "name": "x", "input": {"v": content}}, content]
    body = {"model": "m", "messages": [{"role": "user", "content": blocks}], "tools": [{"name": "t", "input_schema":
                                                                                        {"d": content}}]}
    for raw in (json.dumps(body).encode(), json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()):
        assert count_input_tokens(body) <= input_token_bound(raw)


def test_the_size_bound_holds_on_claude_codes_requests():
    for name in ("first-turn", "tool-result", "title", "budget-tool-result"):
        body = fixture_body(name)
        assert count_input_tokens(body) <= input_token_bound(json.dumps(body, separators=(",", ":")).encode())


# -- conditions ----------------------------------------------------------------------------------------------------

def route(name: str = "r", **when: Any) -> Route:
    return Route(name=name, when=RouteWhen(**when), providers=[{"name": "p"}])  # type: ignore[list-item]


def held(route_: Route, traits_: RequestTraits) -> dict[str, bool]:
    return {check.name: check.held for check in check_route(route_, traits_).conditions}


def test_each_condition():
    haiku = traits({"model": "claude-haiku-4-5", "thinking": {"type": "adaptive"}, "messages": []},
                   headers=[("X-Team", "alpha"), ("x-api-key", "secret-value")], client="alice", tokens=1200)
    assert held(route(model_tier="small", model="CLAUDE-HAIKU-*", thinking=True, min_input_tokens=1000,
                      images=False, subagent=False, header={"x-team": "al*"}, client="alice"), haiku) == {
        "model_tier": True, "model": True, "thinking": True, "min_input_tokens": True, "images": True,
        "subagent": True, "header": True, "client": True}
    assert held(route(model_tier="big", model="*opus*", thinking=False, min_input_tokens=1201, images=True,
                      subagent=True, header={"x-team": "beta"}, client="bob", server_tools=True), haiku) == {
        "model_tier": False, "model": False, "thinking": False, "min_input_tokens": False, "images": False,
        "subagent": False, "header": False, "client": False, "server_tools": False}


def test_server_tools_by_type_name_any_version():
    searching = traits({"model": "m", "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert held(route(server_tools=["web_search"]), searching) == {"server_tools": True}
    assert held(route(server_tools=["web_fetch", "code_*"]), searching) == {"server_tools": False}
    assert held(route(server_tools=True), searching) == {"server_tools": True}
    assert held(route(server_tools=False), searching) == {"server_tools": False}


def test_a_header_that_holds_a_credential_is_never_shown():
    check = check_route(route(header={"x-api-key": "*"}), traits({"model": "m"}, headers=[("x-api-key", "sk-x")]))
    assert check.matched and "sk-x" not in str(check.as_dict()) and "(hidden)" in check.conditions[0].actual


def test_min_input_tokens_is_judged_by_the_bound_when_not_counted():
    small = traits({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).with_bound(40)
    assert small.input_tokens is None
    assert held(route(min_input_tokens=100000), small) == {"min_input_tokens": False}
    assert held(route(min_input_tokens=30), small) == {"min_input_tokens": False}  # not counted: not known to hold
    assert check_route(route(min_input_tokens=30), small).conditions[0].actual == "at most 40"


# -- the matcher's properties -------------------------------------------------------------------------------------

CONDITION_VALUES = {
    "model_tier": st.sampled_from(["big", "small"]),
    "model": st.sampled_from(["*", "claude-*", "*haiku*", "gpt-?", "claude-opus-4-8"]),
    "thinking": st.booleans(),
    "min_input_tokens": st.integers(1, 5000),
    "server_tools": st.booleans() | st.lists(st.sampled_from(["web_search", "web_fetch", "code_*"]), min_size=1),
    "images": st.booleans(),
    "subagent": st.booleans(),
    "header": st.dictionaries(st.sampled_from(["x-team", "user-agent"]), st.sampled_from(["*", "a*", "b"]),
                              min_size=1, max_size=2),
    "client": st.sampled_from(["alice", "bob"]),
}
whens = st.fixed_dictionaries({}, optional=CONDITION_VALUES)
requests = st.builds(
    RequestTraits,
    model=st.sampled_from(["claude-opus-4-8", "claude-haiku-4-5", "gpt-4", "x"]),
    tier=st.sampled_from(["big", "small"]),
    thinking=st.booleans(),
    server_tools=st.lists(st.sampled_from(["web_search_20250305", "web_fetch_20250910", "code_execution_1"]),
                          max_size=2, unique=True).map(tuple),
    images=st.booleans(),
    subagent=st.booleans(),
    headers=st.dictionaries(st.sampled_from(["x-team", "user-agent"]), st.sampled_from(["a", "ab", "b", "c"])),
    client=st.none() | st.sampled_from(["alice", "bob"]),
    input_tokens=st.integers(0, 6000),
)


@PROPERTIES
@given(st.lists(whens, max_size=5), requests)
def test_the_first_route_whose_conditions_all_hold_wins(conditions: list[dict[str, Any]], request: RequestTraits):
    routes = [route(f"r{i}", **when) for i, when in enumerate(conditions)]
    match = match_route(routes, request)
    matching = [r for r in routes if check_route(r, request).matched]
    if matching:
        assert match.route is matching[0] and match.name == matching[0].name
        assert [c.route for c in match.checks] == [r.name for r in routes[: routes.index(matching[0]) + 1]]
    else:
        assert match.route is None and match.name == DEFAULT_ROUTE and len(match.checks) == len(routes)
    for check in match.checks:  # every condition of every route looked at is reported
        looked_at = next(r for r in routes if r.name == check.route)
        assert [c.name for c in check.conditions] == [name for name, _ in looked_at.when.conditions()]


@PROPERTIES
@given(st.lists(whens, max_size=3), requests)
def test_a_route_without_conditions_takes_every_request_that_reaches_it(before: list[dict[str, Any]],
                                                                        request: RequestTraits):
    routes = [route(f"r{i}", **when) for i, when in enumerate(before)] + [route("any")]
    assert match_route(routes, request).route is not None


@PROPERTIES
@given(whens, st.sampled_from(sorted(CONDITION_VALUES)).flatmap(lambda k: st.tuples(st.just(k), CONDITION_VALUES[k])),
       requests)
def test_a_condition_more_never_makes_a_route_match(when: dict[str, Any], extra: tuple[str, Any],
                                                     request: RequestTraits):
    narrower = {**when, extra[0]: extra[1]} if extra[0] not in when else when
    if check_route(route(**narrower), request).matched:
        assert check_route(route(**when), request).matched
