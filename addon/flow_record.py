"""What the balancer did with one API flow: the record it keeps while the flow runs, and the summary it hands on
once the flow is over (to the log, to `flow.metadata["balancer"]` for mitmweb and saved flows, and to the metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .failover import CLIENT_GONE, AttemptRecord
from .provider_wire import ProviderWire
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
    key: str | None = None  # which key of a pool (`#2`), never the key; None for a single key
    hedge: bool = False  # started beside another provider's attempt that had no content yet

    @classmethod
    def of(cls, attempt: AttemptRecord) -> AttemptSummary:
        return cls(attempt.provider, attempt.outcome, round(attempt.ms, 1), attempt.failed, attempt.kind,
                   key=attempt.key, hedge=attempt.hedge)

    def as_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider, "outcome": self.outcome, "ms": self.ms, "failed": self.failed,
            "class": self.failure_class,
        }
        if self.key is not None:
            out["key"] = self.key
        if self.after_commit:
            out["after_commit"] = True
        if self.hedge:
            out["hedge"] = True
        return out


@dataclass(frozen=True)
class RequestSummary:
    """One finished API request."""

    request_id: str
    kind: str  # "messages", "count_tokens" or "api"
    path: str
    requested_model: str | None
    provider: str | None  # who served it: a provider's name, "local" (a local count), None (nobody)
    model: str | None  # the model that provider was asked for
    stream: bool
    http_status: int | None  # the status the client got; None when the flow ended in an error
    ended: str | None  # None when the answer ran to its end; CLIENT_GONE or "error" otherwise
    failed_mid_stream: bool
    attempts: tuple[AttemptSummary, ...]
    ttfb_ms: float | None
    total_ms: float
    usage: Mapping[str, int] | None  # token counts as the answer reported them
    stop_reason: str | None
    dropped_tools: tuple[str, ...] = ()  # the client's tools the serving provider was asked without
    client: str | None = None  # the name of the client key presented (never the key)
    key_subject: str | None = None  # the provider key that served (key_identity.key_subject), never the key
    usage_estimated: bool = False  # the output tokens are estimated from the content (no final usage came)
    route: str | None = None  # the route whose providers served it (route_plan.py); None: not a routed request
    fell_back: str | None = None  # why its matched route gave way to the default route
    skipped: tuple[tuple[str, str], ...] = ()  # providers not tried, with the reason
    early_upload: tuple[str, str] | None = None  # the provider written to early, and what came of it (early_upload.py)

    @property
    def status(self) -> int | str | None:
        """The status the log and the flow show."""
        if self.failed_mid_stream:  # the client got its status line, then an error event (and may have left)
            return FAILED_MID_STREAM
        return self.ended or self.http_status

    @property
    def client_left(self) -> bool:
        return self.status == CLIENT_GONE

    @property
    def hedged(self) -> bool:
        """A provider was asked beside another that had not produced content yet."""
        return any(attempt.hedge for attempt in self.attempts)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "path": self.path,
            "requested_model": self.requested_model,
            "provider": self.provider,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "attempts": [attempt.as_metadata() for attempt in self.attempts],
            "ttfb_ms": self.ttfb_ms,
            "total_ms": self.total_ms,
            "usage": dict(self.usage) if self.usage else None,
            "stop_reason": self.stop_reason,
            "client": self.client,
        } | ({"dropped_tools": list(self.dropped_tools)} if self.dropped_tools else {}) | (
            {"usage_estimated": True} if self.usage_estimated else {}) | ({"hedged": True} if self.hedged else {}) | (
            self._routing())

    def _routing(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.route is not None:
            out["route"] = self.route
        if self.fell_back is not None:
            out["fell_back"] = self.fell_back
        if self.skipped:
            out["skipped"] = [{"provider": name, "reason": reason} for name, reason in self.skipped]
        if self.early_upload is not None:
            out["early_upload"] = {"provider": self.early_upload[0], "outcome": self.early_upload[1]}
        return out


@dataclass(frozen=True)
class ClientRequest:
    """The request as the flow showed it before it was pointed at the relay: shown again once the answer comes."""

    scheme: str
    host: str
    port: int
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    raw_content: bytes | None


@dataclass
class FlowRecord:
    """Everything the balancer knows about one API flow while it runs (the gateway keeps it by flow id from the
    `request` hook until `response` or `error`)."""

    request_id: str
    kind: str
    path: str
    client: str | None = None  # the name of the client key presented (never the key)
    requested_model: str | None = None
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    provider: str | None = None
    model: str | None = None
    attempts: list[AttemptSummary] = field(default_factory=list)
    served: bool = False  # a provider's answer goes to the client (whole, or through the relay)
    handoff: HandOff | None = None  # where the relay holds the provider's answer
    client_request: ClientRequest | None = None  # what the flow showed before it was pointed at the relay
    attempt_flows: str = "none"  # which attempts get a flow of their own: all, failed or none
    wires: list[ProviderWire | None] = field(default_factory=list)  # per attempt, what went over the wire
    attempt_flow_ids: dict[int, str] = field(default_factory=dict)  # attempt position -> its flow's id
    watch: UsageWatch | None = None
    key_subject: str | None = None  # the provider key that serves: open in the KeyBook until the flow is over
    answered_at: float | None = None  # when the balancer answered by itself
    failed_mid_stream: bool = False  # the serving provider failed after its stream was committed
    dropped_tools: tuple[str, ...] = ()  # the client's tools the serving provider was asked without
    route: str | None = None  # the route whose providers were tried
    fell_back: str | None = None  # why the matched route gave way to the default route
    skipped: list[tuple[str, str]] = field(default_factory=list)  # providers not tried, with the reason
    early_upload: tuple[str, str] | None = None  # the provider written to early, and what came of it
    # What keeps credentials out of the texts made from providers' words for this request: the providers' keys,
    # and the client's own when a passthrough provider may receive it (None: the providers' redactor).
    redact: Callable[[str], str] | None = None

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

    def finished(self, http_status: int | None, ended: str | None = None) -> RequestSummary:
        """The summary of the flow, now over: `http_status` of its answer, or `ended` (CLIENT_GONE, "error")."""
        now = time.perf_counter()
        watch = self.watch
        if watch is not None and ended is not None:  # the body did not run to its end
            watch.finish()
        first_byte = watch.first_byte_at if watch else self.answered_at
        return RequestSummary(
            request_id=self.request_id,
            kind=self.kind,
            path=self.path,
            requested_model=self.requested_model,
            provider=self.provider,
            model=self.model,
            stream=self.stream,
            http_status=http_status,
            ended=ended,
            failed_mid_stream=self.failed_mid_stream,
            attempts=tuple(self.attempts),
            ttfb_ms=round((first_byte - self.started) * 1000, 1) if first_byte else None,
            total_ms=round((now - self.started) * 1000, 1),
            usage=dict(watch.usage) if watch and watch.usage else None,
            stop_reason=watch.stop_reason if watch else None,
            dropped_tools=self.dropped_tools,
            client=self.client,
            key_subject=self.key_subject,
            usage_estimated=bool(watch and watch.estimated),
            route=self.route,
            fell_back=self.fell_back,
            skipped=tuple(self.skipped),
            early_upload=self.early_upload,
        )

