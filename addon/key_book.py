"""What the balancer knows of each provider key between requests: the latest rate-limit reading of its answers,
its use in the current minute and its open requests (usage_windows.py), its fingerprint; and why a key is passed
over now (its configured limits, its headroom).

Keys of passthrough providers are the clients' own: nothing is kept about them.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from .config import BalancerConfig, ProviderConfig, Settings
from .key_identity import Fingerprints, key_label
from .ratelimit_headers import Reading, Shortfall, read_headers, shortfall
from .usage_windows import MINUTE, UsageWindows

# Why a key is passed over for its configured limits (`reason` label of balancer_key_skipped_total).
RPM, TPM, MAX_CONCURRENT = "rpm", "tpm", "max_concurrent"
# A pool key cooling down while others are not (its health is its own).
COOLING = "cooling"


class FinishedRequest(Protocol):
    """What KeyBook.request_over reads of a finished request (flow_record.RequestSummary)."""

    @property
    def key_subject(self) -> str | None: ...

    @property
    def usage(self) -> Mapping[str, int] | None: ...


class KeyBook:
    def __init__(self, usage: UsageWindows | None = None, wall: Callable[[], float] = time.time):
        self.usage = usage or UsageWindows(clock=wall)
        self._wall = wall
        self.readings: dict[str, Reading] = {}  # subject -> the latest rate-limit reading
        self.fingerprints: dict[str, str] = {}  # subject -> fingerprint shown
        self.limits: dict[str, tuple[int | None, int | None, int | None]] = {}  # subject -> (rpm, tpm, concurrent)
        # (provider, key label, reason) -> times a key was passed over for another key or provider.
        self.skipped: Counter[tuple[str, str, str]] = Counter()
        # Hears of each reading taken from an answer here (shared state passes it on).
        self.on_reading: Callable[[str, Reading], None] | None = None
        self._settings = Settings()
        self._own_secret = secrets.token_hex(32)  # when settings.key_fingerprint_secret is unset

    def configure(self, config: BalancerConfig, secret: str | None = None) -> set[str]:
        """A configuration took effect. Returns the subjects of the keys that went: what was learned about them is
        forgotten here, and is the caller's to forget elsewhere. A key kept keeps its subject (key_identity.py),
        whatever its new place in the pool, and with it its counters, open requests and readings."""
        self._settings = config.settings
        shown = Fingerprints(secret or self._own_secret)
        old = set(self.fingerprints)
        self.fingerprints, self.limits = {}, {}
        for provider in config.providers:
            for key, subject in zip(provider.keys, provider.key_subjects, strict=True):
                self.fingerprints[subject] = shown.of(key.value)
                self.limits[subject] = (key.rpm, key.tpm, key.max_concurrent)
        stale = old - set(self.fingerprints)
        for subject in stale:
            self.readings.pop(subject, None)
        return stale

    def now(self) -> float:
        return float(self._wall())

    # -- what answers say --------------------------------------------------------------------------------------
    def observe(self, subject: str, headers: Iterable[tuple[str, str]]) -> Reading | None:
        """Read an answer's rate-limit headers (any answer, success or error) for the key that sent it."""
        reading = read_headers(headers, self.now())
        if reading is not None:
            self.readings[subject] = reading
            if self.on_reading is not None:
                self.on_reading(subject, reading)
        return reading

    def learn(self, subject: str, reading: Reading) -> None:
        """A reading another instance took (kept unless this one has a newer one)."""
        mine = self.readings.get(subject)
        if subject in self.fingerprints and (mine is None or mine.at < reading.at):
            self.readings[subject] = reading

    def headroom(self, subject: str, now: float | None = None) -> Shortfall | None:
        reading = self.readings.get(subject)
        if reading is None:
            return None
        settings = self._settings
        return shortfall(reading, self.now() if now is None else now, settings.headroom,
                         settings.headroom_utilization)

    # -- configured limits ---------------------------------------------------------------------------------------
    def at_limit(self, subject: str) -> str | None:
        """RPM, TPM or MAX_CONCURRENT when the key has used its configured limit (everywhere, as far as known)."""
        rpm, tpm, concurrent = self.limits.get(subject, (None, None, None))
        if concurrent is not None and self.usage.open_now(subject) >= concurrent:
            return MAX_CONCURRENT
        if rpm is not None and self.usage.used(subject, "requests", MINUTE) >= rpm:
            return RPM
        if tpm is not None and self.usage.used(subject, "tokens", MINUTE) >= tpm:
            return TPM
        return None

    def set_aside(self, subject: str) -> str | None:
        """Why the key should be passed over now (a configured limit, then its headroom), or None."""
        reason = self.at_limit(subject)
        if reason is not None:
            return reason
        short = self.headroom(subject)
        return short.reason if short is not None else None

    def limited_subjects(self) -> list[str]:
        return [s for s, limits in self.limits.items() if any(v is not None for v in limits)]

    # -- requests --------------------------------------------------------------------------------------------------
    def started(self, subject: str) -> None:
        """A request goes to the key: it counts for rpm, and is open until `ended`."""
        self.usage.add(subject, "requests", MINUTE, 1)
        self.usage.opened(subject)

    def ended(self, subject: str, usage: Mapping[str, int] | None = None) -> None:
        """The key's request is over (its answer, streamed or not, has ended); `usage` as the answer reported it."""
        self.usage.closed(subject)
        tokens = tokens_used(usage)
        if tokens:
            self.usage.add(subject, "tokens", MINUTE, tokens)

    def request_over(self, request: FinishedRequest) -> None:
        """A listener of the gateway's finished requests: the key that served is no longer open, and its answer's
        tokens count."""
        if request.key_subject is not None:
            self.ended(request.key_subject, request.usage)

    def count_skip(self, provider: ProviderConfig, index: int, reason: str) -> None:
        self.skipped[(provider.name, key_label(index), reason)] += 1


def tokens_used(usage: Mapping[str, int] | None) -> int:
    """Input and output tokens of an answer's usage, as `tpm` counts them."""
    if not usage:
        return 0
    keys = ("input_tokens", "output_tokens")
    return sum(v for k in keys if isinstance(v := usage.get(k), int) and not isinstance(v, bool) and v > 0)
