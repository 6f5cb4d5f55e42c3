"""What a request cost, estimated from the usage its answer reported and a price table (USD per million tokens).

`settings.prices` maps model globs to prices and is looked at first, in file order; the built-in table below
after it. A request is priced by the model its provider was asked for when a price matches that name (an
OpenRouter or DeepSeek model priced in settings.prices), else by the model the client asked for (a Claude model:
the built-in table knows it). Claude models are recognised in their common spellings (`claude_name`): Bedrock
and Vertex ids, `anthropic/` prefixes, dotted versions, bare family names. A model with no price at all is
charged at the highest price of the tables (`ceiling_price`) for a client with a budget (a made-up model name
must not spend for free), and counts as free for the others; the caller logs it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

MILLION = 1_000_000

# The usage fields of an Anthropic answer, and the kinds of tokens they count.
USAGE_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_creation_input_tokens": "cache_write",
    "cache_read_input_tokens": "cache_read",
}


class Price(BaseModel):
    """USD per million tokens. Cache writes and reads cost what input does unless given."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _cache_defaults(self) -> Price:
        if self.cache_write is None:
            self.cache_write = self.input
        if self.cache_read is None:
            self.cache_read = self.input
        return self

    def per_kind(self) -> dict[str, float]:
        return {"input": self.input, "output": self.output, "cache_write": self.cache_write or 0.0,
                "cache_read": self.cache_read or 0.0}


def _p(input: float, output: float, cache_write: float, cache_read: float) -> Price:
    return Price(input=input, output=output, cache_write=cache_write, cache_read=cache_read)


# Anthropic's list prices, from the model pages of platform.claude.com as of December 2026. Cache writes at the
# 5-minute rate (1-hour writes cost more: they are underestimated). Claude Haiku 5.5 at its rate for prompts up to
# 100,000 tokens (longer prompts cost five times as much). More specific globs come first: the first match wins.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-fable-5-1*": _p(10, 50, 12.5, 0.25),
    "claude-mythos-5-1*": _p(10, 50, 12.5, 0.25),
    "claude-fable-*": _p(10, 50, 12.5, 1),
    "claude-mythos-*": _p(10, 50, 12.5, 1),
    "claude-opus-5-5*": _p(4, 20, 5, 0.2),
    "claude-opus-5*": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-[5-9]*": _p(5, 25, 6.25, 0.5),
    "claude-opus-4*": _p(15, 75, 18.75, 1.5),
    "claude-3-opus*": _p(15, 75, 18.75, 1.5),
    "claude-sonnet-5*": _p(2, 10, 2.5, 0.2),
    "claude-sonnet-4*": _p(3, 15, 3.75, 0.3),
    "claude-3-7-sonnet*": _p(3, 15, 3.75, 0.3),
    "claude-3-5-sonnet*": _p(3, 15, 3.75, 0.3),
    "claude-haiku-5-5*": _p(0.1, 0.5, 0.125, 0.01),
    "claude-haiku-4*": _p(1, 5, 1.25, 0.1),
    "claude-3-5-haiku*": _p(0.8, 4, 1, 0.08),
    "claude-3-haiku*": _p(0.25, 1.25, 0.3, 0.03),
    "claude-3-sonnet*": _p(3, 15, 3.75, 0.3),
    "claude-2*": _p(8, 24, 8, 8),
    "claude-instant*": _p(0.8, 2.4, 0.8, 0.8),
    # A Claude model newer than this table: its family's newest price.
    "claude-*opus*": _p(4, 20, 5, 0.2),
    "claude-*sonnet*": _p(2, 10, 2.5, 0.2),
    "claude-*haiku*": _p(0.1, 0.5, 0.125, 0.01),
}


# Bedrock: an optional region (`us.`, `eu.`, `global.`, ...) and `anthropic.`; a version suffix `-v1:0`.
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]{2,6}(?:-[a-z]+)?\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_FAMILIES = ("opus", "sonnet", "haiku", "fable", "mythos", "instant")


def claude_name(model: str) -> str:
    """A Claude model's name as Anthropic's API spells it, whatever the spelling: `anthropic/claude-opus-4.5`,
    `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, `claude-sonnet-4-5@20250929`, `claude-3.5-sonnet:beta`,
    `opus` or `sonnet[1m]` (`claude-opus`: its family's price). Other names come back lower-cased, unchanged."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    bedrock = _BEDROCK_PREFIX.sub("", name)
    if bedrock != name:
        name = _BEDROCK_VERSION.sub("", bedrock)
    name = name.split("@", 1)[0].split(":", 1)[0].split("[", 1)[0]  # Vertex dates, OpenRouter variants, `[1m]`
    name = re.sub(r"(?<=\d)\.(?=\d)", "-", name)  # 4.5 -> 4-5
    if name.startswith(_FAMILIES):
        name = "claude-" + name
    return name


def price_of(model: str | None, table: Mapping[str, Price]) -> Price | None:
    """The first price whose glob matches the model (case-insensitively) as written or as a Claude name: `table`,
    then the built-in one (which knows Claude names only)."""
    if not model:
        return None
    written, claude = model.lower(), claude_name(model)
    for prices, names in ((table, (written, claude)), (DEFAULT_PRICES, (claude,))):
        for name in names:
            for glob, price in prices.items():
                if fnmatch.fnmatchcase(name, glob.lower()):
                    return price
    return None


def ceiling_price(table: Mapping[str, Price]) -> Price:
    """The highest price of each kind of token in `table` and the built-in one: what a model without a price costs
    a client with a budget."""
    prices = [*table.values(), *DEFAULT_PRICES.values()]
    most = {kind: max(p.per_kind()[kind] for p in prices) for kind in ("input", "output", "cache_write", "cache_read")}
    return Price(**most)


@dataclass(frozen=True)
class Charge:
    """What one answer used and cost."""

    tokens: dict[str, int]  # by kind: input, output, cache_write, cache_read
    spend: float  # USD
    priced_as: str | None  # the model whose price was used; None when none was found

    @property
    def counted_tokens(self) -> int:
        """The tokens a client's tokens_per_day counts: all but cache reads (as Anthropic's own input-token rate
        limits do; the budget prices cache reads)."""
        return sum(n for kind, n in self.tokens.items() if kind != "cache_read")


def charge(usage: Mapping[str, int], served_model: str | None, requested_model: str | None,
           table: Mapping[str, Price], unpriced: Price | None = None) -> Charge:
    """What the answer cost; at `unpriced` (None: nothing) when neither model has a price (`priced_as` None)."""
    tokens = {kind: n for field, kind in USAGE_KINDS.items()
              if isinstance(n := usage.get(field), int) and not isinstance(n, bool) and n > 0}
    priced_as, price = None, None
    for model in (served_model, requested_model):
        price = price_of(model, table)
        if price is not None:
            priced_as = model
            break
    price = price or unpriced
    if price is None:
        return Charge(tokens, 0.0, None)
    rates = price.per_kind()
    return Charge(tokens, sum(n * rates[kind] for kind, n in tokens.items()) / MILLION, priced_as)
