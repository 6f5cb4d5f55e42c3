"""scripts/benchkit: the pure figures, the verdicts with their noise margin and the report (no processes)."""

from __future__ import annotations

import math

import pytest

from benchkit import report, stats, verdict

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([5], 99) == 5
    assert stats.percentile(list(range(101)), 99) == 99
    assert math.isnan(stats.percentile([], 50))


def test_added_ratio_compares_added_time_not_totals():
    # direct 1 ms, bare mitmdump 2 ms (+1), balancer 2.5 ms (+1.5): 1.5x bare's overhead, though 1.25x its total.
    assert verdict.added_ratio(2.5, bare=2.0, direct=1.0) == pytest.approx(1.5)
    assert math.isnan(verdict.added_ratio(2.5, bare=1.0, direct=1.0))


def test_gaps_are_the_differences_and_growth_is_the_last_sample_minus_the_first():
    assert stats.gaps([0.0, 0.001, 0.003]) == pytest.approx([0.001, 0.002])
    assert stats.growth_mb([(0, 100.0), (1000, 103.0), (2000, 101.5)]) == pytest.approx(1.5)
    assert math.isnan(stats.growth_mb([(0, 100.0)]))


def test_a_target_is_met_only_when_every_round_holds_it():
    assert verdict.at_most(1.2, [1.1, 1.3, 1.4], 1.5).outcome == verdict.MET
    # The pooled figure is under the limit, but one round is over it: noise, not a result.
    assert verdict.at_most(1.4, [1.2, 1.4, 1.7], 1.5).outcome == verdict.NOISE
    assert verdict.at_most(1.4, [1.2, 1.4, 1.7], 1.5).text() == "1.40x (rounds 1.20-1.70x)"
    assert verdict.at_most(2.0, [1.6, 2.0, 2.4], 1.5).outcome == verdict.MISSED
    assert verdict.at_most(math.nan, [], 1.5).outcome == verdict.UNMEASURED
    assert verdict.at_most(1.0, [math.nan, 1.0], 1.5).outcome == verdict.MET  # a round without figures is left out


def row(rounds: dict[str, list[float]], cpu: dict[str, list[float]] | None = None) -> dict:
    """A latency row: per target its rounds' p50s (the pooled p50 is their median) and CPU per round."""
    cpu = cpu or {name: [1.0] * len(values) for name, values in rounds.items()}
    return {name: {"p50": stats.percentile(values, 50), "p99": max(values) * 2, "n": 10 * len(values),
                   "errors": 0, "rounds": values, "cpu_ms": stats.percentile(cpu[name], 50),
                   "cpu_rounds": cpu[name]} for name, values in rounds.items()}


def results(**rows: dict) -> dict:
    return {"when": "2026-11-24T00:00:00+00:00", "mode": "quick", "seconds": 60.0,
            "load": {"start": [3.5, 3, 2], "end": [3, 3, 2]},
            "machine": {"cpus": 2, "cpu": "test CPU", "python": "3.13.0"},
            "versions": {"mitmproxy": "12.2.3", "ccr": "2.0.0"}, "rows": rows}


def test_ratio_to_the_best_peer_uses_the_fastest_peer_of_the_row_round_by_round():
    data = row({"direct": [1.0, 1.0, 1.0], "mitmdump": [3.0, 3.0, 3.0], "balancer": [2.0, 2.2, 1.8],
                "litellm": [9.0, 9.0, 9.0], "ccr": [5.0, 4.0, 6.0]})
    peer, judged = report.vs_peer(data)
    assert peer == "ccr"
    assert judged.value == pytest.approx(1.0 / 4.0)  # added 1.0 against ccr's added 4.0
    assert (judged.low, judged.high) == pytest.approx((0.8 / 5.0, 1.2 / 3.0))  # round by round
    assert judged.outcome == verdict.MET
    # The balancer is faster on the pooled p50 but slower in one round: within noise.
    close = row({"direct": [1.0, 1.0, 1.0], "balancer": [2.0, 2.0, 3.5], "ccr": [2.2, 2.2, 2.2]})
    assert report.vs_peer(close)[1].outcome == verdict.NOISE
    assert report.vs_peer(row({"direct": [1.0], "balancer": [2.0]}))[0] is None


def test_verdicts_of_the_issue_targets_carry_the_spread_of_the_rounds():
    latency_1mb = row({"direct": [2.0] * 3, "mitmdump": [6.0] * 3, "balancer": [7.0, 7.5, 8.5]})  # 1.25-1.63x
    cpu_100kb = row({"direct": [1.0] * 3, "mitmdump": [1.0] * 3, "balancer": [1.0] * 3},
                    cpu={"direct": [0.1] * 3, "mitmdump": [2.0, 2.0, 2.0], "balancer": [5.0, 4.4, 4.8]})
    ttft = row({"direct": [1.0] * 3, "mitmdump": [2.0] * 3, "balancer": [2.2, 2.3, 2.4]})
    out = {target: (measured, outcome) for target, measured, outcome in
           report.verdict(results(**{"latency.1 MB": latency_1mb, "latency.100 KB": cpu_100kb, "ttft.2 KB": ttft}))}
    measured, outcome = out["added latency at 1 MB <= 1.5x bare mitmdump's (p50)"]
    assert outcome == verdict.NOISE and "rounds 1.25-1.62x" in measured
    assert out["CPU per request at 100 KB <= 1.5x bare mitmdump's"][1] == verdict.MISSED
    assert out["added time to first text (2 KB) <= 1.5x bare mitmdump's (p50)"][1] == verdict.MET


def test_failover_and_stream_targets():
    failover = {**row({"healthy_first": [2.0, 2.0, 2.0], "overloaded": [9.0, 8.0, 2.5]}),
                "cost_ms": {"p50": 6.0, "p99": 7.0}}
    streams = {"balancer": {"streams": 1000, "opened": 998, "seconds": 12.0, "fds_per_stream": 4.0,
                            "idle_mb": 100, "rss_mb": 210, "turns": [{"rss_mb": 200}, {"rss_mb": 210}]}}
    out = {target: outcome for target, _, outcome in report.verdict(results(failover_overloaded=failover,
                                                                            open_streams=streams))}
    assert out["failover cost, overloaded first provider < 5 ms (p50)"] == verdict.NOISE  # one round costs 0.5 ms
    assert out["all 1000 streams opened through the balancer"] == verdict.MISSED
    assert out["RSS with 1000 open streams < 300 MB"] == verdict.MET


def test_table_shows_each_row_with_cpu_and_the_ratios():
    data = row({"direct": [0.1] * 3, "mitmdump": [1.1] * 3, "balancer": [2.1] * 3, "ccr": [3.1] * 3},
               cpu={"direct": [0.0] * 3, "mitmdump": [1.0] * 3, "balancer": [1.5] * 3, "ccr": [3.0] * 3})
    text = report.render(results(**{"latency.100 KB": data}))
    lines = text.splitlines()
    p50 = next(line for line in lines if line.startswith("latency, 100 KB"))
    assert "2.00x" in p50  # (2.1 - 0.1) / (1.1 - 0.1)
    assert "0.67x (ccr)" in p50  # 2.0 / 3.0
    cpu = lines[lines.index(p50) + 2]
    assert "CPU ms/req" in cpu and "1.50x" in cpu and "0.50x (ccr)" in cpu
    assert "load average at start 3.5" in lines[0]
    markdown = report.markdown(results(**{"latency.100 KB": data}))
    assert ("| latency, 100 KB | 0.10 ms (0.00) | 1.10 ms (1.00) | 2.10 ms (1.50) | 3.10 ms (3.00) | 0.67x ccr"
            in markdown)


def test_report_without_a_peer_has_no_peer_column_or_verdict():
    data = row({"direct": [0.1] * 3, "mitmdump": [1.1] * 3, "balancer": [2.1] * 3})
    text = report.render(results(**{"latency.2 KB": data}))
    assert "ccr" not in text.split("\n", 1)[1] and "litellm" not in text
    assert "faster than every peer" not in text


def test_stall_verdict_compares_what_big_requests_add_round_by_round():
    stall = {"mitmdump": {"idle_ms": 10.5, "loaded_ms": 30.0, "added_ms": 20.0, "added_rounds": [20.0, 18.0, 22.0],
                          "errors": 0},
             "balancer": {"idle_ms": 10.5, "loaded_ms": 60.0, "added_ms": 50.0, "added_rounds": [50.0, 40.0, 25.0],
                          "errors": 0}}
    out = {target: (measured, outcome) for target, measured, outcome in report.verdict(results(stall=stall))}
    measured, outcome = next(v for k, v in out.items() if k.startswith("big requests add"))
    assert measured == "2.50x (rounds 1.14-2.50x)" and outcome == verdict.NOISE
    assert "+50.0 ms" in report.render(results(stall=stall))
