"""What the balancer did with one API flow: the record it keeps while the flow runs, shown once the flow is over
in the log and in `flow.metadata["balancer"]` (for mitmweb and saved flows)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from .failover import AttemptRecord
from .relay import HandOff
from .usage_watch import UsageWatch

# The status of a request whose provider failed after its stream had reached the client.
FAILED_MID_STREAM = "failed mid-stream"


@dataclass(frozen=True)
class AttemptSummary:
    """One provider attempt, as the log, the flow and the metrics show it."""

    provider: str
    outcome: str  # "200", "HTTP 529 overloaded_error: Overloaded", "connection refused", ...
    ms: float
    failed: bool
    failure_class: str | None  # health.py's failure classes; None when it did not fail
    after_commit: bool = False  # it failed after its stream had reached the client

    @classmethod
    def of(cls, attempt: AttemptRecord) -> AttemptSummary:
        return cls(attempt.provider, attempt.outcome, round(attempt.ms, 1), attempt.failed, attempt.kind)

    def as_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider, "outcome": self.outcome, "ms": self.ms, "failed": self.failed,
            "class": self.failure_class,
        }
        if self.after_commit:
            out["after_commit"] = True
        return out


@dataclass(frozen=True)
class SentRequest:
    """A request as a provider received it, fit to show on the flow (credential values redacted)."""

    url: str
    headers: list[tuple[str, bytes]]
    body: bytes


@dataclass
class FlowRecord:
    """Everything the balancer knows about one API flow while it runs (the gateway keeps it by flow id from the
    `request` hook until `response` or `error`)."""

    request_id: str
    kind: str
    path: str
    requested_model: str | None = None
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    provider: str | None = None
    model: str | None = None
    attempts: list[AttemptSummary] = field(default_factory=list)
    handoff: HandOff | None = None  # where the relay holds the provider's answer
    sent: SentRequest | None = None  # the request as the provider received it (credentials redacted)
    watch: UsageWatch | None = None
    answered_at: float | None = None  # when the balancer answered by itself
    failed_mid_stream: bool = False  # the serving provider failed after its stream was committed

    def fail_after_commit(self, provider: str, reason: str, kind: str) -> None:
        """The serving provider's attempt failed after all, once its stream had reached the client."""
        self.failed_mid_stream = True
        for position in range(len(self.attempts) - 1, -1, -1):
            attempt = self.attempts[position]
            if attempt.provider == provider and not attempt.failed:
                self.attempts[position] = replace(
                    attempt, outcome=f"{attempt.outcome}, then {kind}: {reason}", failed=True, failure_class=kind,
                    after_commit=True,
                )
                return

    def as_metadata(self, status: int | str | None = None) -> dict[str, Any]:
        now = time.perf_counter()
        if self.failed_mid_stream:  # the client got its status line, then an error event (and may have left)
            status = FAILED_MID_STREAM
        first_byte = self.watch.first_byte_at if self.watch else self.answered_at
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "path": self.path,
            "requested_model": self.requested_model,
            "provider": self.provider,
            "model": self.model,
            "stream": self.stream,
            "status": status,
            "attempts": [attempt.as_metadata() for attempt in self.attempts],
            "ttfb_ms": round((first_byte - self.started) * 1000, 1) if first_byte else None,
            "total_ms": round((now - self.started) * 1000, 1),
            "usage": dict(self.watch.usage) if self.watch and self.watch.usage else None,
            "stop_reason": self.watch.stop_reason if self.watch else None,
        }
