"""Which key of a pool a request uses (addon/key_routing.py), what passes a key over (addon/key_book.py), and the
keys' fingerprints (addon/key_identity.py)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

from hypothesis import strategies as st

from addon.config import BalancerConfig, ProviderConfig
from addon.health import AUTH, RATE_LIMITED
from addon.key_book import COOLING, MAX_CONCURRENT, RPM, TPM, KeyBook
from addon.key_identity import Fingerprints
from addon.key_routing import is_ready, key_turns, keys_to_try, rendezvous_order
from addon.usage_windows import MINUTE, UsageWindows
from fuzzing import quick_and_deep

T0 = 1_764_633_600.0  # the start of a minute


def pool(*keys: object, name: str = "p") -> ProviderConfig:
    return ProviderConfig(name=name, base_url="http://127.0.0.1:9", auth_value=list(keys))


def book_for(*providers: ProviderConfig, now: list[float] | None = None, **settings: object) -> KeyBook:
    clock = now or [T0]
    book = KeyBook(UsageWindows(clock=lambda: clock[0]), wall=lambda: clock[0])
    book.configure(BalancerConfig(providers=list(providers), settings=settings), "secret")
    return book


@quick_and_deep(200, weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=8), session=st.text(max_size=40))
def test_the_order_is_every_key_once_and_the_same_for_the_same_session(weights, session):
    order = rendezvous_order("p", weights, session)
    assert sorted(order) == list(range(len(weights)))
    assert rendezvous_order("p", weights, session) == order


def test_sessions_spread_over_keys_by_weight():
    firsts = Counter(rendezvous_order("p", [3.0, 1.0], f"session-{i}")[0] for i in range(4000))
    assert 0.70 < firsts[0] / 4000 < 0.80  # 3 of 4 expected
    rng = random.Random(7)
    random_firsts = Counter(rendezvous_order("p", [3.0, 1.0], None, rng)[0] for _ in range(4000))
    assert 0.70 < random_firsts[0] / 4000 < 0.80


def test_passing_a_key_over_moves_only_its_own_sessions(board):
    provider = pool("sk-key-one-1111", "sk-key-two-2222", "sk-key-three-3333")
    book = book_for(provider)
    before = {f"s{i}": keys_to_try(key_turns(provider, board, book, f"s{i}"), board)[0].index for i in range(300)}
    book.usage.opened(provider.key_subjects[1])
    book.limits[provider.key_subjects[1]] = (None, None, 1)  # key 2 at its max_concurrent
    after = {s: keys_to_try(key_turns(provider, board, book, s), board)[0].index for s in before}
    moved = {s for s in before if before[s] != after[s]}
    assert moved == {s for s in before if before[s] == 1}
    assert 1 not in after.values()


def test_keys_passed_over_come_last_and_cooling_ones_only_when_nothing_else_is_left(board):
    provider = pool("sk-key-one-1111", "sk-key-two-2222", "sk-key-three-3333")
    book = book_for(provider)
    board.record_failure(provider.key_subjects[0], "HTTP 429", 30, RATE_LIMITED)
    book.usage.opened(provider.key_subjects[1])
    book.limits[provider.key_subjects[1]] = (None, None, 1)
    turns = key_turns(provider, board, book, "s")
    reasons = {t.label: t.reason for t in turns}
    assert reasons == {"#1": COOLING, "#2": MAX_CONCURRENT, "#3": None}
    assert [t.label for t in keys_to_try(turns, board)] == ["#3", "#2"]
    assert is_ready(turns)

    board.record_failure(provider.key_subjects[2], "HTTP 401", 3600, AUTH)
    book.usage.closed(provider.key_subjects[1])
    board.record_failure(provider.key_subjects[1], "HTTP 429", 10, RATE_LIMITED)
    turns = key_turns(provider, board, book, "s")
    assert not is_ready(turns)
    # All cooling: the soonest back first, never the refused one.
    assert [t.label for t in keys_to_try(turns, board)] == ["#2", "#1"]


def test_a_single_key_shares_the_providers_health_and_is_not_passed_over_for_it(board):
    provider = ProviderConfig(name="solo", base_url="http://127.0.0.1:9", auth_value="sk-solo-key-4444")
    book = book_for(provider)
    board.record_failure("solo", "HTTP 529", 30)
    (turn,) = key_turns(provider, board, book)
    assert (turn.health, turn.reason) == ("solo", None)  # the provider's cooldown is the plan's business


def test_rpm_and_tpm_hold_for_the_rest_of_the_minute():
    now = [T0 + 10]
    provider = pool({"value": "sk-key-one-1111", "rpm": 2, "tpm": 100}, "sk-key-two-2222")
    book = book_for(provider, now=now)
    subject = provider.key_subjects[0]
    book.started(subject)
    book.ended(subject, {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 5000})
    assert book.set_aside(subject) is None
    book.started(subject)
    assert book.set_aside(subject) == RPM
    book.ended(subject, {"input_tokens": 40, "output_tokens": 10})
    assert book.usage.used(subject, "tokens", MINUTE) == 100  # cache reads are not counted
    now[0] = T0 + 60  # a new minute
    assert book.set_aside(subject) is None
    book.ended(subject, {"input_tokens": 100})  # counted in the new minute
    assert book.set_aside(subject) == TPM


def test_low_headroom_holds_until_the_reset_the_answer_named():
    now = [T0]
    provider = pool("sk-key-one-1111", "sk-key-two-2222")
    book = book_for(provider, now=now, headroom=0.1)
    subject = provider.key_subjects[0]
    book.observe(subject, [("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "9"),
                           ("x-ratelimit-reset-requests", "30s")])
    assert book.set_aside(subject) == "headroom"
    now[0] = T0 + 30
    assert book.set_aside(subject) is None


def test_a_reload_that_changes_a_key_forgets_what_was_read_of_it():
    provider = pool("sk-key-one-1111", "sk-key-two-2222")
    book = book_for(provider)
    for index in (0, 1):
        exhausted = [("x-ratelimit-limit-tokens", "10"), ("x-ratelimit-remaining-tokens", "0")]
        book.observe(provider.key_subjects[index], exhausted)
    changed = book.configure(BalancerConfig(providers=[pool("sk-key-one-1111", "sk-key-new-5555")]), None)
    assert changed == {provider.key_subjects[1]}
    assert set(book.readings) == {provider.key_subjects[0]}


@quick_and_deep(200, key=st.text(min_size=1, max_size=80), secret=st.text(min_size=1, max_size=40))
def test_fingerprints_are_short_stable_and_keyed(key, secret):
    fingerprint = Fingerprints(secret).of(key)
    assert len(fingerprint) == 6 and int(fingerprint, 16) >= 0
    assert Fingerprints(secret).of(key) == fingerprint
    # Not the plain hash anyone could compute from a guessed key.
    plain = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    assert fingerprint != plain or Fingerprints(secret + "x").of(key) != plain


def test_fingerprints_differ_between_secrets_and_keys():
    keys = [f"sk-ant-api03-{i:04d}" for i in range(200)]
    first, second = Fingerprints("one"), Fingerprints("two")
    assert len({first.of(k) for k in keys}) >= 199
    assert sum(first.of(k) == second.of(k) for k in keys) <= 1
    assert Fingerprints().of(keys[0]) != Fingerprints().of(keys[0])  # unset: a random secret per process
