"""The terminal table and the verdict against the targets, from a run's results (run.py)."""

from __future__ import annotations

from typing import Any

from .stats import overhead_ratio, times_direct

TARGETS_ORDER = ("direct", "mitmdump", "balancer", "litellm")
LATENCY_ROWS = (
    ("a.latency_c1", "(a) latency, concurrency 1"),
    ("a.latency_c32", "(a) latency, concurrency 32"),
    ("b.ttfe", "(b) time to first event"),
    ("b.event_gap", "(b) delay between events"),
    ("a.latency_c1_openai", "(a) latency via OpenAI-type"),
    ("b.ttfe_openai", "(b) first event via OpenAI-type"),
)
# The targets the issue set for this machine.
TTFE_OVERHEAD_MAX = 1.5  # times bare mitmdump's added time to first event
FAILOVER_COST_MAX_MS = 5.0
OPEN_STREAMS_RSS_MAX_MB = 300.0
GROWTH_MAX_MB = 5.0  # "no growth": less than this over the whole series


def _cell(value: float, direct: float | None, bare: float | None, name: str) -> str:
    text = f"{value:8.2f}"
    if name == "direct" or direct is None:
        return text + " " * 15
    if bare is not None and abs(bare - direct) < 0.1:  # bare adds next to nothing: ratios would be noise
        return f"{text} {value - direct:+7.2f} vs d    "
    ratio = f"{times_direct(value, direct):.1f}x d"
    if name == "mitmdump" or bare is None:
        return f"{text} {ratio:>14}"
    return f"{text} {ratio:>7} {overhead_ratio(value, bare, direct):4.1f}x m"


def table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    present = [t for t in TARGETS_ORDER if any(t in rows.get(k, {}) for k, _ in LATENCY_ROWS)]
    width = 32
    lines = [f"{'milliseconds':<{width}}     " + "".join(f"{t:>24}" for t in present),
             "  x d = times direct; x m = added time (vs direct) as a multiple of bare mitmdump's added time"]
    for key, label in LATENCY_ROWS:
        row = rows.get(key)
        if not row:
            continue
        for p in ("p50", "p99"):
            direct = row.get("direct", {}).get(p)
            bare = row.get("mitmdump", {}).get(p)
            cells = "".join(f"{_cell(row[t][p], direct, bare, t):>24}" if t in row else " " * 24 for t in present)
            lines.append(f"{label if p == 'p50' else '':<{width}} {p}  {cells}")
    for key, label in (("d.throughput_c32", "(d) requests/s, c32"), ("d.throughput_c128", "(d) requests/s, c128")):
        row = rows.get(key)
        if not row:
            continue
        cells = ""
        for t in present:
            if t not in row:
                cells += " " * 24
                continue
            rate = row[t]["rps"]
            note = "" if t == "direct" else f"{rate / row['direct']['rps']:.2f}x d"
            if t not in ("direct", "mitmdump") and "mitmdump" in row:
                note = f"{rate / row['mitmdump']['rps']:.2f}x m"
            cells += f"{rate:>10.0f} {note:>13}"
        errors = sum(row[t]["errors"] for t in row)
        lines.append(f"{label:<{width}}      {cells}   errors: {errors}")
    lines.append("")
    lines += failover_lines(rows) + memory_lines(rows)
    if "f.translation" in rows:
        lines.append(f"(f) OpenAI->Anthropic stream translation alone: "
                     f"{rows['f.translation']['events_per_cpu_s']:,.0f} events per CPU second")
    return "\n".join(lines)


def failover_lines(rows: dict[str, Any]) -> list[str]:
    lines = []
    for label, text in (("refused", "refuses connections"), ("overloaded", "answers 529"),
                        ("hang", "hangs past request_timeout (1 s)")):
        row = rows.get(f"c.failover_{label}")
        if row:
            cost = row["cost_ms"]
            lines.append(f"(c) failover, first provider {text:<33} first event p50 {row[label]['p50']:8.2f} ms, "
                         f"cost {cost['p50']:+8.2f} ms (p99 {cost['p99']:+.2f})")
    return lines


def memory_lines(rows: dict[str, Any]) -> list[str]:
    lines = []
    streams = rows.get("e.rss_open_streams")
    if streams:
        for name in ("balancer", "mitmdump"):
            if name in streams:
                s = streams[name]
                lines.append(f"(e) RSS of {name:<8} {s['idle_mb']:6.0f} MB idle, {s['rss_mb']:6.0f} MB with "
                             f"{s['open_streams']} streams open")
    series = rows.get("e.rss_over_requests")
    if series:
        points = ", ".join(f"{mb:.0f}" for _, mb in series["series"])
        lines.append(f"(e) RSS of balancer over {series['series'][-1][0]} requests (MB): {points} "
                     f"(growth {series['growth_mb']:+.1f} MB, errors {series['errors']})")
    return lines


def verdict(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of the issue; met is None when it was not measured."""
    rows = results["rows"]
    out: list[tuple[str, str, bool | None]] = []
    ttfe = rows.get("b.ttfe", {})
    if {"direct", "mitmdump", "balancer"} <= ttfe.keys():
        ratio = overhead_ratio(ttfe["balancer"]["p50"], ttfe["mitmdump"]["p50"], ttfe["direct"]["p50"])
        out.append((f"time-to-first-event overhead <= {TTFE_OVERHEAD_MAX}x bare mitmdump's (p50)",
                    f"{ratio:.2f}x", ratio <= TTFE_OVERHEAD_MAX))
    for label in ("refused", "overloaded"):
        row = rows.get(f"c.failover_{label}")
        if row:
            cost = row["cost_ms"]["p50"]
            out.append((f"failover cost, {label} first provider < {FAILOVER_COST_MAX_MS:.0f} ms (p50)",
                        f"{cost:+.2f} ms", cost < FAILOVER_COST_MAX_MS))
    streams = rows.get("e.rss_open_streams", {}).get("balancer")
    if streams:
        out.append((f"RSS with {streams['open_streams']} open streams < {OPEN_STREAMS_RSS_MAX_MB:.0f} MB",
                    f"{streams['rss_mb']:.0f} MB", streams["rss_mb"] < OPEN_STREAMS_RSS_MAX_MB))
    series = rows.get("e.rss_over_requests")
    if series:
        done = series["series"][-1][0]
        out.append((f"no RSS growth over {done} requests (< {GROWTH_MAX_MB:.0f} MB)",
                    f"{series['growth_mb']:+.1f} MB", series["growth_mb"] < GROWTH_MAX_MB))
    peer_rows = [k for k in ("a.latency_c1", "a.latency_c32", "b.ttfe") if "litellm" in rows.get(k, {})]
    for key in peer_rows:
        row = rows[key]
        ours = row["balancer"]["p50"] - row["direct"]["p50"]
        theirs = row["litellm"]["p50"] - row["direct"]["p50"]
        out.append((f"lower overhead than LiteLLM: {key} (p50 added ms)", f"{ours:.2f} vs {theirs:.2f}",
                    ours < theirs))
    for key in ("d.throughput_c32", "d.throughput_c128"):
        row = rows.get(key, {})
        if "litellm" in row:
            out.append((f"more throughput than LiteLLM: {key} (req/s)",
                        f"{row['balancer']['rps']:.0f} vs {row['litellm']['rps']:.0f}",
                        row["balancer"]["rps"] > row["litellm"]["rps"]))
    return out


def verdict_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "targets on this machine:"]
    for target, measured, met in verdict(results):
        mark = "n/a " if met is None else "met " if met else "MISS"
        lines.append(f"  [{mark}] {target}: {measured}")
    return lines


def header(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    peers = ", ".join(f"{k} {val}" for k, val in v.items())
    return (f"{results['mode']} run, {results['when']}: {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), "
            f"Python {m['python']}, {peers}")


def render(results: dict[str, Any]) -> str:
    return "\n".join([header(results), "", table(results), *verdict_lines(results)])
