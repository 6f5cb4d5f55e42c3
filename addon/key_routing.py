"""Which key of a provider a request uses, and in which order the others follow.

Keys are ordered by weighted rendezvous hashing on the session: each key scores `weight / -ln(u)`, `u` a hash of
(session, provider, key) in (0, 1), highest first. One session keeps one key (its prompt cache stays warm) while
that key is usable, a key is chosen with a probability proportional to its weight across sessions, and a key that
is passed over moves only its own sessions. Requests without a session draw `u` at random.

A key is passed over (tried after the others) while it cools down (pool keys have health of their own), has used a
configured limit, or has too little headroom left (key_book.py); one that cools down is tried only when no other
key of the provider is left, and never when its credential was refused.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ProviderConfig
from .health import AUTH, HealthBoard
from .key_book import COOLING, KeyBook
from .key_identity import key_label


@dataclass(frozen=True)
class KeyTurn:
    """One key of the provider, in the order of preference, and why it is passed over (None: it is not)."""

    index: int
    subject: str  # usage windows, headroom, shared state
    health: str  # its name on the health board (the provider's own for a single key)
    reason: str | None

    @property
    def label(self) -> str:
        return key_label(self.index)


def _unit(seed: str, provider: str, index: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{provider}\0{index}".encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64  # strictly inside (0, 1)


def rendezvous_order(
    provider: str, weights: Sequence[float], session: str | None, rng: random.Random | None = None
) -> list[int]:
    """Key indexes, most preferred first (see the module's doc)."""
    if len(weights) == 1:
        return [0]
    draw = rng or random.Random()

    def score(index: int) -> float:
        u = _unit(session, provider, index) if session is not None else min(max(draw.random(), 1e-12), 1 - 1e-12)
        return weights[index] / -math.log(u)

    return sorted(range(len(weights)), key=score, reverse=True)


def key_turns(
    provider: ProviderConfig, board: HealthBoard, book: KeyBook, session: str | None = None,
    rng: random.Random | None = None, ordered: bool = True,
) -> list[KeyTurn]:
    """Every key of the provider in the order of preference (file order unless `ordered`), each with why it is
    passed over."""
    keys = provider.keys
    if not keys:
        return []
    pool = provider.is_pool
    turns = []
    order = rendezvous_order(provider.name, [k.weight for k in keys], session, rng) if ordered else range(len(keys))
    for index in order:
        subject = provider.key_subjects[index]
        name = subject if pool else provider.name  # a single key's health is the provider's
        reason = COOLING if pool and not board.is_available(name) else book.set_aside(subject)
        turns.append(KeyTurn(index, subject, name, reason))
    return turns


def keys_to_try(turns: Sequence[KeyTurn], board: HealthBoard) -> list[KeyTurn]:
    """The keys a request tries, in turn: those not passed over, then those at a limit or short of headroom (never
    refused on headroom alone); only when there are none, those cooling down, soonest back first (not those whose
    credential was refused)."""
    ready = [t for t in turns if t.reason is None]
    strained = [t for t in turns if t.reason not in (None, COOLING)]
    if ready or strained:
        return ready + strained
    cooling = [t for t in turns if not (board.is_cooling_down(t.health) and board.get(t.health).cooldown_class == AUTH)]
    return sorted(cooling, key=lambda t: board.cooldown_remaining(t.health))


def is_ready(turns: Sequence[KeyTurn]) -> bool:
    """The provider has a key that is not passed over (a provider without keys of its own always has)."""
    return not turns or any(t.reason is None for t in turns)


def all_keys_cooling(provider: ProviderConfig, board: HealthBoard) -> bool:
    names = provider.key_subjects
    return provider.is_pool and all(board.is_cooling_down(n) for n in names)
