"""The terminal table, the Markdown table and the verdicts against the targets, from a run's results (run.py)."""

from __future__ import annotations

import math
from typing import Any

from .bodies import SIZES
from .verdict import Judged, added_ratio, at_most, ratio

TARGETS_ORDER = ("direct", "mitmdump", "balancer", "litellm", "ccr")
PEERS = ("litellm", "ccr")


def latency_rows() -> list[tuple[str, str]]:
    rows = []
    for prefix, what in (("latency", "latency"), ("ttft", "first text"), ("latency_openai", "latency, OpenAI-type"),
                         ("ttft_openai", "first text, OpenAI-type")):
        rows += [(f"{prefix}.{size}", f"{what}, {size}") for size in SIZES]
    rows.append(("latency_c32", "latency, 2 KB, concurrency 32"))
    return rows


# The targets of issue 17 and the ones before it, on this machine.
LATENCY_1MB_MAX = 1.5  # balancer's added latency at 1 MB, times bare mitmdump's
CPU_100KB_MAX = 1.5  # balancer's CPU per 100 KB request, times bare mitmdump's
CPU_SMALL_MAX = 1.4  # the same for a 2 KB request
TTFT_MAX = 1.5  # balancer's added time to first text (2 KB), times bare mitmdump's
STALL_MAX = 1.5  # what big requests add to other streams' worst gap, times what they add through bare mitmdump
FAILOVER_COST_MAX_MS = 5.0
OPEN_STREAMS_RSS_MAX_MB = 300.0
GROWTH_MAX_MB = 5.0


def per_round(row: dict[str, Any], field: str, fn: Any, *names: str) -> list[float]:
    """fn applied to each round's figures of the named targets (nan where a round has none)."""
    series = [row[n][field] for n in names]
    return [fn(*values) for values in zip(*series, strict=True)]


def best_peer(row: dict[str, Any], field: str = "p50") -> str | None:
    """The peer with the lowest figure on this row (None without peers)."""
    present = [p for p in PEERS if p in row and math.isfinite(row[p][field])]
    return min(present, key=lambda p: row[p][field]) if present else None


def added(row: dict[str, Any], name: str, field: str = "p50") -> float:
    """Time a target adds over direct (its own figure where the row has no direct)."""
    base = row["direct"][field] if "direct" in row else 0.0
    return row[name][field] - base


def vs_bare(row: dict[str, Any]) -> Judged:
    """The balancer's added time as a multiple of bare mitmdump's, pooled and per round."""
    if not {"direct", "mitmdump", "balancer"} <= row.keys():
        return at_most(math.nan, [], math.inf)
    pooled = added_ratio(row["balancer"]["p50"], row["mitmdump"]["p50"], row["direct"]["p50"])
    rounds = per_round(row, "rounds", added_ratio, "balancer", "mitmdump", "direct")
    return Judged(pooled, min(rounds, default=math.nan), max(rounds, default=math.nan), "")


def vs_peer(row: dict[str, Any], limit: float = 1.0) -> tuple[str | None, Judged]:
    """The balancer's added time as a multiple of the best peer's; met when below `limit` in every round."""
    peer = best_peer(row)
    if peer is None or "balancer" not in row:
        return None, at_most(math.nan, [], limit)
    direct = row["direct"]["rounds"] if "direct" in row else [0.0] * len(row[peer]["rounds"])
    rounds = [ratio(b - d, p - d) for b, p, d in zip(row["balancer"]["rounds"], row[peer]["rounds"], direct,
                                                       strict=True)]
    return peer, at_most(ratio(added(row, "balancer"), added(row, peer)), rounds, limit)


def cpu_vs(row: dict[str, Any], other: str, limit: float) -> Judged:
    """The balancer's CPU per request as a multiple of `other`'s, pooled and per round, against `limit`."""
    if not {"balancer", other} <= row.keys():
        return at_most(math.nan, [], limit)
    rounds = per_round(row, "cpu_rounds", ratio, "balancer", other)
    return at_most(ratio(row["balancer"]["cpu_ms"], row[other]["cpu_ms"]), rounds, limit)


def _num(value: float, width: int = 9, digits: int = 2) -> str:
    return f"{'-':>{width}}" if not math.isfinite(value) else f"{value:>{width}.{digits}f}"


def _times(value: float) -> str:
    return f"{value:>9.2f}x" if math.isfinite(value) else " " * 10


def table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    present = [t for t in TARGETS_ORDER if any(t in rows.get(k, {}) for k, _ in latency_rows())]
    width = 34
    head = f"{'':<{width}}{'':<11}" + "".join(f"{t:>10}" for t in present) + f"{'bal/mitm':>10}  bal/best peer"
    lines = [head, "  bal/mitm: the balancer's added time (over direct) or CPU as a multiple of bare mitmdump's;",
             "  bal/best peer: the same against the fastest peer of the row (below 1: the balancer is faster)"]
    for key, label in latency_rows():
        row = rows.get(key)
        if not row:
            continue
        peer, judged = vs_peer(row)
        bare = vs_bare(row)
        for field, name in (("p50", "p50 ms"), ("p99", "p99 ms"), ("cpu_ms", "CPU ms/req")):
            cells = "".join(_num(row[t][field], 10) if t in row else f"{'':>10}" for t in present)
            extra = ""
            if field == "p50":
                extra = f"{_times(bare.value)}  " + (f"{judged.value:.2f}x ({peer})" if peer else "")
            elif field == "cpu_ms":
                cpu_peer = best_peer(row, "cpu_ms")
                extra = f"{_times(cpu_vs(row, 'mitmdump', math.inf).value)}  "
                extra += f"{cpu_vs(row, cpu_peer, math.inf).value:.2f}x ({cpu_peer})" if cpu_peer else ""
            lines.append(f"{label if field == 'p50' else '':<{width}}{name:<11}{cells}{extra}")
        errors = sum(row[t]["errors"] for t in row)
        if errors:
            lines.append(f"{'':<{width}}errors: " + ", ".join(f"{t} {row[t]['errors']}" for t in row
                                                            if row[t]["errors"]))
    gap = rows.get("event_gap")
    if gap:
        for field in ("p50", "p99"):
            cells = "".join(_num(gap[t][field], 10) if t in gap else f"{'':>10}" for t in present)
            lines.append(f"{'delay between events (1 ms apart)' if field == 'p50' else '':<{width}}"
                         f"{field + ' ms':<11}{cells}")
    tput = rows.get("throughput_c32")
    if tput:
        cells = "".join(_num(tput[t]["rps"], 10, 0) if t in tput else f"{'':>10}" for t in present)
        errors = sum(tput[t]["errors"] for t in tput)
        lines.append(f"{'requests/s, concurrency 32':<{width}}{'':<11}{cells}   errors: {errors}")
    lines.append("")
    lines += failover_lines(rows) + stall_lines(rows) + stream_lines(rows) + memory_lines(rows)
    if "translation" in rows:
        lines.append(f"OpenAI->Anthropic stream translation alone: "
                     f"{rows['translation']['events_per_cpu_s']:,.0f} events per CPU second")
    return "\n".join(lines)


def failover_lines(rows: dict[str, Any]) -> list[str]:
    lines = []
    for label, text in (("refused", "refuses connections"), ("overloaded", "answers 529"),
                        ("hang", "hangs past request_timeout (1 s)")):
        row = rows.get(f"failover_{label}")
        if row:
            cost = row["cost_ms"]
            lines.append(f"failover, first provider {text:<33} first text p50 {row[label]['p50']:8.2f} ms, "
                         f"cost {cost['p50']:+8.2f} ms (p99 {cost['p99']:+.2f})")
    return lines


def stall_lines(rows: dict[str, Any]) -> list[str]:
    stall = rows.get("stall")
    if not stall:
        return []
    return [f"big requests beside open streams, {name:<9} worst gap p50 {s['idle_ms']:7.1f} ms alone, "
            f"{s['loaded_ms']:7.1f} ms with them: {s['added_ms']:+7.1f} ms (errors {s['errors']})"
            for name in TARGETS_ORDER if name in stall for s in [stall[name]]]


def stream_lines(rows: dict[str, Any]) -> list[str]:
    streams = rows.get("open_streams")
    if not streams:
        return []
    lines = []
    for name in TARGETS_ORDER:
        if name in streams:
            s = streams[name]
            lines.append(f"{s['streams']} streams at once through {name:<9} {s['opened']:>5} opened in "
                         f"{s['seconds']:6.2f} s, {s['fds_per_stream']:4.1f} descriptors per stream, RSS "
                         f"{s['idle_mb']:4.0f} MB idle, {s['rss_mb']:5.0f} MB with them open")
    return lines


def memory_lines(rows: dict[str, Any]) -> list[str]:
    series = rows.get("rss_over_requests")
    if not series:
        return []
    points = ", ".join(f"{mb:.0f}" for _, mb in series["series"])
    return [f"RSS of the balancer over {series['series'][-1][0]} requests (MB): {points} "
            f"(growth {series['growth_mb']:+.1f} MB, errors {series['errors']})"]


def verdict(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, outcome) for each target; outcome is met, MISSED, within noise or n/a."""
    rows = results["rows"]
    out: list[tuple[str, str, str]] = []

    def judge(name: str, judged: Judged, unit: str = "x") -> None:
        out.append((name, judged.text(unit), judged.outcome))

    if "latency.1 MB" in rows:
        bare = vs_bare(rows["latency.1 MB"])
        judge(f"added latency at 1 MB <= {LATENCY_1MB_MAX}x bare mitmdump's (p50)",
              at_most(bare.value, [bare.low, bare.high], LATENCY_1MB_MAX))
    if "latency.100 KB" in rows:
        judge(f"CPU per request at 100 KB <= {CPU_100KB_MAX}x bare mitmdump's",
              cpu_vs(rows["latency.100 KB"], "mitmdump", CPU_100KB_MAX))
    if "latency.2 KB" in rows:
        judge(f"CPU per small (2 KB) request <= {CPU_SMALL_MAX}x bare mitmdump's",
              cpu_vs(rows["latency.2 KB"], "mitmdump", CPU_SMALL_MAX))
    if "ttft.2 KB" in rows:
        bare = vs_bare(rows["ttft.2 KB"])
        judge(f"added time to first text (2 KB) <= {TTFT_MAX}x bare mitmdump's (p50)",
              at_most(bare.value, [bare.low, bare.high], TTFT_MAX))
    stall = rows.get("stall", {})
    if {"balancer", "mitmdump"} <= stall.keys():
        rounds = [ratio(b, m) for b, m in zip(stall["balancer"]["added_rounds"], stall["mitmdump"]["added_rounds"],
                                              strict=True)]
        judge(f"big requests add to other streams' worst gap <= {STALL_MAX}x what they add through bare mitmdump",
              at_most(ratio(stall["balancer"]["added_ms"], stall["mitmdump"]["added_ms"]), rounds, STALL_MAX))
    for label in ("refused", "overloaded"):
        row = rows.get(f"failover_{label}")
        if row:
            rounds = per_round(row, "rounds", lambda a, b: a - b, label, "healthy_first")
            judge(f"failover cost, {label} first provider < {FAILOVER_COST_MAX_MS:.0f} ms (p50)",
                  at_most(row["cost_ms"]["p50"], rounds, FAILOVER_COST_MAX_MS), " ms")
    streams = rows.get("open_streams", {}).get("balancer")
    if streams:
        out.append((f"all {streams['streams']} streams opened through the balancer",
                    f"{streams['opened']} in {streams['seconds']:.1f} s",
                    "met" if streams["opened"] == streams["streams"] else "MISSED"))
        judge(f"RSS with {streams['streams']} open streams < {OPEN_STREAMS_RSS_MAX_MB:.0f} MB",
              at_most(streams["rss_mb"], [t["rss_mb"] for t in streams["turns"]], OPEN_STREAMS_RSS_MAX_MB), " MB")
    series = rows.get("rss_over_requests")
    if series:
        judge(f"no RSS growth over {series['series'][-1][0]} requests (< {GROWTH_MAX_MB:.0f} MB)",
              at_most(series["growth_mb"], [series["growth_mb"]], GROWTH_MAX_MB), " MB")
    for key, label in latency_rows():
        row = rows.get(key, {})
        peer, judged = vs_peer(row)
        if peer is not None:
            judge(f"faster than every peer: {label} (added p50 / {peer}'s)", judged)
    tput = rows.get("throughput_c32", {})
    peers = [p for p in PEERS if p in tput]
    if peers and "balancer" in tput:
        best = max(peers, key=lambda p: tput[p]["rps"])
        rounds = per_round(tput, "rounds", ratio, best, "balancer")
        judge(f"more requests/s than every peer, concurrency 32 ({best}'s / ours)",
              at_most(ratio(tput[best]["rps"], tput["balancer"]["rps"]), rounds, 1.0))
    return out


def verdict_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "targets (met: holds in every round; MISSED: fails in every round; otherwise within noise):"]
    for target, measured, outcome in verdict(results):
        lines.append(f"  [{outcome:^12}] {target}: {measured}")
    return lines


def header(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    peers = ", ".join(f"{k} {val}" for k, val in v.items())
    load = results.get("load", {}).get("start")
    loaded = f", load average at start {load[0]:.1f}" if load else ""
    took = f" in {results['seconds']:.0f} s" if "seconds" in results else ""
    return (f"{results['mode']} run{took}, {results['when']}: {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), "
            f"Python {m['python']}, {peers}{loaded}")


def markdown(results: dict[str, Any]) -> str:
    """The p50 table with CPU per request and the ratio to the best peer, for docs/benchmarks.md."""
    rows = results["rows"]
    present = [t for t in TARGETS_ORDER if any(t in rows.get(k, {}) for k, _ in latency_rows())]
    lines = ["| p50 (CPU ms per request) | " + " | ".join(present) + " | balancer / best peer |",
             "|---" * (len(present) + 2) + "|"]
    for key, label in latency_rows():
        row = rows.get(key)
        if not row:
            continue
        cells = []
        for t in present:
            cells.append(f"{row[t]['p50']:.2f} ms ({row[t]['cpu_ms']:.2f})" if t in row else "")
        peer, judged = vs_peer(row)
        cells.append(f"{judged.value:.2f}x {peer} ({judged.low:.2f}-{judged.high:.2f})" if peer else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    return "\n".join([header(results), "", table(results), *verdict_lines(results)])
