"""The pure parts of shared state, tested directly: fingerprints, keys, messages, the merge rules, TTLs, the probe
gate, and how the health board, the session map and the router let it in. No server, no sleeps: clocks are
injected. (tests/test_shared_state_e2e.py runs real instances against a real server.)"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import strategies as st

from addon.affinity import SessionAffinity
from addon.config import (
    BalancerConfig,
    ConfigError,
    LoadedConfig,
    ProviderConfig,
    Settings,
    parse_config,
)
from addon.health import AUTH, LATENCY_WEIGHT, OVERLOADED, HealthBoard, folded_latency
from addon.probe_gate import ASKING_TIMEOUT, ProbeGate
from addon.providers import Providers, url_secrets
from addon.routing import Router
from addon.shared_records import (
    MAX_TTL_MS,
    MIN_TTL_MS,
    HealthNews,
    HealthRecord,
    Keys,
    LatencyNews,
    Pin,
    ProbeReleased,
    decode,
    decode_pin,
    decode_record,
    encode,
    encode_pin,
    encode_record,
    fingerprint,
    health_ttl_ms,
    is_blank,
    local_time,
    merge_health,
    record_of,
    session_digest,
)
from addon.shared_state import SharedState, shown_url
from clock import ManualClock
from fuzzing import quick_and_deep

WALL = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(now=WALL)


def board_with(clock: ManualClock, wall: ManualClock) -> HealthBoard:
    return HealthBoard(clock=clock, wall=wall)


def provider(name: str = "main", **extra: object) -> ProviderConfig:
    fields: dict[str, object] = {"name": name, "base_url": "https://api.example.com", "auth_value": "sk-secret-1"}
    fields.update(extra)
    return ProviderConfig.model_validate(fields)


# =====================================================================================================
# fingerprints and keys
# =====================================================================================================


def test_fingerprint_is_stable_and_ignores_what_does_not_make_another_provider() -> None:
    base = fingerprint(provider())
    assert base == fingerprint(provider())
    assert len(base) == 16
    # Models, priority, weight, headers: the same provider, its health stays.
    assert base == fingerprint(provider(big_model="m", priority=3, weight=2, extra_headers={"x": "y"}))


@pytest.mark.parametrize("change", [
    {"base_url": "https://other.example.com"},
    {"auth_value": "sk-secret-2"},
    {"auth_type": "auth_token"},
    {"type": "openai"},
])
def test_fingerprint_changes_with_url_credential_or_type(change: dict[str, str]) -> None:
    assert fingerprint(provider(**change)) != fingerprint(provider())


def test_fingerprint_and_keys_never_hold_the_credential() -> None:
    fp = fingerprint(provider(auth_value="sk-ant-api03-SEEKRIT"))
    keys = Keys("team")
    for text in (fp, keys.health("main", fp), keys.probe("main", fp)):
        assert "SEEKRIT" not in text and "sk-ant" not in text


def test_passthrough_provider_has_a_fingerprint() -> None:
    one = provider(auth_type="passthrough", auth_value="")
    assert fingerprint(one) == fingerprint(provider(auth_type="passthrough", auth_value="passthrough"))


def test_every_key_and_the_channel_carry_the_namespace() -> None:
    a, b = Keys("team-a"), Keys("team-b")
    for keys, prefix in ((a, "team-a:"), (b, "team-b:")):
        made = [keys.health("p", "f"), keys.probe("p", "f"), keys.pin("s"), keys.turn, keys.channel, keys.pin_pattern]
        assert all(k.startswith(prefix) for k in made)
    assert {a.health("p", "f"), a.channel, a.turn}.isdisjoint({b.health("p", "f"), b.channel, b.turn})


def test_session_digest_hides_the_session_and_is_the_same_everywhere() -> None:
    digest = session_digest("session:3f1c-aa-77")
    assert digest == session_digest("session:3f1c-aa-77")
    assert "3f1c" not in digest and len(digest) == 32
    assert digest != session_digest("session:3f1c-aa-78")


# =====================================================================================================
# messages
# =====================================================================================================

RECORD = HealthRecord(
    generation=(WALL - 100, "host-1-abc"), cooldown_until=WALL + 30, cooldown_reason="HTTP 529 overloaded_error",
    cooldown_class=OVERLOADED, consecutive_failures=2, cooldowns=1, last_error="HTTP 529 overloaded_error",
    last_error_at=WALL - 1, latency_ms=12.5,
)


@pytest.mark.parametrize("message", [
    HealthNews("main", "0123456789abcdef", RECORD),
    HealthNews("main", "0123456789abcdef", HealthRecord()),
    ProbeReleased("main", "0123456789abcdef"),
    Pin("d" * 32, "backup", "fedcba9876543210"),
    LatencyNews("main", "0123456789abcdef", 42.5, 7),
])
def test_messages_survive_the_trip(message: object) -> None:
    data = encode("instance-a", message)  # type: ignore[arg-type]
    assert decode(data) == ("instance-a", message)


def test_records_and_pins_survive_the_trip() -> None:
    assert decode_record(encode_record(RECORD)) == RECORD
    assert decode_pin(encode_pin("backup", "f" * 16)) == ("backup", "f" * 16)


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b"null", b'{"v": 2, "from": "a", "kind": "released", "provider": "p", "fp": "f"}',
    b'{"v": 1, "from": "a", "kind": "unknown", "provider": "p", "fp": "f"}',
    b'{"v": 1, "kind": "released", "provider": "p", "fp": "f"}',
    b'{"v": 1, "from": "a", "kind": "released", "provider": "", "fp": "f"}',
    b'{"v": 1, "from": "a", "kind": "latency", "provider": "p", "fp": "f", "ms": -1, "n": 1}',
    b'{"v": 1, "from": "a", "kind": "latency", "provider": "p", "fp": "f", "ms": true, "n": 1}',
    b'{"v": 1, "from": "a", "kind": "latency", "provider": "p", "fp": "f", "ms": 1, "n": 1.5}',
    b'{"v": 1, "from": "a", "kind": "health", "provider": "p", "fp": "f", "record": {"gen": [0, ""]}}',
    (b'{"v": 1, "from": "a", "kind": "health", "provider": "p", "fp": "f", "record": {"gen": [0, ""], "until": 0,'
     b' "consecutive": -3, "cooldowns": 0}}'),
    b"[" * 100_000,
])
def test_anything_else_is_ignored(data: bytes) -> None:
    assert decode(data) is None


def test_a_nan_time_is_not_a_record() -> None:
    text = encode_record(RECORD).replace(str(RECORD.cooldown_until), "NaN")
    assert decode_record(text) is None


def test_texts_from_elsewhere_are_bounded() -> None:
    record = HealthRecord(last_error="x" * 50_000, last_error_at=WALL)
    decoded = decode(encode("a", HealthNews("p", "f", record)))
    assert decoded is not None and isinstance(decoded[1], HealthNews)
    assert decoded[1].record.last_error == "x" * 1000


@quick_and_deep(300, value=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                                         lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                                         max_leaves=20))
def test_decoding_never_raises(value: object) -> None:
    data = json.dumps(value)
    decode(data)
    decode_record(data)
    decode_pin(data)
    if isinstance(value, dict):
        decode(json.dumps({"v": 1, "from": "a", "kind": "health", "provider": "p", "fp": "f", "record": value}))


# =====================================================================================================
# the merge rules
# =====================================================================================================


def test_a_cooldown_from_elsewhere_is_in_force_here_for_its_remaining_time(
    clock: ManualClock, wall: ManualClock,
) -> None:
    board = board_with(clock, wall)
    assert merge_health(board.get("p"), RECORD, clock(), wall())
    assert board.cooldown_remaining("p") == pytest.approx(30)
    health = board.get("p")
    assert (health.cooldown_reason, health.cooldown_class) == (RECORD.cooldown_reason, OVERLOADED)
    assert (health.consecutive_failures, health.cooldowns) == (2, 1)
    assert health.last_error_at == RECORD.last_error_at
    assert not board.is_available("p")
    clock.advance(30.001)
    wall.advance(30.001)
    assert board.is_available("p")  # recovering: the next request is its probe (no gate: this instance may)
    assert board.record_attempt("p")


def test_record_of_and_merge_carry_a_cooldown_between_clocks(clock: ManualClock, wall: ManualClock) -> None:
    here = board_with(clock, wall)
    here.record_failure("p", "connection refused", cooldown=45)
    # another instance: its monotonic clock reads something else entirely, its wall clock the same
    there_clock = ManualClock(now=5.0)
    there = board_with(there_clock, wall)
    assert merge_health(there.get("p"), record_of(here.get("p"), clock(), wall()), there_clock(), wall())
    assert there.cooldown_remaining("p") == pytest.approx(45)


def test_a_cooldown_that_is_over_is_not_taken_in(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    stale = HealthRecord(cooldown_until=WALL - 1, cooldown_reason="old", cooldown_class=OVERLOADED)
    merge_health(board.get("p"), stale, clock(), wall())
    assert board.cooldown_remaining("p") == 0
    assert local_time(WALL - 1, clock(), wall()) == 0.0
    assert local_time(WALL + 2, clock(), wall()) == clock() + 2


def test_a_newer_generation_wipes_what_came_before(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    merge_health(board.get("p"), RECORD, clock(), wall())
    success = HealthRecord(generation=(WALL, "host-2-def"), last_error=RECORD.last_error,
                           last_error_at=RECORD.last_error_at)
    assert merge_health(board.get("p"), success, clock(), wall())
    health = board.get("p")
    assert board.is_available("p")
    assert (health.consecutive_failures, health.cooldowns, health.cooldown_reason) == (0, 0, None)
    # news from before that success changes nothing any more
    assert not merge_health(board.get("p"), RECORD, clock(), wall())
    assert board.is_available("p")


def test_within_a_generation_the_worse_news_wins(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    longer = HealthRecord(cooldown_until=WALL + 90, cooldown_reason="long", cooldown_class=OVERLOADED,
                          consecutive_failures=1, cooldowns=1)
    shorter = HealthRecord(cooldown_until=WALL + 10, cooldown_reason="short", cooldown_class=OVERLOADED,
                           consecutive_failures=3, cooldowns=1, last_error="latest", last_error_at=WALL)
    merge_health(board.get("p"), longer, clock(), wall())
    merge_health(board.get("p"), shorter, clock(), wall())
    health = board.get("p")
    assert board.cooldown_remaining("p") == pytest.approx(90)
    assert health.cooldown_reason == "long"
    assert health.consecutive_failures == 3
    assert health.last_error == "latest"


records = st.builds(
    HealthRecord,
    generation=st.tuples(st.sampled_from([0.0, WALL - 50, WALL - 10]), st.sampled_from(["", "a", "b"])),
    cooldown_until=st.sampled_from([0.0, WALL - 5, WALL + 10, WALL + 60]),
    cooldown_reason=st.sampled_from([None, "r1", "r2"]),
    cooldown_class=st.sampled_from([None, OVERLOADED, AUTH]),
    consecutive_failures=st.integers(0, 5),
    cooldowns=st.integers(0, 3),
    last_error=st.sampled_from([None, "e"]),
    last_error_at=st.sampled_from([None, WALL - 3, WALL - 1]),
)


def _view(board: HealthBoard) -> tuple[object, ...]:
    health = board.get("p")
    return (health.generation, round(board.cooldown_remaining("p"), 6), health.consecutive_failures,
            health.cooldowns, health.last_error_at)


@quick_and_deep(300, news=st.lists(records, min_size=1, max_size=5), rng=st.randoms())
def test_the_order_of_news_does_not_matter(news: list[HealthRecord], rng: object) -> None:
    """Every instance that heard the same news ends with the same view, in whatever order it arrived."""
    clock, wall = ManualClock(), ManualClock(now=WALL)
    one, two = board_with(clock, wall), board_with(clock, wall)
    shuffled = list(news)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    for record in news:
        merge_health(one.get("p"), record, clock(), wall())
    for record in shuffled:
        merge_health(two.get("p"), record, clock(), wall())
    assert _view(one) == _view(two)
    # and hearing it all again changes nothing
    assert not any(merge_health(two.get("p"), record, clock(), wall()) for record in news)


def test_a_blank_record_tells_nothing(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    assert is_blank(record_of(board.get("p"), clock(), wall()))
    board.record_success("p", 12.0)
    assert is_blank(record_of(board.get("p"), clock(), wall()))  # a latency alone is not news
    board.count_failure("p", "HTTP 500", OVERLOADED)
    assert not is_blank(record_of(board.get("p"), clock(), wall()))


# =====================================================================================================
# TTLs and latency
# =====================================================================================================


def test_a_record_is_kept_for_its_cooldown_and_the_retention() -> None:
    record = HealthRecord(cooldown_until=WALL + 30)
    assert health_ttl_ms(record, WALL, retention=600) == 630_000
    assert health_ttl_ms(record, WALL + 40, retention=600) == 600_000  # past its cooldown: the retention only
    assert health_ttl_ms(HealthRecord(), WALL, retention=0) == MIN_TTL_MS
    assert health_ttl_ms(HealthRecord(cooldown_until=WALL + 10**9), WALL, retention=600) == MAX_TTL_MS


def test_latency_batches_fold_like_single_samples() -> None:
    assert folded_latency(None, 40.0) == 40.0
    assert folded_latency(100.0, 40.0) == 100.0 + LATENCY_WEIGHT * (40.0 - 100.0)
    one_by_one = 100.0
    for _ in range(5):
        one_by_one = folded_latency(one_by_one, 40.0)
    assert math.isclose(folded_latency(100.0, 40.0, samples=5), one_by_one)


# =====================================================================================================
# the probe gate
# =====================================================================================================


class Asked:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> None:
        self.names.append(name)


def test_without_the_server_every_instance_decides_alone(clock: ManualClock) -> None:
    asked = Asked()
    gate = ProbeGate(asked, clock)
    assert gate.allow("p")
    assert asked.names == []


def test_the_first_request_asks_for_the_claim_and_goes_on_without_it(clock: ManualClock) -> None:
    asked = Asked()
    gate = ProbeGate(asked, clock)
    gate.active = True
    assert not gate.allow("p")
    assert not gate.allow("p")  # still asking: asked once
    assert asked.names == ["p"]
    gate.granted("p", ttl=65)
    assert gate.allow("p") and gate.holds("p") and not gate.elsewhere("p")
    clock.advance(65.001)  # a claim never used lapses: asked again
    assert not gate.allow("p")
    assert asked.names == ["p", "p"]


def test_a_claim_held_elsewhere_keeps_this_instance_from_probing(clock: ManualClock) -> None:
    asked = Asked()
    gate = ProbeGate(asked, clock)
    gate.active = True
    gate.allow("p")
    gate.refused("p", ttl=10)
    assert not gate.allow("p") and gate.elsewhere("p") and not gate.holds("p")
    assert asked.names == ["p"]
    gate.forget("p")  # the probe's outcome arrived
    assert not gate.elsewhere("p")
    assert not gate.allow("p")
    assert asked.names == ["p", "p"]


def test_an_answer_that_never_comes_is_asked_again(clock: ManualClock) -> None:
    asked = Asked()
    gate = ProbeGate(asked, clock)
    gate.active = True
    gate.allow("p")
    clock.advance(ASKING_TIMEOUT + 0.001)
    gate.allow("p")
    assert asked.names == ["p", "p"]


def test_the_board_asks_the_gate_only_for_a_provider_whose_cooldown_ended(
    clock: ManualClock, wall: ManualClock,
) -> None:
    board = board_with(clock, wall)
    asked = Asked()
    gate = ProbeGate(asked, clock)
    gate.active = True
    board.probe_gate = gate.allow
    board.probing_elsewhere = gate.elsewhere
    assert board.is_available("healthy")
    board.record_failure("p", "refused", cooldown=10)
    assert not board.is_available("p")
    assert asked.names == []  # cooling down: nothing to ask yet
    clock.advance(10.001)
    assert not board.is_available("p")
    assert asked.names == ["p"]
    gate.refused("p", 5)
    assert board.is_probing("p")  # at another instance
    gate.granted("p", 5)
    assert board.is_available("p") and not board.is_probing("p")
    assert board.record_attempt("p")  # this instance's request is the probe
    assert board.is_probing("p")


def test_a_dry_run_plan_asks_for_no_probe_claim(clock: ManualClock, wall: ManualClock) -> None:
    """`POST /routes/explain` plans as a dry run: a provider whose cooldown ended is shown as a request would find
    it, but no claim is asked for (asking would make this instance the prober, and others wait on it)."""
    board = board_with(clock, wall)
    asked = Asked()
    gate = ProbeGate(asked, clock)
    gate.active = True
    board.probe_gate, board.probe_peek = gate.allow, gate.peek
    board.record_failure("p", "refused", cooldown=10)
    clock.advance(10.001)
    providers = [provider("p"), provider("q")]
    router = Router()

    looked = router.plan(providers, board, Settings(), dry_run=True)
    assert [p.name for p in looked.usable] == ["q"] and asked.names == []
    gate.granted("p", 5)
    assert [p.name for p in router.plan(providers, board, Settings(), dry_run=True).usable] == ["p", "q"]
    gate.forget("p")
    router.plan(providers, board, Settings())
    assert asked.names == ["p"]  # a request's plan asks


# =====================================================================================================
# what the board, the session map and the router tell
# =====================================================================================================


class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def health_changed(self, name: str) -> None:
        self.events.append(("health", name))

    def probe_started(self, name: str) -> None:
        self.events.append(("probe", name))

    def probe_ended(self, name: str) -> None:
        self.events.append(("probe ended", name))

    def latency_sampled(self, name: str, latency_ms: float) -> None:
        self.events.append(("latency", name))


def test_the_board_tells_its_changes_and_keeps_quiet_on_plain_successes(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    heard = Heard()
    board.listener = heard
    board.origin = "me"
    board.record_success("p", 10.0)
    board.record_success("p")
    assert heard.events == [("latency", "p")]
    heard.events.clear()
    board.record_failure("p", "refused", cooldown=5)
    assert heard.events == [("health", "p"), ("health", "p")]  # the failure, then its cooldown
    heard.events.clear()
    clock.advance(5.001)
    board.record_attempt("p")
    board.record_attempt("p")
    assert heard.events == [("probe", "p")]
    board.record_neutral("p")
    assert heard.events == [("probe", "p"), ("probe ended", "p")]
    heard.events.clear()
    wall.advance(7)
    board.record_success("p")
    assert heard.events == [("health", "p")]
    assert board.get("p").generation == (WALL + 7, "me")


def test_a_forgiven_credential_starts_a_generation(clock: ManualClock, wall: ManualClock) -> None:
    board = board_with(clock, wall)
    heard = Heard()
    board.listener = heard
    board.record_failure("p", "HTTP 401", cooldown=3600, kind=AUTH)
    heard.events.clear()
    board.forgive_auth_failures()
    assert heard.events == [("health", "p")]
    assert board.get("p").generation[0] == WALL


def test_sessions_are_shared_by_digest(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.remember("session:early", "alpha")
    told: list[tuple[str, str]] = []
    affinity.share(session_digest)
    affinity.listener = lambda key, provider: told.append((key, provider))
    assert affinity.provider_for("session:early") == "alpha"  # kept across the switch
    affinity.remember("session:s1", "alpha")
    affinity.remember("session:s1", "alpha")  # the same pin again: nothing to tell
    affinity.remember("session:s1", "beta")  # moved
    assert told == [(session_digest("session:s1"), "alpha"), (session_digest("session:s1"), "beta")]
    clock.advance(26)
    affinity.remember("session:s1", "beta")  # told again now and then, so that the shared copy stays
    assert len(told) == 3
    affinity.adopt(session_digest("session:elsewhere"), "gamma")
    assert affinity.provider_for("session:elsewhere") == "gamma"
    assert (session_digest("session:elsewhere"), "gamma") not in told  # a pin from elsewhere is not told back
    assert {(k, p) for k, p, _ in affinity.pins()} >= {(session_digest("session:elsewhere"), "gamma")}
    affinity.share(None)
    assert len(affinity) == 0


def test_an_old_pin_from_elsewhere_is_not_taken(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.adopt("d1", "alpha", age=101)
    assert len(affinity) == 0


def test_the_round_robin_turn_can_be_moved() -> None:
    board = HealthBoard()
    providers = [provider("a"), provider("b"), provider("c")]
    router = Router(seed=1)
    settings_ = Settings(strategy="round_robin")
    assert router.plan(providers, board, settings_).usable[0].name == "a"
    router.turn = 5  # the turns all instances took
    assert router.plan(providers, board, settings_).usable[0].name == "c"
    assert router.turn == 6


# =====================================================================================================
# applying messages (SharedState.apply), settings, URLs
# =====================================================================================================


def shared_providers(*configs: ProviderConfig) -> tuple[Providers, SharedState, SessionAffinity]:
    providers = Providers()
    affinity = SessionAffinity()
    shared = SharedState(providers, affinity, Router())
    config = BalancerConfig(providers=list(configs), settings=Settings(shared_state="redis://127.0.0.1:1/0"))
    providers.apply(LoadedConfig(config=config, source="test"))
    return providers, shared, affinity


def test_messages_about_the_same_provider_are_applied() -> None:
    main = provider("main")
    providers, shared, affinity = shared_providers(main, provider("backup", base_url="https://b.example.com"))
    fp = fingerprint(main)
    now = providers.board.now()[1]
    shared.apply(HealthNews("main", fp, HealthRecord(cooldown_until=now + 30, cooldown_reason="HTTP 529",
                                                     cooldown_class=OVERLOADED, consecutive_failures=1, cooldowns=1)))
    assert 29 < providers.board.cooldown_remaining("main") <= 30
    shared.apply(Pin("d" * 32, "main", fp))
    assert ("d" * 32, "main") in {(k, p) for k, p, _ in affinity.pins()}
    shared.apply(LatencyNews("main", fp, 80.0, 1))
    assert providers.board.get("main").latency_ms == 80.0


def test_messages_about_another_provider_of_the_same_name_are_ignored() -> None:
    providers, shared, affinity = shared_providers(provider("main"))
    other = fingerprint(provider("main", base_url="https://elsewhere.example.com"))
    now = providers.board.now()[1]
    shared.apply(HealthNews("main", other, HealthRecord(cooldown_until=now + 30, cooldowns=1)))
    shared.apply(HealthNews("ghost", other, HealthRecord(cooldown_until=now + 30, cooldowns=1)))
    shared.apply(Pin("d" * 32, "main", other))
    assert providers.board.cooldown_remaining("main") == 0
    assert len(affinity) == 0


def test_an_instance_ignores_its_own_messages() -> None:
    main = provider("main")
    providers, shared, _ = shared_providers(main)
    now = providers.board.now()[1]
    news = HealthNews("main", fingerprint(main), HealthRecord(cooldown_until=now + 30, cooldowns=1))
    shared._receive(encode(shared.origin, news))
    assert providers.board.cooldown_remaining("main") == 0
    shared._receive(encode("another-instance", news))
    assert providers.board.cooldown_remaining("main") > 0


def test_a_reload_that_changes_a_provider_starts_it_afresh() -> None:
    main = provider("main")
    providers, _, _ = shared_providers(main, provider("backup", base_url="https://b.example.com"))
    providers.board.record_failure("main", "refused", cooldown=60)
    providers.board.record_failure("backup", "refused", cooldown=60)
    config = BalancerConfig(providers=[provider("main", auth_value="sk-rotated"),
                                       provider("backup", base_url="https://b.example.com", priority=2)],
                            settings=Settings(shared_state="redis://127.0.0.1:1/0"))
    providers.apply(LoadedConfig(config=config, source="test"))
    assert providers.board.cooldown_remaining("main") == 0  # another credential: another provider
    assert providers.board.cooldown_remaining("backup") > 0  # only its priority changed: the same provider


def test_without_shared_state_a_reload_keeps_health_by_name_as_before() -> None:
    providers = Providers()
    SharedState(providers, SessionAffinity(), Router())
    providers.apply(LoadedConfig(config=BalancerConfig(providers=[provider("main")]), source="test"))
    providers.board.record_failure("main", "refused", cooldown=60)
    providers.apply(LoadedConfig(config=BalancerConfig(providers=[provider("main", auth_value="sk-2")]),
                                 source="test"))
    assert providers.board.cooldown_remaining("main") > 0
    assert providers.board.listener is None and providers.board.probe_gate is None
    assert providers.shared_status() is None


def test_the_status_shows_the_url_without_its_password() -> None:
    assert shown_url("redis://:hunter2@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert shown_url("rediss://user:p%40ss@[::1]:6379/0") == "rediss://[::1]:6379/0"
    assert url_secrets("redis://:p%40ss@h:1/0") == ["p%40ss", "p@ss"]
    assert url_secrets("redis://h:1/0") == [] and url_secrets(None) == []


SETTINGS_FILE = """
providers:
  - {{name: main, base_url: "https://api.example.com", auth_value: k}}
settings:
  shared_state: "{url}"
"""


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380", "valkey://h:1/15",
                                 "redis://h"])
def test_shared_state_urls_that_load(url: str) -> None:
    assert parse_config(SETTINGS_FILE.format(url=url), "f").config.settings.shared_state == url


@pytest.mark.parametrize("url, problem", [
    ("http://:hunter2@h:6379/0", "redis://"),
    ("redis://:hunter2@:6379/0", "host"),
    ("redis://:hunter2@h:99999/0", "port"),
    ("redis://:hunter2@h:6379/zero", "database"),
])
def test_shared_state_urls_that_do_not_load_say_why_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(SETTINGS_FILE.format(url=url), "f")
    assert "shared_state" in str(error.value) and problem in str(error.value)
    assert "hunter2" not in str(error.value)


def test_the_namespace_is_a_plain_name() -> None:
    with pytest.raises(ConfigError):
        parse_config(SETTINGS_FILE.format(url="redis://h:1/0") + "  shared_state_namespace: 'a b*'\n", "f")
