"""Session affinity (affinity.py): the key a request's session is known by, and the bounded map from
sessions to the provider that served them."""

from __future__ import annotations

import hashlib
import json

import pytest

from addon.affinity import SessionAffinity, session_key
from clock import ManualClock


def test_session_key_from_json_user_id() -> None:
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "acc-1", "session_id": "3f1c-aa-77"})
    body = {"model": "m", "metadata": {"user_id": user_id}}
    assert session_key(body, []) == "session:3f1c-aa-77"
    # the session wins over any credential
    assert session_key(body, [("x-api-key", "sk-secret")]) == "session:3f1c-aa-77"


def test_session_key_from_legacy_user_id() -> None:
    session = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    user_id = f"user_{'ab' * 32}_account_11111111-2222-3333-4444-555555555555_session_{session}"
    assert session_key({"metadata": {"user_id": user_id}}, []) == "session:" + session


def test_session_key_sessions_differ() -> None:
    one = session_key({"metadata": {"user_id": json.dumps({"session_id": "s1"})}}, [])
    two = session_key({"metadata": {"user_id": json.dumps({"session_id": "s2"})}}, [])
    assert one != two


@pytest.mark.parametrize("user_id", ["alice@example.com", "user-42", json.dumps({"account": "x"}), "123", "{not json"])
def test_session_key_other_user_id_is_hashed(user_id: str) -> None:
    key = session_key({"metadata": {"user_id": user_id}}, [("x-api-key", "sk-secret")])
    assert key is not None and key.startswith("user:")
    assert user_id not in key
    assert key == "user:" + hashlib.sha256(user_id.encode()).hexdigest()[:24]
    assert key == session_key({"metadata": {"user_id": user_id}}, [])  # stable, independent of headers


def test_session_key_different_users_differ() -> None:
    assert session_key({"metadata": {"user_id": "alice"}}, []) != session_key({"metadata": {"user_id": "bob"}}, [])


@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "authorization", "Authorization"])
def test_session_key_from_credential_digest(header: str) -> None:
    credential = "Bearer sk-ant-very-secret-value" if header.lower() == "authorization" else "sk-ant-very-secret"
    key = session_key({"model": "m"}, [("content-type", "application/json"), (header, credential)])
    assert key is not None and key.startswith("client:")
    assert credential not in key
    assert "secret" not in key
    assert key == "client:" + hashlib.sha256(credential.encode()).hexdigest()[:24]


@pytest.mark.parametrize("body", [None, {}, {"metadata": None}, {"metadata": {}}, {"metadata": {"user_id": ""}},
                                  {"metadata": {"user_id": 42}}, {"metadata": "x"}])
def test_session_key_falls_back_to_credential(body: object) -> None:
    key = session_key(body, [("x-api-key", "sk-1")])  # type: ignore[arg-type]
    assert key == "client:" + hashlib.sha256(b"sk-1").hexdigest()[:24]


def test_session_key_different_credentials_differ() -> None:
    assert session_key(None, [("x-api-key", "k1")]) != session_key(None, [("x-api-key", "k2")])


def test_session_key_nothing_is_none() -> None:
    assert session_key(None, []) is None
    assert session_key({"model": "m"}, [("content-type", "application/json")]) is None
    assert session_key({"model": "m"}, [("x-api-key", ""), ("authorization", "")]) is None


def test_session_key_survives_deeply_nested_user_id() -> None:
    key = session_key({"metadata": {"user_id": "[" * 100_000}}, [])
    assert key is not None and key.startswith("user:")


def test_affinity_remember_and_provider_for(clock: ManualClock) -> None:
    affinity = SessionAffinity(clock=clock)
    assert affinity.provider_for("session:1") is None
    affinity.remember("session:1", "alpha")
    affinity.remember("session:2", "beta")
    assert affinity.provider_for("session:1") == "alpha"
    assert affinity.provider_for("session:2") == "beta"
    affinity.remember("session:1", "gamma")  # moved
    assert affinity.provider_for("session:1") == "gamma"
    assert len(affinity) == 2


def test_affinity_remembers_nothing_for_a_request_without_a_session_key(clock: ManualClock) -> None:
    affinity = SessionAffinity(clock=clock)
    affinity.remember(None, "alpha")
    assert len(affinity) == 0
    assert affinity.provider_for(None) is None


def test_affinity_entries_expire_after_ttl(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.remember("s", "alpha")
    clock.advance(100)
    assert affinity.provider_for("s") == "alpha"  # exactly at the TTL: still valid
    clock.advance(0.001)
    assert affinity.provider_for("s") is None
    assert len(affinity) == 0  # the expired entry is dropped


def test_affinity_remember_refreshes_the_ttl(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.remember("s", "alpha")
    clock.advance(80)
    affinity.remember("s", "alpha")
    clock.advance(80)
    assert affinity.provider_for("s") == "alpha"


def test_affinity_is_bounded_and_evicts_the_oldest(clock: ManualClock) -> None:
    affinity = SessionAffinity(max_entries=3, clock=clock)
    for i in range(5):
        affinity.remember(f"s{i}", f"p{i}")
        clock.advance(1)
    assert len(affinity) == 3
    assert [affinity.provider_for(f"s{i}") for i in range(5)] == [None, None, "p2", "p3", "p4"]


def test_affinity_remember_again_makes_an_entry_young(clock: ManualClock) -> None:
    affinity = SessionAffinity(max_entries=2, clock=clock)
    affinity.remember("old", "a")
    affinity.remember("mid", "b")
    affinity.remember("old", "a")  # used again: now the youngest
    affinity.remember("new", "c")
    assert affinity.provider_for("mid") is None
    assert affinity.provider_for("old") == "a"
    assert affinity.provider_for("new") == "c"
