"""The request changed as a provider needs it (pure), and the store of what each provider refused."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from mitmproxy.test import taddons

from addon.capabilities import (
    DROP,
    DROP_BETA,
    FOLD_SYSTEM,
    MAX_FIXES_PER_MODEL,
    MAX_MODELS_PER_PROVIDER,
    RENAME,
    STRIP_THINKING,
    Capabilities,
    Fix,
)
from addon.commands import BalancerCommands
from addon.config import ProviderConfig
from addon.exchange import Exchange
from addon.failover import same_request
from addon.providers import Providers
from addon.request_fixes import (
    THINKING_PLACEHOLDER,
    anthropic_body_with,
    headers_without_betas,
    openai_body_with,
    system_messages_folded,
    without_earlier_thinking,
)
from balancer_proc import providers_yaml
from fuzzing import quick_and_deep
from helpers import anthropic_provider, openai_provider


def test_openai_parameters_are_dropped_and_renamed() -> None:
    body = {"model": "m", "messages": [], "max_tokens": 100, "reasoning_effort": "high", "user": "u"}
    fixed = openai_body_with(body, {Fix(DROP, "reasoning_effort"), Fix(RENAME, "max_tokens", "max_completion_tokens")})
    assert fixed == {"model": "m", "messages": [], "max_completion_tokens": 100, "user": "u"}
    assert "reasoning_effort" in body  # the body given is left as it was


def test_anthropic_fields_are_dropped_and_nothing_else() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}],
            "context_management": {"edits": []}, "output_config": {"effort": "high"}}
    assert anthropic_body_with(body, {Fix(DROP, "context_management")}) == {
        "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}],
        "output_config": {"effort": "high"}}


def test_beta_values_are_dropped_from_every_beta_header_and_an_empty_header_goes() -> None:
    headers = [("anthropic-beta", "a-1,b-2, c-3"), ("Anthropic-Beta", "b-2"), ("x-app", "cli")]
    assert headers_without_betas(headers, {Fix(DROP_BETA, "b-2")}) == [("anthropic-beta", "a-1,c-3"),
                                                                       ("x-app", "cli")]
    assert headers_without_betas(headers, set()) is headers


def test_a_system_message_joins_the_next_user_turn_after_its_tool_results() -> None:
    reminder = {"type": "text", "text": "reminder", "cache_control": {"type": "ephemeral"}}
    messages: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {"role": "system", "content": [reminder]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                     {"type": "text", "text": "and?"}]},
    ]
    assert system_messages_folded(messages) == [
        {"role": "user", "content": "Hi"},
        messages[1],
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}, reminder,
                                     {"type": "text", "text": "and?"}]},
    ]


def test_a_system_message_between_assistant_turns_becomes_a_user_turn() -> None:
    messages: list[Any] = [{"role": "assistant", "content": "a"}, {"role": "system", "content": "s"},
                           {"role": "assistant", "content": "b"}]
    assert system_messages_folded(messages) == [
        {"role": "assistant", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "s"}]},
        {"role": "assistant", "content": "b"}]


def test_user_turns_not_next_to_a_system_message_are_left_apart() -> None:
    messages: list[Any] = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert system_messages_folded(messages) == messages


def _text_of(messages: list[Any]) -> list[str]:
    out = []
    for message in messages:
        content = message["content"]
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            out.append(block.get("text") or block.get("content"))
    return out


_ROLES = st.sampled_from(["user", "assistant", "system"])
_MESSAGE = st.builds(lambda role, text, result: {"role": role, "content": (
    [{"type": "tool_result", "tool_use_id": "t", "content": text}] if result and role == "user" else text)},
    _ROLES, st.text(min_size=1, max_size=5), st.booleans())


@quick_and_deep(300, messages=st.lists(_MESSAGE, max_size=8))
def test_folding_leaves_no_system_message_and_loses_no_text(messages: list[Any]) -> None:
    folded = system_messages_folded(messages)
    assert all(m["role"] in ("user", "assistant") for m in folded)
    assert sorted(_text_of(folded)) == sorted(_text_of(messages))
    for message in folded:  # tool results first in every user turn
        content = message["content"]
        if isinstance(content, list):
            kinds = [b["type"] for b in content]
            assert kinds == sorted(kinds, key=lambda k: k != "tool_result")


THINKING = {"type": "thinking", "thinking": "hm", "signature": "sig-from-elsewhere"}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}


def test_earlier_thinking_is_stripped_and_a_thinking_only_turn_keeps_a_placeholder() -> None:
    body = {"model": "m", "thinking": {"type": "adaptive"}, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [THINKING, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": [REDACTED]},
        {"role": "user", "content": "again"},
    ]}
    stripped = without_earlier_thinking(body)
    assert stripped["messages"][1]["content"] == [{"type": "text", "text": "Hello"}]
    assert stripped["messages"][3]["content"] == [{"type": "text", "text": THINKING_PLACEHOLDER}]
    assert stripped["thinking"] == {"type": "adaptive"}  # a new user turn: thinking stays on


def test_a_tool_loop_whose_last_turn_lost_its_thinking_goes_without_thinking() -> None:
    body = {"model": "m", "thinking": {"type": "enabled", "budget_tokens": 2000},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [THINKING, {"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
            ]}
    stripped = without_earlier_thinking(body)
    assert "thinking" not in stripped and "context_management" not in stripped
    assert stripped["messages"][1]["content"] == [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]


def test_strip_thinking_applies_through_the_body_fixes() -> None:
    body = {"model": "m", "messages": [{"role": "assistant", "content": [THINKING, {"type": "text", "text": "x"}]}]}
    assert anthropic_body_with(body, {Fix(STRIP_THINKING)})["messages"][0]["content"] == [{"type": "text",
                                                                                          "text": "x"}]
    folded = anthropic_body_with({"messages": [{"role": "system", "content": "s"}]}, {Fix(FOLD_SYSTEM)})
    assert folded["messages"] == [{"role": "user", "content": [{"type": "text", "text": "s"}]}]


# -- the store -------------------------------------------------------------------------------------------------------

def provider(name: str = "p", **extra: Any) -> ProviderConfig:
    return ProviderConfig(**{"name": name, "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                             "auth_value": "k", **extra})


def test_what_a_provider_refused_is_kept_per_model_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = Capabilities()
    p = provider()
    caplog.set_level(logging.INFO, logger="balancer")
    assert store.learn(p, "small", {Fix(DROP, "reasoning_effort")}) == {Fix(DROP, "reasoning_effort")}
    assert store.learn(p, "small", {Fix(DROP, "reasoning_effort")}) == frozenset()
    assert store.fixes(p, "small") == {Fix(DROP, "reasoning_effort")}
    assert store.fixes(p, "big") == frozenset()
    assert store.shown(p) == {"small": ["without reasoning_effort"]}
    assert len([r for r in caplog.records if "reasoning_effort" in r.getMessage()]) == 1


def test_a_thinking_signature_fix_is_never_learned() -> None:
    store = Capabilities()
    assert store.learn(provider(), "m", {Fix(STRIP_THINKING)}) == frozenset()
    assert store.shown(provider()) == {}


def test_a_rename_learned_the_other_way_replaces_the_first() -> None:
    store = Capabilities()
    store.learn(provider(), "m", {Fix(RENAME, "max_tokens", "max_completion_tokens")})
    store.learn(provider(), "m", {Fix(RENAME, "max_completion_tokens", "max_tokens")})
    assert store.fixes(provider(), "m") == {Fix(RENAME, "max_completion_tokens", "max_tokens")}


def test_a_reload_keeps_what_an_unchanged_provider_refused_and_forgets_a_changed_one() -> None:
    store = Capabilities()
    for name in ("same", "moved", "rekeyed", "gone"):
        store.learn(provider(name), "m", {Fix(DROP, "user")})
    store.retain([provider("same", big_model="other-model"), provider("moved", base_url="http://127.0.0.1:8/v1"),
                  provider("rekeyed", auth_value="k2")])
    for name in ("same", "rekeyed"):  # the same server: another credential does not change what it accepts
        assert store.fixes(provider(name), "m") == {Fix(DROP, "user")}
    for name in ("moved", "gone"):
        assert store.fixes(provider(name), "m") == frozenset()


def test_every_key_of_a_pool_shares_what_the_server_refused() -> None:
    store = Capabilities()
    pool = provider("pool", auth_value=["k1", "k2"])
    store.learn(pool.with_key(0), "m", {Fix(DROP, "user")})  # an attempt carries one key of the pool
    assert store.fixes(pool.with_key(1), "m") == {Fix(DROP, "user")}
    assert store.shown(pool) == {"m": ["without user"]}


def test_balancer_status_shows_what_a_provider_refused(tmp_path: Any) -> None:
    file = tmp_path / "providers.yaml"
    file.write_text(providers_yaml([openai_provider("lite", "http://127.0.0.1:9"),
                                    anthropic_provider("relay", "http://127.0.0.1:9")]))
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=str(file))
        lite = providers.config.providers[0]
        providers.capabilities.learn(lite, "gpt-big", {Fix(DROP, "reasoning_effort"), Fix(DROP, "user")})
        text = tctx.master.commands.execute("balancer.status")
    _, lite_line, relay_line = text.splitlines()
    assert lite_line.endswith("| learned: gpt-big without reasoning_effort, without user")
    assert "learned" not in relay_line


def anthropic_relay() -> ProviderConfig:
    return ProviderConfig(name="relay", type="anthropic", base_url="http://127.0.0.1:9", auth_value="k")


def test_only_what_the_balancer_knows_is_remembered() -> None:
    store = Capabilities()
    relay = anthropic_relay()
    offered = {Fix(DROP, "junk_0"), Fix(DROP, "context_management"), Fix(DROP_BETA, "files-api-2025-04-14"),
               Fix(FOLD_SYSTEM), Fix(DROP, "thinking", once=True), Fix(RENAME, "max_tokens", "max_completion_tokens")}
    assert store.learn(relay, "m", offered) == {
        Fix(DROP, "context_management"), Fix(DROP_BETA, "files-api-2025-04-14"), Fix(FOLD_SYSTEM)}
    lite = provider()
    assert store.learn(lite, "m", {Fix(DROP, "n"), Fix(DROP, "context_management"), Fix(DROP, "user"),
                                   Fix(RENAME, "max_tokens", "max_completion_tokens"), Fix(RENAME, "n", "m")}) == {
        Fix(DROP, "user"), Fix(RENAME, "max_tokens", "max_completion_tokens")}


def test_made_up_models_cannot_keep_a_real_one_from_being_learned() -> None:
    store, relay = Capabilities(), anthropic_relay()
    store.learn(relay, "claude-sonnet-4-5", {Fix(DROP, "context_management")})
    for i in range(MAX_MODELS_PER_PROVIDER - 1):
        store.learn(relay, f"made-up-{i}", {Fix(DROP_BETA, "x-2025-01-01")})
    assert store.fixes(relay, "claude-sonnet-4-5")  # in use: the most recently used now
    store.learn(relay, "made-up-last", {Fix(DROP_BETA, "x-2025-01-01")})  # the store is full: the oldest goes
    assert store.fixes(relay, "made-up-0") == frozenset()
    assert store.fixes(relay, "claude-sonnet-4-5") == {Fix(DROP, "context_management")}
    assert store.learn(relay, "claude-opus-4-5", {Fix(DROP, "output_config")}) == {Fix(DROP, "output_config")}
    assert store.fixes(relay, "claude-opus-4-5") == {Fix(DROP, "output_config")}
    assert len(store.shown(relay)) == MAX_MODELS_PER_PROVIDER


def test_a_models_fixes_are_bounded_and_a_new_one_is_always_learned() -> None:
    store, relay = Capabilities(), anthropic_relay()
    for i in range(MAX_FIXES_PER_MODEL + 8):
        store.learn(relay, "m", {Fix(DROP_BETA, f"made-up-{i}")})
    assert store.learn(relay, "m", {Fix(DROP, "context_management")}) == {Fix(DROP, "context_management")}
    kept = store.fixes(relay, "m")
    assert len(kept) == MAX_FIXES_PER_MODEL and Fix(DROP, "context_management") in kept
    assert Fix(DROP_BETA, "made-up-0") not in kept


def exchange_of(store: Capabilities) -> Exchange:
    return Exchange("messages", "POST", "/v1/messages", [], b"{}", {}, "m", False, 30.0, lambda *_: None,
                    capabilities=store)


def test_every_fix_applies_to_the_refused_requests_next_try_whether_or_not_it_is_remembered() -> None:
    store, relay = Capabilities(), anthropic_relay()
    for i in range(MAX_FIXES_PER_MODEL):
        store.learn(relay, "m", {Fix(DROP_BETA, f"made-up-{i}")})
    refused = exchange_of(store)
    fixes = {Fix(DROP, "junk_0"), Fix(DROP, "context_management"), Fix(STRIP_THINKING)}
    refused.fix(relay, "m", fixes)
    assert fixes <= refused.fixes_for(relay, "m")
    assert Fix(DROP, "context_management") not in exchange_of(store).fixes_for(relay, "m")  # not cured yet
    refused.confirm(relay)  # the try without them was accepted
    later = exchange_of(store).fixes_for(relay, "m")
    assert Fix(DROP, "context_management") in later and Fix(DROP, "junk_0") not in later
    assert Fix(STRIP_THINKING) not in later


def test_a_retry_that_would_go_out_the_same_is_recognised() -> None:
    def request(body: bytes, beta: str = "a") -> httpx.Request:
        return httpx.Request("POST", "http://127.0.0.1:9/v1/messages", headers={"anthropic-beta": beta},
                             content=body)

    assert same_request(request(b'{"a": 1}'), request(b'{"a": 1}'))
    assert not same_request(request(b'{"a": 1}'), request(b"{}"))
    assert not same_request(request(b"{}"), request(b"{}", beta="b"))
