"""A large request's bytes on their way to the provider it will most likely go to, while the balancer reads and
checks its body.

Reading and checking a body of a megabyte takes the balancer one to two milliseconds; sending it to a provider
takes the provider about as long to read. Done one after the other, the client waits for both. So for a large
`/v1/messages` body the request is built for the provider that served this client's last request for the same
model, and written to an idle connection of its (http1_transport.EarlyRequest) before the body is read: all but
its last byte, which the provider needs before it can do anything with it. When the request the balancer then
decides on is exactly that one (same provider, headers and bytes), it is sent by writing that byte; otherwise that
connection is reset and the request is sent as usual.

What the guess may and may not do:
- it changes nothing the balancer decides (the provider, the key, the body, the verdicts): a wrong guess costs the
  bytes written and one kept connection;
- it is made only when any provider may receive any request (no routes: a route may keep requests away from a
  provider), and only with the `priority` strategy without session affinity (the others send the next request
  elsewhere by design); for a provider the client was served by, that the plan would ask whatever the body holds
  (`_fit`), at an `http://` address without a proxy;
- only for a body whose last byte is its closing brace, and what is held back is that byte: the provider holds no
  JSON document, and no request either (one byte short of its content-length). A connection not taken is reset,
  not closed: nothing still buffered is written, and the provider is told plainly;
- the body is not sent before the request passed the access and quota checks (earlier addons), and never
  completely before it passed the balancer's own.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import httpx

from .anthropic_adapter import build_request
from .config import ProviderConfig, Settings
from .exchange import Exchange
from .health import HealthBoard
from .http1_transport import EARLY, UNUSED, EarlyRequest
from .model_map import choose_model
from .providers import Providers
from .request_body import first_model
from .upstream import ClientPool

log = logging.getLogger("balancer")

# Bodies from this size on (bytes) are written early: below it, reading the body costs less than the guess.
EARLY_ABOVE = 256 * 1024
# (client, requested model) pairs remembered.
REMEMBERED = 1024
# Longer model names are not remembered (nor could the body's first member give one back, request_body.first_model):
# a client's name for a model is its own text, and a thousand of them must not cost the balancer megabytes.
MODEL_CHARACTERS = 1024


class ServedBefore:
    """Which provider served each client's latest request for each model."""

    def __init__(self, size: int = REMEMBERED):
        self._size = size
        self._served: OrderedDict[tuple[str | None, str], str] = OrderedDict()

    def remember(self, client: str | None, model: str, provider: str) -> None:
        if len(model) > MODEL_CHARACTERS:
            return
        key = (client, model)
        self._served[key] = provider
        self._served.move_to_end(key)
        if len(self._served) > self._size:
            self._served.popitem(last=False)

    def provider(self, client: str | None, model: str) -> str | None:
        return self._served.get((client, model))


class EarlyUpload:
    """One request's early bytes, and the provider they went to."""

    def __init__(self, provider: str, written: EarlyRequest, guess: Exchange):
        self.provider = provider
        self._written = written
        self._guess = guess
        self._decided = False

    def lend(self, exchange: Exchange) -> None:
        """What the guess built from the same body holds for `exchange` too (where it was built from the same model
        span): the request built for the provider guessed is then the very bytes written, not a copy of them."""
        if exchange.body is self._guess.body:
            exchange.mapped.update(self._guess.mapped)

    def attach(self, provider: ProviderConfig, request: httpx.Request) -> None:
        """The request's first attempt is built: `request`, to `provider`. The early bytes are for it or for
        nothing: a first attempt at another provider closes their connection now (and lets go of their copy of the
        body) rather than when the request is over."""
        if self._decided:
            return
        self._decided = True
        if provider.name == self.provider:
            request.extensions[EARLY] = self._written
        else:
            self._written.abandon()

    def over(self) -> str:
        """The request is over: a connection no request took is closed. What became of the bytes
        (http1_transport.TAKEN, DECLINED or UNUSED)."""
        self._written.abandon()
        return self._written.outcome or UNUSED


def start_early_upload(
    providers: Providers, pool: ClientPool, served: ServedBefore, client: str | None, method: str, path: str,
    client_headers: list[tuple[str, str]], body: bytes,
) -> EarlyUpload | None:
    """The early bytes of a /v1/messages request whose body is not read yet on their way, or None when no guess
    is made (whatever goes wrong making one: the request must never depend on it)."""
    config = providers.config
    # Only a body whose last byte closes it: without that byte, what the provider holds is no JSON document.
    if len(body) < EARLY_ABOVE or not body.endswith(b"}") or config.routes:
        return None
    if not _same_first_every_time(providers.settings):
        return None
    try:
        return _guess(providers, pool, served, client, method, path, client_headers, body)
    except Exception:  # a bug in the guess must cost the guess only
        log.exception("the early upload of a request failed; it is sent as usual")
        return None


def _guess(
    providers: Providers, pool: ClientPool, served: ServedBefore, client: str | None, method: str, path: str,
    client_headers: list[tuple[str, str]], body: bytes,
) -> EarlyUpload | None:
    config = providers.config
    first = first_model(body)
    if first is None:
        return None
    requested, span = first
    name = served.provider(client, requested)
    provider = next((p for p in config.providers if p.name == name), None) if name is not None else None
    if provider is None or not _fit(provider, providers.board):
        return None
    if any(providers.keys.set_aside(subject) is not None for subject in provider.key_subjects):
        return None  # its key is short of headroom or at a limit: the plan asks the others first
    transport = pool.plain_transport(provider.proxy)
    if transport is None:
        return None
    # The exchange as far as the unread body tells it: the model it names first (the checks find a second one),
    # and no thinking blocks of the balancer's to strip (the search is made later, while the provider reads).
    guess = Exchange(
        kind="messages", method=method, path=path, client_headers=client_headers, body=body,
        parsed={"model": requested}, requested_model=requested, stream=False, idle_timeout=0.0,
        on_committed_failure=_nobody, capabilities=providers.capabilities, model_span=span, translated=False,
    )
    if guess.fixes_for(provider, choose_model(requested, provider).model):
        return None  # the body is written out again for this provider: from the whole of it, once it is read
    request, _ = build_request(provider, guess)
    if request.url.scheme != "http":
        return None
    written = transport.write_early(request)
    return EarlyUpload(provider.name, written, guess) if written is not None else None


def _nobody(provider: ProviderConfig, reason: str, kind: str) -> None:
    """A guess never reaches a stream."""


def _same_first_every_time(settings: Settings) -> bool:
    """Whether the provider asked first is the same for every request while the providers stay healthy: so with
    `priority`, but not when the strategy turns or draws (each request its next provider) nor with session affinity
    (each session its own)."""
    return settings.strategy == "priority" and settings.affinity_in_force != "session"


def _fit(provider: ProviderConfig, board: HealthBoard) -> bool:
    """A provider the request may go to whatever its body holds, and that the plan would ask now: enabled, not
    cooling down nor recovering from a cooldown (until a probe has served, the plan asks it only for the probe, and
    with shared state only once its claim to probe was granted); not one that refuses some
    requests by their content (`images: false`, `max_context`); not a passthrough one (the early head would carry
    the client's own key to a provider its request may never go to); of Anthropic type (its request is the body
    with its model mapped) and without a key pool (which key serves is decided per request)."""
    return (provider.enabled and provider.type == "anthropic" and not provider.is_pool
            and provider.auth_type != "passthrough" and provider.images and provider.max_context is None
            and board.get(provider.name).cooldowns == 0 and not board.is_cooling_down(provider.name)
            and not board.is_probing(provider.name))
