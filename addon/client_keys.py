"""Client keys: who may use the balancer, under which name, within which quotas (`settings.client_keys`).

An entry is a plain key (`- ${BOB_KEY}`), named `client-<position>`, or an object with a name and quotas
(`- {name: alice, key: ${ALICE_KEY}, requests_per_minute: 60, tokens_per_day: 5000000, budget_per_month: 200}`).
The name is what logs, metrics and `GET /usage` show; the key is never shown anywhere, nor said in an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Names go into log lines and metric labels as they are: letters, digits and a few separators.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class ClientKey(BaseModel):
    # A misspelt quota must not pass silently as no quota at all.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    name: str = ""  # "": named by position (plain entries)
    key: str = Field(repr=False)  # never in a repr (logs, tracebacks)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    budget_per_month: float | None = Field(default=None, gt=0)  # USD, estimated from usage and settings.prices

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value and not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must be 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("key")
    @classmethod
    def _present(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty (an unset ${VAR:-} perhaps); got none")
        return value

    @property
    def has_quota(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_day, self.budget_per_month))

    @property
    def meters_spend(self) -> bool:
        """A quota on what answers cost (tokens or money), not only on the number of requests."""
        return self.tokens_per_day is not None or self.budget_per_month is not None


def as_entry(item: Any) -> Any:
    """A plain key becomes an entry without a name (numbers are keys too: YAML reads `123456` as one)."""
    if isinstance(item, str) or (isinstance(item, (int, float)) and not isinstance(item, bool)):
        return {"key": str(item)}
    return item


def name_by_position(clients: list[ClientKey]) -> list[ClientKey]:
    return [c if c.name else c.model_copy(update={"name": f"client-{i + 1}"}) for i, c in enumerate(clients)]


def clash(clients: Sequence[ClientKey]) -> str | None:
    """What makes the list unusable: a name or a key used twice. The message names entries, never a key."""
    names: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, client in enumerate(clients):
        if client.name in names:
            return (
                f"client name {client.name!r} is used by client_keys[{names[client.name]}] and client_keys[{i}]; "
                "names must be unique (a plain key is named client-<its position>)"
            )
        if client.key in keys:
            first = clients[keys[client.key]].name
            return (
                f"client_keys[{i}] ({client.name}) has the same key as client_keys[{keys[client.key]}] ({first}); "
                "each client needs a key of its own"
            )
        names[client.name] = i
        keys[client.key] = i
    return None
