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
            return "session:" + parsed["session_id"]
        match = _LEGACY_SESSION.search(user_id)
        if match:
            return "session:" + match.group(1)
        return "user:" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    for name, value in headers:
        if name.lower() in ("x-api-key", "authorization") and value:
            return "client:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return None


class SessionAffinity:
    """A bounded map from session key to the provider that last served it; old entries expire."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 6 * 3600, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def provider_for(self, key: str | None) -> str | None:
        if key is None:
            return None
        entry = self._sessions.get(key)
        if entry is None:
            return None
        provider, seen = entry
        if self._clock() - seen > self.ttl:
            del self._sessions[key]
            return None
        return provider

    def remember(self, key: str | None, provider: str) -> None:
        if key is None:
            return
        self._sessions[key] = (provider, self._clock())
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.max_entries:
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)
