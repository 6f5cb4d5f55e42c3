"""The table of `scripts/bench --floor` (floor.py): per row and target, p50 and CPU per request, and for every proxy
but bare mitmdump the added time and the CPU as ratios to bare mitmdump's, with the rounds' min-max; then issue 17's
targets as the balancer and each floor fare against them."""

from __future__ import annotations

import math
from typing import Any

from .floor import FLOORS, ROWS, TARGETS
from .report import CPU_SMALL_MAX, LATENCY_1MB_MAX, TTFT_MAX, header, per_round
from .verdict import Judged, added_ratio, at_most, ratio

RATIOED = ("balancer", *FLOORS)  # the proxies compared with bare mitmdump


def added_vs_bare(row: dict[str, Any], name: str, limit: float = math.inf) -> Judged:
    """`name`'s added time over direct as a multiple of bare mitmdump's, pooled and per round."""
    pooled = added_ratio(row[name]["p50"], row["mitmdump"]["p50"], row["direct"]["p50"])
    return at_most(pooled, per_round(row, "rounds", added_ratio, name, "mitmdump", "direct"), limit)


def cpu_vs_bare(row: dict[str, Any], name: str, limit: float = math.inf) -> Judged:
    """`name`'s CPU per request as a multiple of bare mitmdump's, pooled and per round."""
    return at_most(ratio(row[name]["cpu_ms"], row["mitmdump"]["cpu_ms"]),
                   per_round(row, "cpu_rounds", ratio, name, "mitmdump"), limit)


def _ratio(judged: Judged) -> str:
    if not math.isfinite(judged.value):
        return "-"
    return f"{judged.value:.2f}x ({judged.low:.2f}-{judged.high:.2f})"


def table(rows: dict[str, Any]) -> list[str]:
    lines = [f"{'':<22}{'p50 ms':>9}  {'added / mitmdump':>22}{'CPU ms/req':>12}  {'CPU / mitmdump':>22}",
             "  added: the time a proxy adds over direct; ratios are to bare mitmdump's, (min-max of the rounds)"]
    for key, label, _, _ in ROWS:
        row = rows.get(key)
        if not row:
            continue
        lines.append(label)
        for name in TARGETS:
            figures = row[name]
            time_cell = cpu_cell = ""
            if name in RATIOED:
                time_cell, cpu_cell = _ratio(added_vs_bare(row, name)), _ratio(cpu_vs_bare(row, name))
            cpu = f"{figures['cpu_ms']:>12.2f}" if name != "direct" else " " * 12
            errors = f"  errors {figures['errors']}" if figures["errors"] else ""
            lines.append(f"  {name:<20}{figures['p50']:>9.2f}  {time_cell:>22}{cpu}  {cpu_cell:>22}{errors}".rstrip())
    return lines


def targets(rows: dict[str, Any]) -> list[str]:
    """Issue 17's targets (set for the balancer), judged for the balancer and each floor."""
    checks = (("latency.1 MB", f"added latency at 1 MB <= {LATENCY_1MB_MAX}x", added_vs_bare, LATENCY_1MB_MAX),
              ("latency.2 KB", f"CPU per 2 KB request <= {CPU_SMALL_MAX}x", cpu_vs_bare, CPU_SMALL_MAX),
              ("ttft.2 KB", f"added time to first text at 2 KB <= {TTFT_MAX}x", added_vs_bare, TTFT_MAX))
    lines = ["", "issue 17's targets (met: in every round; MISSED: in none; otherwise within noise):"]
    for key, text, judge, limit in checks:
        row = rows.get(key)
        if not row:
            continue
        cells = []
        for name in RATIOED:
            judged = judge(row, name, limit)
            cells.append(f"{name} {judged.value:.2f}x {judged.outcome}")
        lines.append(f"  {text:<44}" + ", ".join(cells))
    return lines


def render(results: dict[str, Any]) -> str:
    return "\n".join([header(results), "", *table(results["rows"]), *targets(results["rows"])])
