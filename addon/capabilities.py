"""What the balancer learned that a provider does not accept, kept per provider and model.

A provider that answers a 4xx naming something the balancer can build the request without (an OpenAI parameter it
added, an Anthropic beta flag or body field a relay does not know) is asked again without it (failover.py), and
what it refused is remembered here: later requests to that provider and model are built without it from the start
(openai_adapter.py, anthropic_adapter.py). What was learned stays across reloads that leave the server the same
(the provider's type and base_url) and is forgotten when either changes. The credential does not count: what a
server accepts is the server's, and every key of a pool (each attempt carries one of them) shares it.

What is remembered changes other clients' requests, so only what the balancer knows may be (`rememberable`): an
OpenAI parameter the balancer itself writes, an Anthropic body field from a fixed list of optional ones (those of
the Messages API and those Claude Code sends), any `anthropic-beta` value (a header value is dropped only from
requests that send it), the one rename, system messages folded. Anything else a provider refused by name (a field
the balancer does not know, a value of a known kind it does not take) is fixed for the refused request only.

The store is bounded per provider: at most MAX_MODELS_PER_PROVIDER models and MAX_FIXES_PER_MODEL fixes per model,
each evicting the least recently used when full, so that made-up model names or beta values cannot fill it and keep
a real model from being learned: at worst a real model's fixes are evicted and learned again with one retry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import ProviderConfig
from .log_text import loggable

log = logging.getLogger("balancer")


def fingerprint(provider: ProviderConfig) -> str:
    """The server behind a provider: what it accepts goes with it."""
    return hashlib.sha256(f"{provider.type}\0{provider.base_url}".encode("utf-8", "surrogatepass")).hexdigest()[:16]

# Kinds of fix.
DROP = "drop"  # a body field or parameter left out
RENAME = "rename"  # a parameter sent under another name (max_tokens -> max_completion_tokens)
DROP_BETA = "drop_beta"  # an `anthropic-beta` value left out
FOLD_SYSTEM = "fold_system"  # mid-conversation system messages sent as user text
STRIP_THINKING = "strip_thinking"  # earlier thinking blocks left out (one conversation's signatures: not learned)

# A provider's learned fixes are bounded (least recently used evicted): no provider or client can make the balancer
# hold much, whatever it answers or sends.
MAX_FIXES_PER_MODEL = 32
MAX_MODELS_PER_PROVIDER = 64

# OpenAI parameters the balancer writes that a request can do without.
OPENAI_DROPPABLE = frozenset({
    "reasoning_effort", "reasoning", "thinking", "stream_options", "parallel_tool_calls", "user", "metadata",
    "tool_choice", "temperature", "top_p",
})
OPENAI_RENAMES = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}
# Optional Anthropic body fields (the Messages API's and those Claude Code sends): the only ones whose refusal is
# remembered. Another field refused by name is left out of that request only.
ANTHROPIC_OPTIONAL = frozenset({
    "metadata", "temperature", "top_p", "top_k", "thinking", "output_config", "output_format", "context_management",
    "service_tier", "container", "mcp_servers", "inference_geo",
})
_BETA_VALUE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True, order=True)
class Fix:
    """One change to the request a provider needs."""

    kind: str
    name: str = ""
    to: str = ""
    once: bool = False  # for the refused request only, whatever was refused (a refused value, not a field)

    @property
    def learned(self) -> bool:
        """Remembered for the provider (a thinking signature belongs to one conversation, not to a provider)."""
        return self.kind != STRIP_THINKING and not self.once

    def describe(self) -> str:
        if self.kind == DROP:
            return f"without {self.name}"
        if self.kind == RENAME:
            return f"with {self.to} instead of {self.name}"
        if self.kind == DROP_BETA:
            return f"without beta {self.name}"
        if self.kind == FOLD_SYSTEM:
            return "with mid-conversation system messages as user text"
        return "without earlier thinking blocks"


def describe_fixes(fixes: Iterable[Fix]) -> str:
    return ", ".join(dict.fromkeys(fix.describe() for fix in sorted(fixes)))


def rememberable(provider_type: str, fix: Fix) -> bool:
    """Whether `fix` may be remembered for a provider of that type (and so change other clients' requests)."""
    if not fix.learned:
        return False
    if fix.kind == DROP:
        return fix.name in (OPENAI_DROPPABLE if provider_type == "openai" else ANTHROPIC_OPTIONAL)
    if fix.kind == RENAME:
        return provider_type == "openai" and OPENAI_RENAMES.get(fix.name) == fix.to
    if fix.kind == DROP_BETA:
        return provider_type != "openai" and _BETA_VALUE.fullmatch(fix.name) is not None
    return fix.kind == FOLD_SYSTEM and provider_type != "openai"


@dataclass
class _Learned:
    fingerprint: str
    # model -> its fixes, oldest first; models least recently used first
    by_model: OrderedDict[str, dict[Fix, None]] = field(default_factory=OrderedDict)
    # the same, as the adapters ask for it
    frozen: dict[str, frozenset[Fix]] = field(default_factory=dict)


class Capabilities:
    """The fixes learned per provider (by name, while its fingerprint stays the same) and model."""

    def __init__(self) -> None:
        self._providers: dict[str, _Learned] = {}

    def fixes(self, provider: ProviderConfig, model: str | None) -> frozenset[Fix]:
        learned = self._providers.get(provider.name)
        if learned is None:  # the usual case: nothing learned, nothing to look up
            return frozenset()
        key = model or ""
        found = learned.frozen.get(key)
        if found is None:
            return frozenset()
        learned.by_model.move_to_end(key)  # recently used: the last to be evicted
        return found

    def learn(self, provider: ProviderConfig, model: str | None, fixes: Iterable[Fix]) -> frozenset[Fix]:
        """Remember `fixes` (those that may be, see `rememberable`) for the provider and model; returns the new
        ones, each logged once."""
        wanted = {fix for fix in fixes if rememberable(provider.type, fix)}
        if not wanted:
            return frozenset()
        fp = fingerprint(provider)
        learned = self._providers.get(provider.name)
        if learned is None or learned.fingerprint != fp:
            learned = self._providers[provider.name] = _Learned(fp)
        key = model or ""
        known = learned.by_model.get(key)
        new = frozenset(wanted - set(known or ()))
        if not new:
            return frozenset()
        if known is None:
            while len(learned.by_model) >= MAX_MODELS_PER_PROVIDER:
                evicted, _ = learned.by_model.popitem(last=False)
                del learned.frozen[evicted]
            known = learned.by_model[key] = {}
        learned.by_model.move_to_end(key)
        # A name learned one way replaces the opposite rename learned before (a server that changed its mind).
        for fix in new:
            if fix.kind == RENAME:
                known.pop(Fix(RENAME, fix.to, fix.name), None)
        for fix in sorted(new):
            known[fix] = None
        while len(known) > MAX_FIXES_PER_MODEL:
            del known[next(iter(known))]
        learned.frozen[key] = frozenset(known)
        log.info("%s (model %s) refused part of a request; its requests are now sent %s", provider.name,
                 loggable(key or "-"), loggable(describe_fixes(new)))
        return new

    def retain(self, providers: Iterable[ProviderConfig]) -> None:
        """After a reload: what was learned stays for the providers that are still the same, and only for them."""
        current = {p.name: fingerprint(p) for p in providers}
        for name in list(self._providers):
            if current.get(name) != self._providers[name].fingerprint:
                del self._providers[name]

    def shown(self, provider: ProviderConfig) -> dict[str, list[str]]:
        """What `/providers` and `balancer.status` show: per model, how its requests are changed."""
        learned = self._providers.get(provider.name)
        if learned is None or learned.fingerprint != fingerprint(provider):
            return {}
        return {model: [fix.describe() for fix in sorted(fixes)] for model, fixes in sorted(learned.frozen.items())}
