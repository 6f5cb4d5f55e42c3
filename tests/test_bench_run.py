"""scripts/benchkit against real processes: the fake provider, the load generator, and a whole (tiny) run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from benchkit import loadgen
from benchkit.fake_provider import STREAM_PIECES
from benchkit.processes import FakeProvider
from benchkit.run import Bench, Plan

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake():
    with FakeProvider() as process:
        yield process


def run(coro):
    return asyncio.run(coro)


def test_fake_answers_anthropic_and_openai_style_streamed_and_not(fake):
    for path, events in (("/ok/v1/messages", STREAM_PIECES + 5), ("/ok/v1/chat/completions", STREAM_PIECES + 4)):
        timings, errors = run(loadgen.measure(fake.url, path, loadgen.request_body(True), 3, 1))
        assert errors == 0 and len(timings) == 3
        assert all(len(t.event_times) == events for t in timings)
        assert all(0 < t.first_event <= t.total for t in timings)
        timings, errors = run(loadgen.measure(fake.url, path, loadgen.request_body(False), 3, 2))
        assert errors == 0 and [t.status for t in timings] == [200] * 3


def test_load_generator_counts_failures_as_errors(fake):
    timings, errors = run(loadgen.measure(fake.url, "/overloaded/v1/messages", loadgen.request_body(False), 4, 2))
    assert (timings, errors) == ([], 4)
    timings, errors = run(loadgen.measure(fake.url, "/nowhere/v1/messages", loadgen.request_body(False), 2, 1))
    assert errors == 2


def test_paced_stream_events_arrive_spread_out(fake):
    (timing,), _ = run(loadgen.measure(fake.url, "/paced/v1/messages", loadgen.request_body(True), 1, 1))
    assert len(timing.event_times) == 55
    # 50 deltas at least 1 ms apart: the last event cannot arrive before 50 ms after the first delta.
    assert timing.event_times[-1] - timing.event_times[0] >= 0.05


def test_hold_streams_keeps_them_all_open_while_measuring(fake):
    seen = []

    async def while_open(count: int) -> None:
        seen.append(count)

    opened = run(loadgen.hold_streams(fake.url, "/slow/v1/messages", 30, while_open))
    assert opened == 30 and seen == [30]


def test_a_tiny_run_measures_every_row(tmp_path):
    plan = Plan(latency_requests=6, paced_streams=2, failover_requests=3, hang_requests=1, throughput_seconds=0.3,
                open_streams=20, memory_requests=40, translation_seconds=0.05, rounds=1, name="test")
    results = Bench(plan, say=lambda _m: None).run()
    rows = results["rows"]
    for key in ("a.latency_c1", "a.latency_c32", "b.ttfe", "b.event_gap"):
        assert set(rows[key]) == {"direct", "mitmdump", "balancer"}, key
        assert all(rows[key][t]["errors"] == 0 and rows[key][t]["p50"] > 0 for t in rows[key]), key
    assert rows["b.ttfe_openai"]["balancer"]["errors"] == 0
    for kind in ("refused", "overloaded", "hang"):
        row = rows[f"c.failover_{kind}"]
        assert row[kind]["errors"] == 0 and row[kind]["n"] > 0
    assert rows["c.failover_hang"]["cost_ms"]["p50"] >= 900  # request_timeout is 1 s
    assert all(rows[k]["balancer"]["errors"] == 0 for k in ("d.throughput_c32", "d.throughput_c128"))
    assert rows["e.rss_open_streams"]["balancer"]["open_streams"] == 20
    assert len(rows["e.rss_over_requests"]["series"]) == 11
    assert rows["f.translation"]["events_per_cpu_s"] > 0
    assert set(results["samples"]["b.ttfe"]) == {"direct", "mitmdump", "balancer"}


def test_bench_script_rejects_unknown_peer():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--peer", "nginx"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
