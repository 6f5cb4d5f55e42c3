"""The order in which targets take turns: every row is measured in rounds, each round gives every target one turn,
and the order rotates from round to round so that no target always runs first (or right after another one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def turns(targets: Sequence[T], rounds: int) -> list[tuple[int, T]]:
    """(round, target) in the order they run: round r starts with target r (mod the count)."""
    count = len(targets)
    return [(r, targets[(r + i) % count]) for r in range(rounds) for i in range(count)]
