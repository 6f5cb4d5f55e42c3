"""Pure figures: percentiles, summaries of timings, and the ratios the report prints."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values_ms: Sequence[float], errors: int = 0) -> dict[str, float]:
    return {"p50": percentile(values_ms, 50), "p99": percentile(values_ms, 99), "n": len(values_ms),
            "errors": errors}


def gaps(event_times: Sequence[float]) -> list[float]:
    """Delays between consecutive events of one stream."""
    return [b - a for a, b in itertools.pairwise(event_times)]


def times_direct(value: float, direct: float) -> float:
    """How many times the direct figure this is."""
    return value / direct if direct > 0 else math.nan


def overhead_ratio(value: float, bare: float, direct: float) -> float:
    """The time a proxy adds over direct, as a multiple of what bare mitmdump adds."""
    added_bare = bare - direct
    return (value - direct) / added_bare if added_bare > 0 else math.nan


def growth_mb(series: Sequence[tuple[int, float]]) -> float:
    """RSS growth between the first and last sample of (requests_done, rss_mb) pairs."""
    return series[-1][1] - series[0][1] if len(series) > 1 else math.nan
