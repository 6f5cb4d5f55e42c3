"""The `routes:` list of the providers file (route_config.py through config.parse_config): what loads, and the
one-line error naming the route for each mistake."""

from __future__ import annotations

import textwrap

import pytest

from addon.config import ConfigError, parse_config

PROVIDERS = """\
providers:
  - {name: main, base_url: "https://a.example", auth_value: k1, max_context: 200000}
  - {name: cheap, type: openai, base_url: "https://b.example/v1", auth_value: k2, images: false, max_context: 64000}
  - {name: spare, base_url: "https://c.example", auth_value: k3, enabled: false}
settings:
  client_keys: [{name: alice, key: alice-key}]
"""


def load(routes: str) -> tuple[object, list[str]]:
    loaded = parse_config(PROVIDERS + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  "), "p.yaml")
    return loaded.config, loaded.warnings


def error_of(routes: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(routes)
    return str(caught.value)


def test_the_issues_example_loads_with_names_entries_and_every_condition():
    config, warnings = load("""\
        - name: long-context
          when: {min_input_tokens: 100000}
          providers: [main, {name: cheap, model: big-context-model}]
        - name: background
          when: {model_tier: small}
          providers: [cheap, main]
          fallback: true
        - name: everything
          when: {model: "claude-*", thinking: true, server_tools: [web_search], images: true, subagent: false,
                 header: {X-Team: "a*"}, client: alice}
          providers: [main]
          hedge_after: 2.5
        """)
    routes = config.routes  # type: ignore[attr-defined]
    assert [r.name for r in routes] == ["long-context", "background", "everything"]
    assert [(p.name, p.model) for p in routes[0].providers] == [("main", None), ("cheap", "big-context-model")]
    assert routes[1].fallback and not routes[0].fallback
    assert routes[2].when.header == {"x-team": "a*"}  # names in any case
    assert routes[2].hedge_after == 2.5
    assert [name for name, _ in routes[2].when.conditions()] == [
        "model", "thinking", "server_tools", "images", "subagent", "header", "client"]
    assert warnings == []


def test_providers_gain_images_and_max_context():
    config, _ = load("- {name: r, providers: [main]}\n")
    main, cheap, _spare = config.providers  # type: ignore[attr-defined]
    assert (main.images, main.max_context) == (True, 200000)
    assert (cheap.images, cheap.max_context) == (False, 64000)


@pytest.mark.parametrize(("routes", "expected"), [
    ("- {name: r1, providers: [main, nobody]}\n",
     "route 'r1': unknown provider 'nobody' (the providers are: main, cheap, spare)"),
    ("- {name: r1, when: {modle_tier: small}, providers: [main]}\n",
     "routes[0] (name 'r1').when: unknown condition 'modle_tier'; known: model_tier, model, thinking, "
     "min_input_tokens, server_tools, images, subagent, header, client"),
    ("- {name: r1, providers: [main]}\n- {name: r1, providers: [cheap]}\n",
     "route 'r1': the name is used twice; route names must be unique"),
    ("- {name: r1, providers: []}\n",
     "routes[0] (name 'r1').providers: a route needs at least one provider"),
    ("- {name: r1, when: {server_tools: true}, providers: [cheap]}\n",
     "route 'r1': takes requests with server tools, but lists no Anthropic-type provider"),
    ("- {name: r1, when: {images: true}, providers: [cheap]}\n",
     "route 'r1': takes requests with images, but every provider it lists has images: false"),
    ("- {name: r1, when: {min_input_tokens: 300000}, providers: [main, cheap]}\n",
     "route 'r1': takes requests of at least 300000 input tokens, but no provider it lists takes that many"),
    ("- {name: r1, when: {client: bob}, providers: [main]}\n",
     "route 'r1': client 'bob' is not a client key's name (the names: alice)"),
    ("- {name: r1, provider: [main]}\n",
     "routes[0] (name 'r1'): unknown key 'provider'; known: name, when, providers, fallback, hedge_after"),
    ("- {name: default, providers: [main]}\n",
     "routes[0] (name 'default').name: 'default' is the name of the route of requests no route takes"),
    ("- {name: r1, when: {model_tier: medium}, providers: [main]}\n",
     "routes[0] (name 'r1').when.model_tier: Input should be 'big' or 'small'"),
    # A misspelt type would never match: the route would stay silent for ever.
    ("- {name: r1, when: {server_tools: [web_serch]}, providers: [main]}\n",
     "routes[0] (name 'r1').when.server_tools: unknown server tool type 'web_serch'; known: "
     "web_search, web_fetch, code_execution, advisor, tool_search_tool, mcp_toolset"),
    # A quoted word is not a truth value to guess at.
    ("- {name: r1, when: {subagent: 'yes'}, providers: [main]}\n",
     "routes[0] (name 'r1').when.subagent: Input should be a valid boolean"),
    ("- {name: r1, fallback: 'false', providers: [main]}\n",
     "routes[0] (name 'r1').fallback: Input should be a valid boolean"),
    ("- {name: r1, hedge_after: .inf, providers: [main]}\n",
     "routes[0] (name 'r1').hedge_after: a number of seconds above 0 (finite), or false"),
    ("- {name: r1, hedge_after: 0, providers: [main]}\n",
     "routes[0] (name 'r1').hedge_after: a number of seconds above 0 (finite), or false"),
    ("- {name: r1, hedge_after: true, providers: [main]}\n",
     "routes[0] (name 'r1').hedge_after: a number of seconds above 0 (finite), or false"),
    ("- {name: r1, when: {header: {'': '*'}}, providers: [main]}\n",
     "routes[0] (name 'r1').when.header: a header name is empty"),
])
def test_each_mistake_is_one_line_naming_the_route(routes, expected):
    message = error_of(routes)
    lines = message.splitlines()
    assert any(line.startswith(expected) for line in lines), message


def test_a_route_of_disabled_providers_only_is_a_warning_not_an_error():
    _, warnings = load("- {name: r1, providers: [spare]}\n")
    assert warnings == ["route 'r1': every provider it lists is disabled: until one is enabled, the requests it "
                        "takes fail (fallback is off)"]


def test_every_mistake_of_the_file_is_reported_at_once():
    message = error_of("- {name: r1, providers: [nobody]}\n- {name: r2, when: {images: true}, providers: [cheap]}\n")
    assert "route 'r1': unknown provider 'nobody'" in message and "route 'r2': takes requests with images" in message


def test_server_tool_types_may_be_a_family_a_version_or_a_glob():
    config, _ = load("- {name: r1, when: {server_tools: [web_search, web_fetch_20250910, 'code_*', mcp_toolset]}, "
                     "providers: [main]}\n")
    assert config.routes[0].when.server_tools == [  # type: ignore[attr-defined]
        "web_search", "web_fetch_20250910", "code_*", "mcp_toolset"]


def test_a_route_without_conditions_before_others_is_named_in_a_warning():
    _, warnings = load("- {name: all, providers: [main]}\n- {name: small, when: {model_tier: small}, "
                       "providers: [cheap]}\n")
    assert warnings == ["route 'all' has no conditions: it takes every request, so the routes after it (small) never "
                        "match; move it last or give it a `when`"]
    _, warnings = load("- {name: small, when: {model_tier: small}, providers: [cheap]}\n- {name: all, "
                       "providers: [main]}\n")
    assert warnings == []  # last, it is a named default


def test_a_when_left_empty_is_no_condition():
    """`when:` with every condition commented out is YAML's null: the route takes every request, as without it."""
    config, _ = load("- name: r1\n  when:\n    # model_tier: small\n  providers: [main]\n")
    assert config.routes[0].when.conditions() == []  # type: ignore[attr-defined]
