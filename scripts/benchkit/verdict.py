"""Verdicts with a noise margin: a target is met only if it holds in every round of the row, missed only if it
fails in every round; when the rounds disagree the honest answer is "within noise"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MET, MISSED, NOISE, UNMEASURED = "met", "MISSED", "within noise", "n/a"


@dataclass(frozen=True)
class Judged:
    value: float  # from all rounds' samples together
    low: float  # the lowest and highest value of single rounds: the noise margin
    high: float
    outcome: str

    def text(self, unit: str = "x") -> str:
        if self.outcome == UNMEASURED:
            return "not measured"
        return f"{self.value:.2f}{unit} (rounds {self.low:.2f}-{self.high:.2f}{unit})"


def at_most(value: float, per_round: Sequence[float], limit: float) -> Judged:
    """`value` <= `limit`, judged on the spread of `per_round`."""
    finite = [v for v in per_round if math.isfinite(v)]
    if not finite or not math.isfinite(value):
        return Judged(value, math.nan, math.nan, UNMEASURED)
    low, high = min(finite), max(finite)
    outcome = MET if high <= limit else MISSED if low > limit else NOISE
    return Judged(value, low, high, outcome)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def added_ratio(value: float, bare: float, direct: float) -> float:
    """The time a proxy adds over direct, as a multiple of what bare mitmdump adds."""
    return ratio(value - direct, bare - direct)
