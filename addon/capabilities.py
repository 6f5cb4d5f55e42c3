"""What the balancer learned that a provider does not accept, kept per provider and model.

A provider that answers a 4xx naming something the balancer can build the request without (an OpenAI parameter it
added, an Anthropic beta flag or body field a relay does not know) is asked again without it (failover.py), and
what it refused is remembered here: later requests to that provider and model are built without it from the start
(openai_adapter.py, anthropic_adapter.py). What was learned stays across reloads that leave the server the same
(the provider's type and base_url) and is forgotten when either changes. The credential does not count: what a
server accepts is the server's, and every key of a pool (each attempt carries one of them) shares it.
"""

from __future__ import annotations

import hashlib
import logging
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

# A provider's learned fixes are bounded: no provider can make the balancer hold much, whatever it answers.
MAX_FIXES_PER_MODEL = 32
MAX_MODELS_PER_PROVIDER = 64


@dataclass(frozen=True, order=True)
class Fix:
    """One change to the request a provider needs."""

    kind: str
    name: str = ""
    to: str = ""

    @property
    def learned(self) -> bool:
        """Remembered for the provider (a thinking signature belongs to one conversation, not to a provider)."""
        return self.kind != STRIP_THINKING

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
    return ", ".join(fix.describe() for fix in sorted(fixes))


@dataclass
class _Learned:
    fingerprint: str
    by_model: dict[str, frozenset[Fix]] = field(default_factory=dict)


class Capabilities:
    """The fixes learned per provider (by name, while its fingerprint stays the same) and model."""

    def __init__(self) -> None:
        self._providers: dict[str, _Learned] = {}

    def fixes(self, provider: ProviderConfig, model: str | None) -> frozenset[Fix]:
        learned = self._providers.get(provider.name)
        if learned is None:  # the usual case: nothing learned, nothing to look up
            return frozenset()
        return learned.by_model.get(model or "", frozenset())

    def learn(self, provider: ProviderConfig, model: str | None, fixes: Iterable[Fix]) -> frozenset[Fix]:
        """Remember `fixes` (those that are learned) for the provider and model; returns the new ones, each logged
        once."""
        wanted = {fix for fix in fixes if fix.learned}
        if not wanted:
            return frozenset()
        fp = fingerprint(provider)
        learned = self._providers.get(provider.name)
        if learned is None or learned.fingerprint != fp:
            learned = self._providers[provider.name] = _Learned(fp)
        key = model or ""
        known = learned.by_model.get(key, frozenset())
        new = frozenset(wanted - known)
        if not new or len(known) >= MAX_FIXES_PER_MODEL:
            return frozenset()
        if key not in learned.by_model and len(learned.by_model) >= MAX_MODELS_PER_PROVIDER:
            return frozenset()
        # A name learned one way replaces the opposite rename learned before (a server that changed its mind).
        undone = {Fix(RENAME, fix.to, fix.name) for fix in new if fix.kind == RENAME}
        learned.by_model[key] = (known - undone) | new
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
        return {model: [fix.describe() for fix in sorted(fixes)] for model, fixes in sorted(learned.by_model.items())}
