"""One request, tried on each planned provider in turn until one answers acceptably."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .config import ProviderConfig, Settings
from .health import HealthBoard
from .routing import Plan
from .upstream import ClientPool, describe_exception, should_fail_over

OVERLOAD_STATUSES = frozenset({429, 503, 529})
ERROR_BODY_LIMIT = 16 * 1024


@dataclass
class AttemptRecord:
    provider: str
    outcome: str  # "200", "HTTP 529 overloaded_error: Overloaded", "connection refused", ...
    ms: float
    failed: bool
    overloaded: bool = False


@dataclass
class Success:
    provider: ProviderConfig
    request: httpx.Request
    response: httpx.Response  # headers read, body still streaming
    attempts: list[AttemptRecord]


@dataclass
class Exhausted:
    attempts: list[AttemptRecord]
    skipped: list[tuple[ProviderConfig, str]] = field(default_factory=list)

    @property
    def overloaded(self) -> bool:
        """Capacity trouble (rate limits, overload, everyone cooling down) rather than breakage."""
        if not self.attempts:
            return bool(self.skipped)
        return any(a.overloaded for a in self.attempts)

    def summary(self) -> str:
        parts = [f"{a.provider}: {a.outcome}" for a in self.attempts]
        parts += [f"{p.name}: {reason}" for p, reason in self.skipped]
        if not parts:
            return "no enabled provider can serve this request"
        return "all providers failed: " + "; ".join(parts)


async def error_summary(response: httpx.Response) -> str:
    """`overloaded_error: Overloaded` from an error body (bounded read), or "" when it says nothing useful."""
    body = b""
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        text = ": ".join(str(x) for x in (kind, message) if x)
    elif isinstance(error, str):
        text = error
    else:
        return ""
    return text[:160]


async def attempt_in_turn(
    plan: Plan,
    build_request: Callable[[ProviderConfig], httpx.Request],
    pool: ClientPool,
    board: HealthBoard,
    settings: Settings,
    penalize: bool = True,
) -> Success | Exhausted:
    """Send to each usable provider in order. A transport error, no headers within `request_timeout`, or a
    failover status moves on (and, with `penalize`, cools the provider down); any other answer is returned
    with its body unread."""
    attempts: list[AttemptRecord] = []
    for provider in plan.usable:
        request = build_request(provider)
        client = pool.get(provider.proxy)
        board.record_attempt(provider.name)
        started = time.perf_counter()
        overloaded = False
        try:
            response = await asyncio.wait_for(client.send(request, stream=True), settings.request_timeout)
        except TimeoutError:
            reason = f"no response headers within {settings.request_timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            reason = describe_exception(exc)
        else:
            status = response.status_code
            if not should_fail_over(status):
                if status < 400:
                    board.record_success(provider.name)
                ms = (time.perf_counter() - started) * 1000
                attempts.append(AttemptRecord(provider.name, str(status), ms, failed=False))
                return Success(provider=provider, request=request, response=response, attempts=attempts)
            detail = await error_summary(response)
            reason = f"HTTP {status}" + (f" {detail}" if detail else "")
            overloaded = status in OVERLOAD_STATUSES or "overloaded" in detail
        ms = (time.perf_counter() - started) * 1000
        attempts.append(AttemptRecord(provider.name, reason, ms, failed=True, overloaded=overloaded))
        if penalize:
            board.record_failure(provider.name, reason, settings.failure_cooldown)
    return Exhausted(attempts=attempts, skipped=plan.skipped)
