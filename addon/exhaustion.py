"""What the client is told when no provider served its request: the status, Anthropic's error type, retry-after.

Claude Code reads the status: `429 rate_limit_error` and `529 overloaded_error` are shown as what they are and
retried; a `503` is a "server-side issue". It reads `retry-after` as whole seconds and gives up at once on a
wait above 60.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .failover import Exhausted
from .health import AUTH, OVERLOADED, RATE_LIMITED, HealthBoard

# Above this many seconds Claude Code stops retrying: a wait the balancer only predicts is not sent longer.
CLIENT_RETRY_LIMIT = 60


@dataclass(frozen=True)
class ExhaustedAnswer:
    status: int
    error_type: str
    retry_after: int  # whole seconds


def status_for(kinds: Iterable[str]) -> tuple[int, str]:
    """From why each provider did not serve (failure classes; a refused credential is left out): 429 when every
    one was rate-limited, 529 when any was out of capacity (rate-limited, overloaded, cooling down), else 503."""
    reasons = [kind for kind in kinds if kind != AUTH]
    if reasons and all(kind == RATE_LIMITED for kind in reasons):
        return 429, "rate_limit_error"
    if any(kind in (RATE_LIMITED, OVERLOADED) for kind in reasons):
        return 529, "overloaded_error"
    return 503, "api_error"


def retry_after_for(waits: Sequence[tuple[float, bool]]) -> int:
    """Whole seconds until the soonest provider is expected back, from (seconds, the provider said so itself)
    per provider: at least 1, and at most CLIENT_RETRY_LIMIT unless that soonest wait is a provider's own word
    (a retry that soon would only be refused again, so the client may as well stop)."""
    if not waits:
        return 1
    seconds, own_word = min(waits, key=lambda wait: wait[0])
    whole = max(1, math.ceil(seconds))
    return whole if own_word else min(whole, CLIENT_RETRY_LIMIT)


def _skipped_kind(name: str, board: HealthBoard) -> str:
    """Why a provider that was not tried could not serve: its cooldown's class; cooling down for any other
    reason than a credential or a rate limit (or being probed) counts as a lack of capacity."""
    kind = board.get(name).cooldown_class if board.is_cooling_down(name) else None
    return kind if kind in (AUTH, RATE_LIMITED) else OVERLOADED


def _waiting(name: str, board: HealthBoard) -> bool:
    """Cooling down, or just back and waiting for a probe."""
    return board.is_cooling_down(name) or board.get(name).cooldowns > 0 or board.is_probing(name)


def answer_for(result: Exhausted, board: HealthBoard) -> ExhaustedAnswer:
    kinds = [a.kind for a in result.attempts if a.failed and a.kind]
    # Providers left out for what they are (disabled on a route, unable to serve the request: provider_fit.py) say
    # nothing about when to come back.
    held_back = [(p, why) for p, why in result.skipped if _waiting(p.name, board)]
    kinds += [_skipped_kind(p.name, board) for p, _ in held_back]
    status, error_type = status_for(kinds)
    # Per provider: the retry-after it sent with this failure, else the end of its cooldown (0 if not cooling).
    waits: dict[str, tuple[float, bool]] = {}
    for attempt in result.attempts:
        if attempt.retry_after is not None:
            waits[attempt.provider] = (attempt.retry_after, True)
        else:
            waits[attempt.provider] = (board.cooldown_remaining(attempt.provider), False)
    for provider, _ in held_back:
        waits.setdefault(provider.name, (board.cooldown_remaining(provider.name), False))
    out_for_auth = {a.provider for a in result.attempts if a.kind == AUTH}
    out_for_auth |= {p.name for p, _ in held_back if _skipped_kind(p.name, board) == AUTH}
    hopeful = [wait for name, wait in waits.items() if name not in out_for_auth]
    return ExhaustedAnswer(status, error_type, retry_after_for(hopeful or list(waits.values())))
