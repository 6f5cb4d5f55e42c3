"""What instances sharing state tell each other, and how one takes in what another said. Pure data and functions:
the connection to the server lives in `shared_link.py`, the addon that uses both in `shared_state.py`.

A provider is known to other instances by its name and a fingerprint of the settings that make it the same
provider (type, base_url, how it authenticates and a digest of its credential, never the credential): a reload
that changes any of these makes a provider nobody has heard of, and one that changes none keeps its health.

Health travels as a whole `HealthRecord` and is merged, never overwritten, so that the order in which news
arrives does not matter:
- a newer generation (a success after failures, a forgiven credential) wipes what came before it; news of an
  older generation is ignored;
- within one generation the later cooldown end, the longer failure streak and the higher cooldown count win;
- the latest error wins whatever its generation (it is shown, not acted on).
Times cross instances as wall-clock seconds (each instance keeps its own monotonic clock), so instances on several
machines need their clocks in step (NTP), as they would for any TTL.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from .config import ProviderConfig
from .health import ProviderHealth
from .ratelimit_headers import Budget, Reading

PROTOCOL = 1  # messages of another protocol version are ignored
TEXT_LIMIT = 1000  # characters of an error text taken from another instance
MIN_TTL_MS = 1_000
MAX_TTL_MS = 3 * 24 * 3600 * 1000  # nothing stays longer, whatever a record says


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(provider: ProviderConfig) -> str:
    """The same for the same provider on every instance; different when its type, base_url or credential is."""
    # A pool's keys all count: the same values in the same order are the same provider.
    credential = _digest(*(key.value for key in provider.keys)) if provider.keys else ""
    return _digest(provider.type, provider.base_url, provider.auth_type, credential)[:16]


def key_fingerprints(provider: ProviderConfig) -> dict[str, str]:
    """The keys of a pool as other instances know them: subject -> that key's identity (key_identity.py: a digest of
    the provider and that key alone, never one a guess is cheaply checked against). Its health is kept under the
    subject, as a provider's under its name; a single key's is the provider's."""
    if not provider.is_pool:
        return {}
    return {subject: subject.rsplit("#", 1)[1] for subject in provider.key_subjects}


def session_digest(key: str) -> str:
    """How a session is known to the shared server (never a session id or credential digest as such)."""
    return _digest("session", key)[:32]


@dataclass(frozen=True)
class Keys:
    """Every key and the channel, under one namespace prefix."""

    namespace: str

    def health(self, provider: str, fp: str) -> str:
        return f"{self.namespace}:health:{provider}:{fp}"

    def probe(self, provider: str, fp: str) -> str:
        return f"{self.namespace}:probe:{provider}:{fp}"

    def usage(self, subject: str, measure: str, window: str) -> str:
        # A hash of each instance's total (not the counter of increments that `usage:` named before: an instance
        # of either kind writing the other's key would fail).
        return f"{self.namespace}:used:{subject}:{measure}:{window}"

    def open(self, subject: str) -> str:
        return f"{self.namespace}:open:{subject}"

    def pin(self, session: str) -> str:
        return f"{self.namespace}:pin:{session}"

    @property
    def pin_pattern(self) -> str:
        return f"{self.namespace}:pin:*"

    @property
    def turn(self) -> str:
        return f"{self.namespace}:turn"

    @property
    def channel(self) -> str:
        return f"{self.namespace}:events"


# -- health ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthRecord:
    """What an instance knows of a provider's health, in wall-clock time."""

    generation: tuple[float, str] = (0.0, "")
    cooldown_until: float = 0.0  # wall clock; 0: not cooling down
    cooldown_reason: str | None = None
    cooldown_class: str | None = None
    consecutive_failures: int = 0
    cooldowns: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    latency_ms: float | None = None


def record_of(health: ProviderHealth, mono_now: float, wall_now: float) -> HealthRecord:
    remaining = health.cooldown_until - mono_now
    return HealthRecord(
        generation=health.generation,
        cooldown_until=wall_now + remaining if remaining > 0 else 0.0,
        cooldown_reason=health.cooldown_reason if remaining > 0 else None,
        cooldown_class=health.cooldown_class if remaining > 0 else None,
        consecutive_failures=health.consecutive_failures,
        cooldowns=health.cooldowns,
        last_error=health.last_error,
        last_error_at=health.last_error_at,
        latency_ms=health.latency_ms,
    )


def local_time(wall_time: float, mono_now: float, wall_now: float) -> float:
    """A wall-clock moment on this instance's monotonic clock (0.0 when it is past)."""
    remaining = wall_time - wall_now
    return mono_now + remaining if remaining > 0 else 0.0


def merge_health(health: ProviderHealth, record: HealthRecord, mono_now: float, wall_now: float) -> bool:
    """Take in what another instance knows (see the module's rules). True when anything changed."""
    changed = False
    # The last error is what it is, whatever came after it (a success does not clear it here either).
    if record.last_error_at is not None and (
        health.last_error_at is None or record.last_error_at > health.last_error_at
    ):
        health.last_error, health.last_error_at = record.last_error, record.last_error_at
        changed = True
    if health.latency_ms is None and record.latency_ms is not None:
        health.latency_ms = record.latency_ms
    if record.generation < health.generation:
        return changed
    if record.generation > health.generation:
        health.generation = record.generation
        health.consecutive_failures = health.cooldowns = 0
        health.cooldown_until = 0.0
        health.cooldown_reason = health.cooldown_class = None
        health.probing = False
        changed = True
    until = local_time(record.cooldown_until, mono_now, wall_now)
    if until > health.cooldown_until and until > mono_now:
        health.cooldown_until = until
        health.cooldown_reason = record.cooldown_reason
        health.cooldown_class = record.cooldown_class
        health.probing = False
        changed = True
    if record.consecutive_failures > health.consecutive_failures:
        health.consecutive_failures = record.consecutive_failures
        changed = True
    if record.cooldowns > health.cooldowns:
        health.cooldowns = record.cooldowns
        changed = True
    return changed


def is_blank(record: HealthRecord) -> bool:
    """Nothing worth telling: never failed, never reset."""
    return record == HealthRecord(latency_ms=record.latency_ms)


def health_ttl_ms(record: HealthRecord, wall_now: float, retention: float) -> int:
    """How long the shared copy of a record is kept: while its cooldown lasts, and `retention` seconds more (so
    that a cooldown that follows grows from it)."""
    remaining = max(0.0, record.cooldown_until - wall_now)
    return int(min(max((remaining + retention) * 1000, MIN_TTL_MS), MAX_TTL_MS))


# -- messages -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthNews:
    provider: str
    fingerprint: str
    record: HealthRecord


@dataclass(frozen=True)
class ProbeReleased:
    """The instance that held the probe claim gave it up without an outcome: another may claim it."""

    provider: str
    fingerprint: str


@dataclass(frozen=True)
class Pin:
    session: str  # session_digest()
    provider: str
    fingerprint: str


@dataclass(frozen=True)
class LatencyNews:
    provider: str
    fingerprint: str
    latency_ms: float  # the mean of `samples` measurements
    samples: int


@dataclass(frozen=True)
class HeadroomNews:
    """A key's latest rate-limit reading (`provider` is the key's subject, `fingerprint` its own)."""

    provider: str
    fingerprint: str
    reading: Reading


Message = HealthNews | ProbeReleased | Pin | LatencyNews | HeadroomNews

_BUDGET_FIELDS = ("limit", "remaining", "utilization", "reset_at")


def _reading_json(reading: Reading) -> dict[str, Any]:
    return {"at": reading.at, "budgets": [
        {"family": b.family, "name": b.name, "status": b.status, **{f: getattr(b, f) for f in _BUDGET_FIELDS}}
        for b in reading.budgets
    ]}


def _decode_reading(data: Any) -> Reading:
    if not isinstance(data, dict) or not isinstance(data.get("budgets"), list) or len(data["budgets"]) > 32:
        raise _Invalid
    budgets = []
    for item in data["budgets"]:
        if not isinstance(item, dict):
            raise _Invalid
        budgets.append(Budget(
            _name(item.get("family")), _name(item.get("name")), status=_text(item.get("status"), optional=True),
            **{f: _number(item.get(f), optional=True) for f in _BUDGET_FIELDS},
        ))
    return Reading(tuple(budgets), _number(data.get("at")) or 0.0)


def _record_json(record: HealthRecord) -> dict[str, Any]:
    return {
        "gen": list(record.generation),
        "until": record.cooldown_until,
        "reason": record.cooldown_reason,
        "class": record.cooldown_class,
        "consecutive": record.consecutive_failures,
        "cooldowns": record.cooldowns,
        "error": record.last_error,
        "error_at": record.last_error_at,
        "latency": record.latency_ms,
    }


def encode_record(record: HealthRecord) -> str:
    return json.dumps(_record_json(record), separators=(",", ":"))


def encode(origin: str, message: Message) -> bytes:
    body: dict[str, Any] = {"v": PROTOCOL, "from": origin}
    if isinstance(message, HealthNews):
        body.update(kind="health", provider=message.provider, fp=message.fingerprint,
                    record=_record_json(message.record))
    elif isinstance(message, ProbeReleased):
        body.update(kind="released", provider=message.provider, fp=message.fingerprint)
    elif isinstance(message, Pin):
        body.update(kind="pin", session=message.session, provider=message.provider, fp=message.fingerprint)
    elif isinstance(message, HeadroomNews):
        body.update(kind="headroom", provider=message.provider, fp=message.fingerprint,
                    reading=_reading_json(message.reading))
    else:
        body.update(kind="latency", provider=message.provider, fp=message.fingerprint, ms=message.latency_ms,
                    n=message.samples)
    return json.dumps(body, separators=(",", ":")).encode()


class _Invalid(Exception):
    pass


def _text(value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid
    return value[:TEXT_LIMIT]


def _name(value: Any) -> str:
    text = _text(value)
    assert text is not None
    return text


def _number(value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _Invalid
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid
    return value


def _decode_record(data: Any) -> HealthRecord:
    if not isinstance(data, dict):
        raise _Invalid
    generation = data.get("gen")
    if not isinstance(generation, list) or len(generation) != 2 or not isinstance(generation[1], str):
        raise _Invalid
    return HealthRecord(
        generation=(_number(generation[0]) or 0.0, generation[1][:TEXT_LIMIT]),
        cooldown_until=_number(data.get("until")) or 0.0,
        cooldown_reason=_text(data.get("reason"), optional=True),
        cooldown_class=_text(data.get("class"), optional=True),
        consecutive_failures=_count(data.get("consecutive")),
        cooldowns=_count(data.get("cooldowns")),
        last_error=_text(data.get("error"), optional=True),
        last_error_at=_number(data.get("error_at"), optional=True),
        latency_ms=_number(data.get("latency"), optional=True),
    )


def decode_record(data: bytes | str) -> HealthRecord | None:
    """A record as kept in the shared server, or None when it is not one."""
    try:
        return _decode_record(json.loads(data))
    except (ValueError, RecursionError, _Invalid):
        return None


def decode(data: bytes | str) -> tuple[str, Message] | None:
    """(origin, message), or None for anything that is not a message of this protocol (ignored, never fatal)."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("v") != PROTOCOL:
            return None
        origin, kind = _name(body.get("from")), body.get("kind")
        message: Message
        if kind == "health":
            message = HealthNews(_name(body.get("provider")), _name(body.get("fp")), _decode_record(body.get("record")))
        elif kind == "released":
            message = ProbeReleased(_name(body.get("provider")), _name(body.get("fp")))
        elif kind == "pin":
            message = Pin(_name(body.get("session")), _name(body.get("provider")), _name(body.get("fp")))
        elif kind == "headroom":
            reading = _decode_reading(body.get("reading"))
            message = HeadroomNews(_name(body.get("provider")), _name(body.get("fp")), reading)
        elif kind == "latency":
            message = LatencyNews(_name(body.get("provider")), _name(body.get("fp")), _number(body.get("ms")) or 0.0,
                                  max(1, _count(body.get("n"))))
        else:
            return None
    except (ValueError, RecursionError, _Invalid):
        return None
    return origin, message


def encode_pin(provider: str, fp: str) -> str:
    """The value of a pin key: which provider serves the session."""
    return json.dumps({"provider": provider, "fp": fp}, separators=(",", ":"))


def decode_pin(data: bytes | str) -> tuple[str, str] | None:
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            return None
        return _name(body.get("provider")), _name(body.get("fp"))
    except (ValueError, RecursionError, _Invalid):
        return None
