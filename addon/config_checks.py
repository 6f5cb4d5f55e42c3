"""What a providers file gets wrong besides its values: unset `${VAR}` references and unknown keys (pure, no I/O).

Both are read from the file's data as written, before validation, so that each is reported even when validation
fails too (a misspelt `auth_valu:` is named next to the missing `auth_value` it causes). A reference inside a
disabled provider only warns: the example file, copied, works with the variables of the enabled providers alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_PROVIDER_AT = re.compile(r"providers\[(\d+)\]")
# How pydantic reads `enabled: <value>` as false.
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

# A reference to an unset variable: (where in the file, the variable's name).
Unset = tuple[str, str]


def _is_disabled(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    value = entry.get("enabled", True)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in _FALSE


def _provider_entry(where: str, data: Any) -> tuple[int, Any] | None:
    match = _PROVIDER_AT.match(where)
    providers = data.get("providers") if isinstance(data, dict) else None
    if match is None or not isinstance(providers, list) or int(match.group(1)) >= len(providers):
        return None
    position = int(match.group(1))
    return position, providers[position]


def _entry_name(entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else "?"


def sort_unset(unset: Iterable[Unset], data: Any) -> tuple[str | None, list[str]]:
    """(the error naming every unset variable the enabled configuration needs, or None; a warning per variable
    referenced only inside disabled providers)."""
    needed: dict[str, list[str]] = {}
    warned: dict[tuple[int, str], list[str]] = {}
    for where, name in unset:
        found = _provider_entry(where, data)
        if found is not None and _is_disabled(found[1]):
            warned.setdefault((found[0], name), []).append(where)
        else:
            needed.setdefault(name, []).append(where)
    warnings = [
        f"providers[{position}] ({_entry_name(data['providers'][position])}, disabled): environment variable "
        f"{name} is not set ({', '.join(places)} left as written; it must be set before the provider is enabled)"
        for (position, name), places in warned.items()
    ]
    if not needed:
        return None, warnings
    where = "; ".join(f"{name} at {', '.join(places)}" for name, places in needed.items())
    if len(needed) == 1:
        (name,) = needed
        return f"environment variable {name} is not set (referenced at {', '.join(needed[name])})", warnings
    return f"environment variables {', '.join(needed)} are not set (referenced: {where})", warnings


def unknown_keys(data: Any, top: Iterable[str], settings: Iterable[str], provider: Iterable[str]) -> list[str]:
    """A warning per key the schema does not know (top-level, in `settings`, in each provider)."""
    if not isinstance(data, dict):
        return []
    top_known, settings_known, provider_known = set(top), set(settings), set(provider)
    out = [f"unknown top-level key {key!r} ignored" for key in data if key not in top_known]
    if isinstance(data.get("settings"), dict):
        out += [f"settings: unknown key {key!r} ignored" + _belongs_at_top(key, top_known)
                for key in data["settings"] if key not in settings_known]
    if isinstance(data.get("providers"), list):
        for position, entry in enumerate(data["providers"]):
            if isinstance(entry, dict):
                out += [f"providers[{position}] ({_entry_name(entry)}): unknown key {key!r} ignored"
                        for key in entry if key not in provider_known]
    return out


def _belongs_at_top(key: Any, top: set[str]) -> str:
    """A top-level section written under `settings` (indented one level too deep) is said to be one."""
    return f" ({key!r} belongs at the top level of the file, not under settings)" if key in top else ""
