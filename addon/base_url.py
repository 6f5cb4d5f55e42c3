"""A provider's `base_url` written with the part of the path the balancer adds itself (pure, no I/O).

An Anthropic-type provider gets `<base_url>/v1/messages` (and `/v1/...` for the other endpoints), so a base_url
copied from a guide that ends in `/v1` or `/v1/messages` would become `/v1/v1/messages`. An OpenAI-type provider
gets `<base_url>/chat/completions`; its base_url is written as the provider documents it, usually with `/v1`, but
one copied with `/chat/completions` would double that part. Either is cut off at load, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import ProviderConfig

# Per provider type, the path endings the balancer adds itself, the longest first, and what it appends.
ADDED_BY_THE_BALANCER: dict[str, tuple[tuple[str, ...], str]] = {
    "anthropic": (("/v1/messages", "/v1"), "/v1/messages"),
    "openai": (("/chat/completions",), "/chat/completions"),
}


def normalised(kind: str, base_url: str) -> tuple[str, str | None]:
    """(the base_url to use, the ending that was cut off or None). `base_url` has no trailing slash (config.py)."""
    endings, _ = ADDED_BY_THE_BALANCER.get(kind, ((), ""))
    path = urlsplit(base_url).path
    for ending in endings:
        if path.lower().endswith(ending):
            return base_url[: -len(ending)], ending
    return base_url, None


def normalise_base_urls(providers: Iterable[ProviderConfig]) -> list[str]:
    """Cut what the balancer adds itself off each provider's base_url; one warning per provider changed. The
    warning names the path only (a URL may hold a password)."""
    warnings = []
    for position, provider in enumerate(providers):
        fixed, ending = normalised(provider.type, provider.base_url)
        if ending is None:
            continue
        added = ADDED_BY_THE_BALANCER[provider.type][1]
        provider.base_url = fixed
        warnings.append(
            f"providers[{position}] ({provider.name}): base_url ends in {ending}, which the balancer adds itself "
            f"(requests go to <base_url>{added}): {ending} is left out so that it is not doubled; remove it from "
            "the file"
        )
    return warnings
