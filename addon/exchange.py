"""The contract between the gateway and the provider adapters.

The gateway describes one client request once (`Exchange`); for each provider it tries, the adapter of that
provider's type prepares a call (`ProviderCall`: the request to send, the model chosen, how to open the answer);
the answer it opens (`Answer`) is what the relay hands to the client. The gateway holds every adapter as a
`ProviderAdapter` and every call as a `ProviderCall`: it never asks which type of provider it deals with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .capabilities import Capabilities, Fix
from .config import ProviderConfig
from .model_field import with_model
from .model_map import ModelChoice
from .stream_guard import Leftover
from .translated_thinking import may_hold_translated_thinking
from .usage_watch import UsageWatch


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
    # What providers were found not to accept (learned for later requests too).
    capabilities: Capabilities = field(default_factory=Capabilities)
    # Fixes for this request, per provider name: all a provider's refusals of it (the store keeps only some).
    own_fixes: dict[str, frozenset[Fix]] = field(default_factory=dict)
    # Per provider name: the fixes of its latest refusal, with the model, until a try without them is accepted.
    unconfirmed: dict[str, tuple[str | None, frozenset[Fix]]] = field(default_factory=dict)
    # Seconds of silence in a committed stream before the client gets a `ping` event (0: never).
    keepalive: float = 0.0
    # Where the top-level model's value is in `body` when the reading found it (request_body.py).
    model_span: tuple[int, int] | None = None
    # Whether the body may hold thinking blocks the balancer signed (a search of all its bytes): None until looked
    # at, once however many Anthropic-type attempts (and retries) the request takes.
    translated: bool | None = field(default=None, repr=False)
    # The body asking for each model it was built for (with the model span it was built from): once per request.
    mapped: dict[tuple[str, tuple[int, int] | None], bytes] = field(default_factory=dict, repr=False)

    def may_hold_translated_thinking(self) -> bool:
        """translated_thinking.may_hold_translated_thinking of the body."""
        if self.translated is None:
            self.translated = may_hold_translated_thinking(self.body)
        return self.translated

    def body_for(self, model: str) -> bytes:
        """model_field.with_model of the body (read as `parsed`), made once per model however many attempts (and
        retries) the request takes."""
        key = (model, self.model_span)
        body = self.mapped.get(key)
        if body is None:
            assert self.parsed is not None
            body = self.mapped[key] = with_model(self.body, self.parsed, model, self.model_span)
        return body

    def redact_body(self, body: bytes) -> bytes:
        return self.redact(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def fixes_for(self, provider: ProviderConfig, model: str | None) -> frozenset[Fix]:
        """How this request is to be changed for `provider` asked for `model`."""
        own = self.own_fixes.get(provider.name)
        learned = self.capabilities.fixes(provider, model)
        return learned | own if own else learned

    def fix(self, provider: ProviderConfig, model: str | None, fixes: Iterable[Fix]) -> None:
        """The provider refused part of this request: every fix applies to this request's next try. They are
        remembered for later requests only once a try built with them is not refused for the same thing (`confirm`,
        or a refusal that names something else): a refusal that only echoed the client's text, or that a fix did
        not cure, teaches nothing."""
        fixes = frozenset(fixes)
        earlier = self.unconfirmed.get(provider.name)
        if earlier is not None and fixes - earlier[1]:
            # The try without the earlier parts was refused for something else: those parts were the trouble.
            self.capabilities.learn(provider, earlier[0], earlier[1])
        if fixes:
            self.own_fixes[provider.name] = self.own_fixes.get(provider.name, frozenset()) | fixes
            self.unconfirmed[provider.name] = (model, fixes)

    def confirm(self, provider: ProviderConfig) -> None:
        """The provider accepted a try built with this request's fixes: they are remembered (as far as the store
        keeps them) for its later requests."""
        earlier = self.unconfirmed.pop(provider.name, None)
        if earlier is not None:
            self.capabilities.learn(provider, *earlier)


@dataclass
class Answer:
    """A provider's acceptable answer, in Anthropic's terms, ready to be relayed to the client."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    is_sse: bool
    # Shown the stream's events by the adapter's event pipeline; None: the hand-off reads the body's bytes.
    watch: UsageWatch | None = None
    # A guarded stream (whole events only) gets a `ping` after this many silent seconds (0: never).
    keepalive: float = 0.0
    # The client's tools the provider was asked without (server tools at an OpenAI-type provider).
    dropped_tools: tuple[str, ...] = ()
    # The body was read whole (reading `body` waits for nothing): the client can get it in one piece at once.
    whole: bool = False
    # A guarded stream's: what its provider sends after a complete answer, read once the client's stream has ended.
    leftover: Leftover | None = None


class RetryWithout(Exception):
    """Raised by `ProviderCall.open_answer` when the provider refused, with a 4xx, part of the request it can do
    without: the request is built again (the exchange knows the fixes now) and sent once more to the same provider.
    `answer` is the provider's error, for the client when no second try is made."""

    def __init__(self, answer: Answer, status: int, what: str):
        super().__init__(what)
        self.answer = answer
        self.status = status
        self.what = what  # how the next try differs: "without reasoning_effort"


class ProviderCall(Protocol):
    """One attempt at one provider, as its adapter prepared it."""

    @property
    def request(self) -> httpx.Request:
        """What the provider is sent."""
        ...

    @property
    def choice(self) -> ModelChoice | None:
        """The model the provider is asked for (None: the request names no model, e.g. `/v1/models`)."""
        ...

    async def open_answer(self, response: httpx.Response, deadline: float) -> Answer:
        """The provider's answer (its headers read) made ready to relay. Raises `StreamFailure` when it turns
        out to be a failure before anything reached the client (a stream before its commit point, a message
        that breaks off): the request then goes to the next provider; raises `RetryWithout` when the provider
        refused part of the request it can do without. `deadline`: a time.monotonic() value."""
        ...


class ProviderAdapter(Protocol):
    """A type of provider (`anthropic`, `openai`)."""

    def prepare(self, provider: ProviderConfig, exchange: Exchange) -> ProviderCall:
        """The call this request makes to `provider` (one of this adapter's type)."""
        ...
