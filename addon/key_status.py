"""What `GET /providers`, `balancer.status` and /metrics show of a provider's keys: `#n`, a fingerprint, health,
use against the configured limits, headroom from the rate-limit headers. Never a key."""

from __future__ import annotations

from typing import Any

from .config import ProviderConfig
from .health import HealthBoard
from .key_book import KeyBook
from .key_identity import key_label
from .ratelimit_headers import Reading
from .usage_windows import MINUTE


def headroom_status(reading: Reading | None, now: float) -> dict[str, Any] | None:
    """The tightest limit of the latest reading: what is left of it, when it resets, which headers said so."""
    if reading is None:
        return None
    budget = reading.tightest
    out: dict[str, Any] = {"source": reading.source, "read_at": round(reading.at, 3)}
    if budget is not None:
        out.update(
            limit_name=budget.name,
            share=round(budget.share, 4) if budget.share is not None else None,
            remaining=budget.remaining,
            limit=budget.limit,
            utilization=budget.utilization,
            reset_in=round(max(budget.reset_at - now, 0.0), 1) if budget.reset_at is not None else None,
        )
    statuses = {b.name: b.status for b in reading.budgets if b.status is not None}
    if statuses:
        out["status"] = statuses
    return out


def key_statuses(provider: ProviderConfig, board: HealthBoard, book: KeyBook) -> list[dict[str, Any]]:
    now = book.now()
    out = []
    for index, key in enumerate(provider.keys):
        subject = provider.key_subjects[index]
        entry: dict[str, Any] = {
            "key": key_label(index),
            "fingerprint": book.fingerprints.get(subject),
            "weight": key.weight,
        }
        if provider.is_pool:
            name = subject
            health, remaining = board.get(name), board.cooldown_remaining(name)
            entry.update(
                healthy=remaining <= 0,
                cooldown_remaining=round(remaining, 1),
                cooldown_reason=health.cooldown_reason if remaining > 0 else None,
                requests=health.requests,
                failures=health.failures,
                last_error=health.last_error,
            )
        short = book.headroom(subject, now)
        entry.update(
            rpm=key.rpm, tpm=key.tpm, max_concurrent=key.max_concurrent,
            requests_this_minute=int(book.usage.used(subject, "requests", MINUTE)),
            tokens_this_minute=int(book.usage.used(subject, "tokens", MINUTE)),
            open=book.usage.open_now(subject),
            headroom=headroom_status(book.readings.get(subject), now),
            passed_over=book.set_aside(subject),
            passed_over_until=round(short.until - now, 1) if short is not None else None,
        )
        out.append(entry)
    return out


def key_line(entry: dict[str, Any]) -> str:
    """One key in `balancer.status`."""
    state = "healthy" if entry.get("healthy", True) else f"cooling down {entry['cooldown_remaining']:.1f}s"
    if entry["passed_over"]:
        state += f", passed over ({entry['passed_over']})"
    headroom = entry["headroom"]
    if headroom and headroom.get("share") is not None:
        state += f", headroom {headroom['share']:.0%} of {headroom['limit_name']}"
    return f"  {entry['key']} {entry['fingerprint']}: {state} | open {entry['open']}"
