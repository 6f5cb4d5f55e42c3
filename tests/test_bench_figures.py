"""scripts/benchkit: the pure figures and the report built from them (no processes)."""

from __future__ import annotations

import math

import pytest

from benchkit import report, stats

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([5], 99) == 5
    assert stats.percentile(list(range(101)), 99) == 99
    assert math.isnan(stats.percentile([], 50))


def test_overhead_ratio_compares_added_time_not_totals():
    # direct 1 ms, bare mitmdump 2 ms (+1), balancer 2.5 ms (+1.5): 1.5x bare's overhead, though 1.25x its total.
    assert stats.overhead_ratio(2.5, bare=2.0, direct=1.0) == pytest.approx(1.5)
    assert math.isnan(stats.overhead_ratio(2.5, bare=1.0, direct=1.0))


def test_gaps_are_the_differences_and_growth_is_the_last_sample_minus_the_first():
    assert stats.gaps([0.0, 0.001, 0.003]) == pytest.approx([0.001, 0.002])
    assert stats.growth_mb([(0, 100.0), (1000, 103.0), (2000, 101.5)]) == pytest.approx(1.5)
    assert math.isnan(stats.growth_mb([(0, 100.0)]))


def results(balancer_ttfe: float = 2.0, litellm: bool = True) -> dict:
    def row(**p50s: float) -> dict:
        return {name: {"p50": v, "p99": v * 2, "n": 10, "errors": 0} for name, v in p50s.items()}

    peer = {"litellm": 20.0} if litellm else {}
    return {
        "when": "2026-11-24T00:00:00+00:00", "mode": "quick",
        "machine": {"cpus": 2, "cpu": "test CPU", "python": "3.13.0"},
        "versions": {"mitmproxy": "12.2.3", **({"litellm": "1.0"} if litellm else {})},
        "rows": {
            "a.latency_c1": row(direct=0.1, mitmdump=1.1, balancer=1.6, **peer),
            "b.ttfe": row(direct=0.1, mitmdump=1.1, balancer=balancer_ttfe, **peer),
            "c.failover_refused": {**row(healthy_first=2.0, refused=2.4), "cost_ms": {"p50": 0.4, "p99": 0.9}},
            "c.failover_overloaded": {**row(healthy_first=2.0, overloaded=9.0), "cost_ms": {"p50": 7.0, "p99": 9}},
            "d.throughput_c32": {"direct": {"rps": 20000, "errors": 0}, "mitmdump": {"rps": 800, "errors": 0},
                                 "balancer": {"rps": 600, "errors": 1},
                                 **({"litellm": {"rps": 300, "errors": 0}} if litellm else {})},
            "e.rss_open_streams": {"balancer": {"idle_mb": 120, "open_streams": 500, "rss_mb": 170}},
            "e.rss_over_requests": {"series": [[0, 140.0], [5000, 141.0], [10000, 141.5]], "growth_mb": 1.5,
                                    "errors": 0},
            "f.translation": {"events_per_cpu_s": 150000.0},
        },
    }


def test_table_puts_ratios_against_direct_and_bare_mitmdump_next_to_each_figure():
    text = report.render(results())
    line = next(row for row in text.splitlines() if row.startswith("(b) time to first event"))
    assert "20.0x d" in line  # 2.0 / 0.1
    assert "1.9x m" in line  # (2.0 - 0.1) / (1.1 - 0.1)
    assert "litellm" in text.splitlines()[2]
    assert "errors: 1" in text
    assert "150,000 events per CPU second" in text
    assert "growth +1.5 MB" in text


def test_verdict_names_each_target_and_whether_it_was_met():
    verdict = {target.split(":")[0].split(" <")[0]: met for target, _, met in report.verdict(results())}
    assert verdict["time-to-first-event overhead"] is False  # 1.9x > 1.5x
    assert verdict["failover cost, refused first provider"] is True
    assert verdict["failover cost, overloaded first provider"] is False  # 7 ms
    assert verdict["RSS with 500 open streams"] is True
    assert verdict["lower overhead than LiteLLM"] is True
    assert verdict["more throughput than LiteLLM"] is True
    met = {t for t, _, ok in report.verdict(results(balancer_ttfe=1.5))}
    assert any(t.startswith("time-to-first-event") for t in met)
    assert "[met ] time-to-first-event" in report.render(results(balancer_ttfe=1.5))


def test_report_without_a_peer_has_no_peer_column_or_verdict():
    text = report.render(results(litellm=False))
    assert "litellm" not in text
    assert "LiteLLM" not in text


def test_rows_where_bare_mitmdump_adds_nothing_show_added_time_instead_of_ratios():
    data = results()
    data["rows"]["b.event_gap"] = {name: {"p50": v, "p99": v, "n": 5, "errors": 0}
                                   for name, v in (("direct", 1.09), ("mitmdump", 1.10), ("balancer", 1.12))}
    line = next(row for row in report.render(data).splitlines() if row.startswith("(b) delay between events"))
    assert "+0.03 vs d" in line and "x m" not in line
