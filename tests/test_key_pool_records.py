"""Key pools in the providers file (addon/config.py) and in what instances tell each other (shared_records.py,
the open counts of shared_state.py): pure units."""

from __future__ import annotations

import pytest

from addon.config import ConfigError, ProviderConfig, parse_config
from addon.ratelimit_headers import read_headers
from addon.shared_records import HeadroomNews, decode, encode, fingerprint, key_fingerprints
from addon.usage_sync import OPEN_STALE, open_elsewhere

NOW = 1_764_633_600.0


def provider(auth_value: object) -> ProviderConfig:
    return ProviderConfig(name="p", base_url="http://127.0.0.1:9", auth_value=auth_value)


def test_a_pool_in_the_file_and_a_single_key_as_before():
    loaded = parse_config(
        "providers:\n"
        "  - {name: pool, base_url: 'http://127.0.0.1:9', auth_value: [sk-a-1111, {value: sk-b-2222, weight: 3,"
        " rpm: 10, tpm: 1000, max_concurrent: 2}]}\n"
        "  - {name: single, base_url: 'http://127.0.0.1:9', auth_value: sk-c-3333}\n", "f")
    pool, single = loaded.config.providers
    assert [k.value for k in pool.keys] == ["sk-a-1111", "sk-b-2222"]
    assert (pool.keys[1].weight, pool.keys[1].rpm, pool.keys[1].tpm, pool.keys[1].max_concurrent) == (3, 10, 1000, 2)
    assert pool.is_pool and pool.credential == "sk-a-1111" and pool.with_key(1).credential == "sk-b-2222"
    assert not single.is_pool and single.with_key(0) is single and single.auth_value == "sk-c-3333"
    assert loaded.warnings == []


@pytest.mark.parametrize(("auth_value", "message"), [
    ("[sk-a-1111, '']", "a key of the pool is empty"),
    ("[sk-a-1111, sk-a-1111]", "the same key is in the pool twice"),
    ("[sk-a-1111, {value: sk-b-2222, rpm: 0}]", "auth_value[1].rpm: Input should be greater than 0"),
    ("[sk-a-1111, {weight: 2}]", "auth_value[1].value: required key is missing"),
    ("{value: sk-a-1111}", "auth_value: Input should be a valid list"),
])
def test_pool_mistakes_are_named_where_they_are(auth_value, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"providers: [{{name: p, base_url: 'http://127.0.0.1:9', auth_value: {auth_value}}}]", "f")
    assert message in str(caught.value)
    assert "credential-" not in str(caught.value) and "pool-key-" not in str(caught.value)


def test_shared_fingerprints_of_a_single_key_stay_as_they_were_and_pool_keys_get_their_own():
    single = provider("sk-c-3333")
    assert key_fingerprints(single) == {}
    assert fingerprint(single) == fingerprint(provider(["sk-c-3333"]))  # the same credential, the same provider
    pool = key_fingerprints(provider(["sk-a-1111", "sk-b-2222"]))
    assert len(set(pool)) == 2 and len(set(pool.values())) == 2
    assert all(subject.startswith("key:p#") and subject.endswith(fp) for subject, fp in pool.items())
    # A key keeps its subject and fingerprint whatever its place, and whatever the other keys are.
    moved = key_fingerprints(provider(["sk-new-4444", "sk-b-2222"]))
    assert set(moved.items()) & set(pool.items()) == {list(pool.items())[1]}


def test_a_headroom_reading_travels_whole_and_a_bad_one_is_ignored():
    reading = read_headers([("anthropic-ratelimit-unified-status", "allowed_warning"),
                            ("anthropic-ratelimit-unified-5h-utilization", "0.93"),
                            ("anthropic-ratelimit-unified-5h-reset", "1764648000"),
                            ("x-ratelimit-limit-tokens", "100"), ("x-ratelimit-remaining-tokens", "4")], NOW)
    assert reading is not None
    decoded = decode(encode("other", HeadroomNews("key:p#1", "fp", reading)))
    assert decoded == ("other", HeadroomNews("key:p#1", "fp", reading))
    bad = encode("other", HeadroomNews("key:p#1", "fp", reading)).replace(b'"remaining":4.0', b'"remaining":-4')
    assert decode(bad) is None


def test_open_counts_of_other_instances_count_until_they_go_stale():
    fields = {b"me": b"5:1764633600.0", b"other": b"2:1764633599.0", b"gone": f"7:{NOW - OPEN_STALE - 1}".encode(),
              b"garbage": b"x:y"}
    assert open_elsewhere(fields, "me", NOW) == 2
    assert open_elsewhere({}, "me", NOW) == 0
    assert open_elsewhere(None, "me", NOW) == 0
