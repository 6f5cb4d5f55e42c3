"""Which instance probes a provider whose cooldown has ended: the one that holds the provider's claim.

The claim is taken on the shared server (SET NX PX) off the request path: the first request here that would use
such a provider starts `ask(name)` in the background and goes on without it (the provider counts as being
probed, so the request tries it last, as it would while a probe runs here). Once the claim is granted, the next
request here probes; when another instance holds it, this one waits for that probe's outcome (or the claim's
expiry). With the server out of reach, every instance decides alone, as a single instance does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MINE, THEIRS, ASKING = "mine", "theirs", "asking"
# An answer to a claim that takes longer than this is not waited for: the next request asks again.
ASKING_TIMEOUT = 2.0


@dataclass
class _Claim:
    state: str
    until: float  # monotonic: when the state lapses


class ProbeGate:
    def __init__(self, ask: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self._ask = ask
        self._clock = clock
        self._claims: dict[str, _Claim] = {}
        self.active = False  # True while the shared server is reachable

    def allow(self, name: str) -> bool:
        """May this instance probe `name` now? (HealthBoard.probe_gate; asks for the claim when nobody has.)"""
        if not self.active:
            return True
        claim = self._claims.get(name)
        now = self._clock()
        if claim is not None and claim.until > now:
            return claim.state == MINE
        self._claims[name] = _Claim(ASKING, now + ASKING_TIMEOUT)
        self._ask(name)
        return False

    def peek(self, name: str) -> bool:
        """What `allow` would say now, without asking for a claim (a dry run's plan): no claim is not allowed yet."""
        if not self.active:
            return True
        claim = self._claims.get(name)
        return claim is not None and claim.until > self._clock() and claim.state == MINE

    def elsewhere(self, name: str) -> bool:
        """Another instance holds the claim (nothing is asked)."""
        claim = self._claims.get(name)
        return self.active and claim is not None and claim.state == THEIRS and claim.until > self._clock()

    def holds(self, name: str) -> bool:
        claim = self._claims.get(name)
        return claim is not None and claim.state == MINE and claim.until > self._clock()

    def granted(self, name: str, ttl: float) -> None:
        self._claims[name] = _Claim(MINE, self._clock() + ttl)

    def refused(self, name: str, ttl: float) -> None:
        """Another instance holds the claim for `ttl` more seconds (unless its outcome comes first)."""
        self._claims[name] = _Claim(THEIRS, self._clock() + ttl)

    def forget(self, name: str) -> None:
        """The probe's outcome is known, or the claim was given up: the next request that needs it asks again."""
        self._claims.pop(name, None)

    def clear(self) -> None:
        self._claims.clear()
