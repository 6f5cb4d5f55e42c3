"""What every attempt of one client request shares, and the answer a provider adapter hands to the relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .config import ProviderConfig


@dataclass
class Exchange:
    """One client request, as the provider adapters need it."""

    kind: str  # "messages", "count_tokens" or "api"
    method: str
    path: str  # with the query string
    client_headers: list[tuple[str, str]]
    body: bytes
    parsed: dict[str, Any] | None  # the JSON body, for messages and count_tokens
    requested_model: str | None
    stream: bool
    idle_timeout: float
    # Called when a provider fails after its stream was committed (reason, failure class).
    on_committed_failure: Callable[[ProviderConfig, str, str], None]
    # Removes credentials from text a provider wrote (error bodies relayed to the client).
    redact: Callable[[str], str] = str

    def redact_body(self, body: bytes) -> bytes:
        return self.redact(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


@dataclass
class Answer:
    """A provider's acceptable answer, in Anthropic's terms, ready to be relayed to the client."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    is_sse: bool
