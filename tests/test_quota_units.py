"""The quota book, the prices and the client-key entries, with a clock the test moves: quotas refuse once used up,
name the quota, say when the window ends, and reset when it does."""

from __future__ import annotations

import calendar

import pytest

from addon.access import matching_key
from addon.client_keys import ClientKey
from addon.client_usage import FREE, METERED, UNMETERED, metering
from addon.config import ConfigError, parse_config
from addon.prices import DEFAULT_PRICES, Price, ceiling_price, charge, claude_name, price_of
from addon.quotas import QuotaBook, dollars
from addon.usage_windows import UsageWindows
from clock import ManualClock

# 2026-01-31 23:59:30 UTC: the minute, the day and the month all end within 30 seconds.
NEAR_MONTH_END = float(calendar.timegm((2026, 1, 31, 23, 59, 30)))
KEY = "sk-client-never-shown-123456"


def book_at(now: float) -> tuple[QuotaBook, ManualClock]:
    clock = ManualClock(now=now)
    return QuotaBook(UsageWindows(clock=clock)), clock


def usage(input_tokens: int = 0, output: int = 0, write: int = 0, read: int = 0) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output, "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read}


def test_requests_per_minute_refuses_once_used_up_and_resets_with_the_minute():
    book, clock = book_at(NEAR_MONTH_END - 20)  # 23:59:10: 50 s left in the minute
    alice = ClientKey(name="alice", key=KEY, requests_per_minute=2)
    assert book.admit(alice) is None and book.admit(alice) is None
    refused = book.admit(alice)
    assert refused is not None and refused.use.quota.name == "requests_per_minute"
    assert refused.use.retry_after == 50
    assert "alice" in refused.message and "requests_per_minute" in refused.message and "2 of 2" in refused.message
    assert KEY not in refused.message
    assert book.admit(alice) is not None  # a refused request counts nothing
    clock.advance(49)
    assert book.admit(alice) is not None
    clock.advance(1)  # the next minute
    assert book.admit(alice) is None


def test_tokens_per_day_counts_input_output_and_cache_writes_and_resets_at_midnight_utc():
    book, clock = book_at(NEAR_MONTH_END)
    bob = ClientKey(name="bob", key=KEY, tokens_per_day=1000)
    spent = charge(usage(400, 200, 300, 5000), "claude-sonnet-4-6", None, {})
    assert spent.counted_tokens == 900  # cache reads are not counted
    book.charge("bob", spent)
    assert book.admit(bob) is None
    book.charge("bob", charge(usage(100), "claude-sonnet-4-6", None, {}))
    refused = book.admit(bob)
    assert refused is not None and refused.use.quota.name == "tokens_per_day" and refused.use.retry_after == 30
    assert "1000 of 1000 tokens" in refused.message
    clock.advance(30)
    assert book.admit(bob) is None


def test_budget_per_month_counts_estimated_spend_and_resets_with_the_month():
    book, clock = book_at(NEAR_MONTH_END)
    carol = ClientKey(name="carol", key=KEY, budget_per_month=1.0)
    prices = {"pricey": Price(input=100_000, output=0)}  # $0.10 a token
    book.charge("carol", charge(usage(9), "pricey", None, prices))
    assert book.admit(carol) is None
    book.charge("carol", charge(usage(1), "pricey", None, prices))
    refused = book.admit(carol)
    assert refused is not None and refused.use.quota.name == "budget_per_month"
    assert "$1.00 of $1.00" in refused.message
    [status] = [use.as_status() for use in book.standing(carol) if use.quota.name == "budget_per_month"]
    assert status["resets_at"] == "2026-02-01T00:00:00Z" and status["share_used"] == pytest.approx(1.0)
    clock.advance(30)  # February
    assert book.admit(carol) is None


def test_a_client_without_quotas_is_never_refused():
    book, _ = book_at(NEAR_MONTH_END)
    dave = ClientKey(name="dave", key=KEY)
    book.charge("dave", charge(usage(10**9, 10**9), "claude-opus-4-8", None, {}))
    assert all(book.admit(dave) is None for _ in range(100))


def test_spend_is_priced_per_kind_of_token():
    spent = charge(usage(1_000_000, 1_000_000, 1_000_000, 1_000_000), "claude-opus-4-8", "claude-opus-4-8", {})
    assert spent.spend == pytest.approx(5 + 25 + 6.25 + 0.5)
    assert spent.tokens == {"input": 1_000_000, "output": 1_000_000, "cache_write": 1_000_000,
                            "cache_read": 1_000_000}


def test_the_model_the_provider_was_asked_for_is_priced_first_then_the_requested_one():
    table = {"deepseek/*": Price(input=0.5, output=2)}
    mapped = charge(usage(1_000_000, 1_000_000), "deepseek/deepseek-chat", "claude-sonnet-4-6", table)
    assert mapped.priced_as == "deepseek/deepseek-chat" and mapped.spend == pytest.approx(2.5)
    fallback = charge(usage(1_000_000, 1_000_000), "some-unpriced-model", "claude-sonnet-4-6", table)
    assert fallback.priced_as == "claude-sonnet-4-6" and fallback.spend == pytest.approx(3 + 15)
    nothing = charge(usage(1_000_000), "unpriced", "also-unpriced", table)
    assert nothing.priced_as is None and nothing.spend == 0 and nothing.tokens == {"input": 1_000_000}


def test_settings_prices_come_before_the_built_in_ones_and_cache_tokens_default_to_the_input_price():
    table = {"claude-sonnet-4*": Price(input=1, output=2)}
    assert price_of("claude-sonnet-4-6", table) == Price(input=1, output=2, cache_write=1, cache_read=1)
    assert price_of("CLAUDE-SONNET-4-6", {}) == DEFAULT_PRICES["claude-sonnet-4*"]
    assert price_of("claude-opus-4-1-20250805", {}) == DEFAULT_PRICES["claude-opus-4*"]
    assert price_of("claude-opus-4-8", {}) == DEFAULT_PRICES["claude-opus-4-[5-9]*"]
    assert price_of("claude-haiku-5-5", {}) == DEFAULT_PRICES["claude-haiku-5-5*"]
    assert price_of("claude-sonnet-7-0", {}) == DEFAULT_PRICES["claude-*sonnet*"]  # newer than the table
    assert price_of("gpt-5", {}) is None and price_of(None, {}) is None


@pytest.mark.parametrize(("model", "glob"), [
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4*"),  # Bedrock, with a region
    ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku*"),
    ("global.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4*"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4*"),  # Vertex
    ("anthropic/claude-opus-4.5", "claude-opus-4-[5-9]*"),  # OpenRouter, a dotted version
    ("anthropic/claude-3.7-sonnet:thinking", "claude-3-7-sonnet*"),
    ("claude-3.5-haiku", "claude-3-5-haiku*"),
    ("claude-2.1", "claude-2*"),
    ("claude-instant-1.2", "claude-instant*"),
    ("opus", "claude-*opus*"),  # Claude Code's aliases: the family's newest price
    ("Sonnet[1m]", "claude-*sonnet*"),
    ("haiku", "claude-*haiku*"),
])
def test_claude_models_are_priced_in_their_common_spellings(model, glob):
    assert price_of(model, {}) == DEFAULT_PRICES[glob]


def test_other_names_are_left_as_written_and_still_match_settings_prices():
    assert claude_name("deepseek/deepseek-chat") == "deepseek-chat" and claude_name("GPT-4o") == "gpt-4o"
    assert price_of("made-up-model", {}) is None and price_of("gpt-4.1", {}) is None
    table = {"deepseek/*": Price(input=0.5, output=2)}
    assert price_of("deepseek/deepseek-chat", table) == table["deepseek/*"]


def test_a_model_without_a_price_costs_the_highest_price_when_asked_to():
    table = {"gold-model": Price(input=100, output=1)}
    top = ceiling_price(table)
    assert (top.input, top.output) == (100, max(p.output for p in DEFAULT_PRICES.values()))
    spent = charge(usage(1_000_000, 1_000_000), "made-up-1", "made-up-1", table, top)
    assert spent.priced_as is None and spent.spend == pytest.approx(100 + top.output)
    assert charge(usage(1_000_000), "made-up-1", None, table).spend == 0  # no budget: free, as before


def test_every_default_claude_model_has_a_price():
    from addon.config import DEFAULT_MODELS
    assert all(price_of(model, {}) is not None for model in DEFAULT_MODELS)


# -- settings.client_keys -----------------------------------------------------------------------------------------

def settings_of(client_keys: str, environ: dict[str, str] | None = None):
    text = ("providers:\n  - {name: a, base_url: 'https://h', auth_value: x}\n"
            f"settings:\n  client_keys: {client_keys}\n")
    return parse_config(text, "p.yaml", environ or {}).config.settings


def config_error(client_keys: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_of(client_keys)
    return str(caught.value)


def test_plain_keys_are_named_by_position_and_objects_by_their_name():
    settings = settings_of("[k-one, {name: alice, key: '${ALICE}', requests_per_minute: 5}, 12345]",
                           {"ALICE": "k-alice"})
    assert [(c.name, c.key) for c in settings.client_keys] == [
        ("client-1", "k-one"), ("alice", "k-alice"), ("client-3", "12345")]
    assert settings.client_key_values == ["k-one", "k-alice", "12345"]
    assert settings.client_named("alice") is not None and settings.client_named("k-alice") is None
    assert settings.client_keys[1].requests_per_minute == 5 and settings.client_keys[1].has_quota


@pytest.mark.parametrize(("entries", "expected"), [
    ("[{name: alice, key: " + KEY + "}, {name: alice, key: other-key}]", "client name 'alice' is used by"),
    ("[{name: alice, key: " + KEY + "}, {name: bob, key: " + KEY + "}]",
     "client_keys[1] (bob) has the same key as client_keys[0] (alice)"),
    ("[{name: client-2, key: other-key}, " + KEY + "]", "client name 'client-2' is used by"),
    ("[{name: alice, api_key: " + KEY + "}]", "client_keys[0] (name 'alice').api_key: Extra inputs"),
    ("[{name: alice, key: " + KEY + ", request_per_minute: 5}]", ".request_per_minute: Extra inputs"),
    ("[{name: 'al ice', key: " + KEY + "}]", ".name: must be 1-64 letters"),
    ("[{name: alice, key: " + KEY + ", tokens_per_day: 0}]", ".tokens_per_day: Input should be greater than 0"),
    ("[{name: alice, key: " + KEY + ", budget_per_month: -5}]", ".budget_per_month: Input should be greater"),
    ("['']", "settings.client_keys[0].key: must not be empty"),
])
def test_client_key_problems_are_one_line_each_and_never_show_the_key(entries, expected):
    message = config_error(entries)
    header, *problems = message.splitlines()
    assert header == "p.yaml: invalid configuration:"
    assert any(expected in line for line in problems), message
    assert KEY not in message


def test_the_key_presented_is_found_among_the_clients_keys():
    assert matching_key("b", ["a", "b", "c"]) == 1
    assert matching_key("d", ["a", "b"]) is None and matching_key(None, ["a"]) is None
    assert matching_key("", [""]) is None


def test_a_key_that_is_not_utf8_matches_nothing_and_raises_nothing():
    assert matching_key("k\udcff\udcfe", ["k1"]) is None and matching_key("k\udcff", []) is None


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/messages", METERED),
    ("POST", "/v1/messages?beta=true", METERED),
    ("POST", "/v1/messages/count_tokens", FREE),
    ("GET", "/v1/models", FREE),
    ("GET", "/v1/models/claude-sonnet-4-5", FREE),
    ("GET", "/providers", FREE),
    ("POST", "/v1/messages/batches", UNMETERED),
    ("GET", "/v1/messages/batches/msgbatch_1/results", UNMETERED),
    ("POST", "/v1/complete", UNMETERED),
    ("POST", "/v1/models", UNMETERED),
    ("GET", "/v1/messages", UNMETERED),
])
def test_what_counts_under_a_clients_quotas(method: str, path: str, expected: str) -> None:
    assert metering(method, path) == expected


def test_only_token_and_spend_quotas_meter_spend() -> None:
    assert not ClientKey(name="a", key="k", requests_per_minute=5).meters_spend
    assert ClientKey(name="a", key="k", tokens_per_day=5).meters_spend
    assert ClientKey(name="a", key="k", budget_per_month=5).meters_spend


@pytest.mark.parametrize(("amount", "shown"), [
    (12.5, "$12.50"), (1, "$1.00"), (0, "$0.00"), (0.005, "$0.005"), (0.0052317, "$0.005232"), (0.42, "$0.42"),
    (0.00001234, "$1.2e-05"),
])
def test_small_budgets_are_shown_with_the_digits_that_tell_them_apart(amount: float, shown: str) -> None:
    assert dollars(amount) == shown
