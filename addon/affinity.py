"""Session affinity: requests of one Claude Code session stay on one provider while it stays healthy."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

# Older Claude Code versions: "user_<hash>_account_<uuid>_session_<uuid>".
_LEGACY_SESSION = re.compile(r"_session_([0-9a-fA-F-]{8,})")


def session_key(body: dict[str, Any] | None, headers: Iterable[tuple[str, str]]) -> str | None:
    """The session a request belongs to: `session_id` inside `metadata.user_id`, else a digest of the
    client's credential (never the credential itself), else None."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        try:
            parsed = json.loads(user_id) if user_id.lstrip().startswith("{") else None
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str):
            return "session:" + _short(parsed["session_id"])
        match = _LEGACY_SESSION.search(user_id)
        if match:
            return "session:" + _short(match.group(1))
        return "user:" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    for name, value in headers:
        if name.lower() in ("x-api-key", "authorization") and value:
            return "client:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return None


def _short(session_id: str) -> str:
    """A session id as kept in the map: as sent when it is short (Claude Code's are UUIDs), else a digest, so that
    the map's memory does not depend on what clients send."""
    if len(session_id) <= 64:
        return session_id
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SessionAffinity:
    """A bounded map from session key to the provider that last served it; old entries expire.

    Sharing state, sessions are keyed by a digest other instances compute alike (`share`); a new or moved pin
    is told to `listener`, and pins other instances made are `adopt`ed."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 6 * 3600, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # key -> (provider, last seen, last told to the listener)
        self._sessions: OrderedDict[str, tuple[str, float, float]] = OrderedDict()
        self._shared_key: Callable[[str], str] | None = None
        self.listener: Callable[[str, str], None] | None = None

    def share(self, shared_key: Callable[[str], str] | None) -> None:
        """Key sessions by `shared_key(key)` from now on (None: by the key itself). Entries already kept are
        re-keyed when sharing starts, and forgotten when it stops (their shared keys cannot be turned back)."""
        if shared_key is self._shared_key:
            return
        if shared_key is not None and self._shared_key is None:
            self._sessions = OrderedDict((shared_key(k), v) for k, v in self._sessions.items())
        else:
            self._sessions.clear()
        self._shared_key = shared_key

    def _key(self, key: str) -> str:
        return self._shared_key(key) if self._shared_key is not None else key

    def provider_for(self, key: str | None) -> str | None:
        if key is None:
            return None
        key = self._key(key)
        entry = self._sessions.get(key)
        if entry is None:
            return None
        provider, seen, _ = entry
        if self._clock() - seen > self.ttl:
            del self._sessions[key]
            return None
        return provider

    def remember(self, key: str | None, provider: str) -> None:
        if key is None:
            return
        key = self._key(key)
        now = self._clock()
        old = self._sessions.get(key)
        told = old[2] if old is not None and old[0] == provider else None
        # Told again now and then, so that the shared copy of a long session does not expire.
        if self.listener is not None and (told is None or now - told > self.ttl / 4):
            told = now
            self.listener(key, provider)
        self._store(key, provider, now, now if told is None else told)

    def adopt(self, key: str, provider: str, age: float = 0.0) -> None:
        """A pin another instance made (`key` already in shared form), seen `age` seconds ago."""
        if age > self.ttl:
            return
        now = self._clock()
        self._store(key, provider, now - max(0.0, age), now)

    def pins(self) -> list[tuple[str, str, float]]:
        """(key, provider, seconds since last seen) of every entry that has not expired."""
        now = self._clock()
        return [(k, p, now - seen) for k, (p, seen, _) in self._sessions.items() if now - seen <= self.ttl]

    def _store(self, key: str, provider: str, seen: float, told: float) -> None:
        self._sessions[key] = (provider, seen, told)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.max_entries:
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)
