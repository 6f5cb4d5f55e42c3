"""scripts/benchkit against real processes: the fake provider, the load generator, and a whole (tiny) run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from benchkit import loadgen
from benchkit.bodies import body
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


def test_fake_writes_a_stream_event_by_event_with_a_pause_before_the_text(fake):
    # Like a real provider: the opening events, then (1 ms later) the first text. A client that times the first
    # event and one that times the first text must see them apart; with `burst` everything comes at once.
    # The client's own delays can only shrink one sample's gap (it reads the opening late, the text on time):
    # the widest of ten shows the pause.
    timings, _ = run(loadgen.measure(fake.url, "/ok/v1/messages", loadgen.request_body(True), 10, 1))
    assert max(t.first_content - t.first_event for t in timings) >= 0.001
    assert max(len(set(t.event_times)) for t in timings) > 2  # not one read: the events came in writes of their own
    (timing,), _ = run(loadgen.measure(fake.url, "/burst/v1/messages", loadgen.request_body(True), 1, 1))
    assert timing.first_content - timing.first_event < 0.001


def test_big_bodies_go_through_whole(fake):
    timings, errors = run(loadgen.measure(fake.url, "/ok/v1/messages", body(1_000_000, True), 2, 1))
    assert errors == 0 and all(t.status == 200 and len(t.event_times) == STREAM_PIECES + 5 for t in timings)


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

    opened, seconds = run(loadgen.hold_streams(fake.url, "/slow/v1/messages", 30, while_open))
    assert opened == 30 and seen == [30]
    assert 0 < seconds < 0.5  # the slow profile sends its first text at once, its next one 0.5 s later


def test_a_tiny_run_measures_every_row(tmp_path):
    plan = Plan(requests={"2 KB": 6, "100 KB": 3, "1 MB": 3}, c32_requests=32, paced_streams=2, failover_requests=3,
                hang_requests=1, throughput_seconds=0.4, open_streams=20, stream_rounds=2, stall_streams=4,
                stall_requests=2, stall_mb=2, stall_rounds=1, memory_requests=40,
                translation_seconds=0.05, rounds=2, warm_up=2, name="test")
    results = Bench(plan, say=lambda _m: None).run()
    rows = results["rows"]
    for size in ("2 KB", "100 KB", "1 MB"):
        for key in (f"latency.{size}", f"ttft.{size}"):
            assert set(rows[key]) == {"direct", "mitmdump", "balancer"}, key
            for name, figures in rows[key].items():
                assert figures["errors"] == 0 and figures["p50"] > 0 and len(figures["rounds"]) == 2, (key, name)
                assert figures["cpu_ms"] >= 0 and len(figures["cpu_rounds"]) == 2
        for key in (f"latency_openai.{size}", f"ttft_openai.{size}"):
            assert set(rows[key]) == {"direct", "balancer"} and rows[key]["balancer"]["errors"] == 0, key
    # The proxies did the work of every request: some CPU was charged to them.
    assert rows["latency.1 MB"]["balancer"]["cpu_ms"] > 0
    assert rows["event_gap"]["balancer"]["errors"] == 0
    assert rows["latency_c32"]["balancer"]["n"] == 32
    for kind in ("refused", "overloaded", "hang"):
        row = rows[f"failover_{kind}"]
        assert row[kind]["errors"] == 0 and row[kind]["n"] > 0
    assert rows["failover_hang"]["cost_ms"]["p50"] >= 900  # request_timeout is 1 s
    assert set(rows["throughput_c32"]) == {"mitmdump", "balancer"}
    assert rows["throughput_c32"]["balancer"]["errors"] == 0 and rows["throughput_c32"]["balancer"]["ok"] > 0
    for name in ("mitmdump", "balancer"):
        stall = rows["stall"][name]
        assert stall["errors"] == 0 and len(stall["added_rounds"]) == 1
        assert stall["idle_ms"] >= 9  # the ticking streams' events are 10 ms apart
    streams = rows["open_streams"]["balancer"]
    assert streams["opened"] == 20 and len(streams["turns"]) == 2 and streams["seconds"] > 0
    assert streams["fds_per_stream"] >= 2  # at least the client's connection and the provider's
    assert len(rows["rss_over_requests"]["series"]) == 11
    assert rows["translation"]["events_per_cpu_s"] > 0
    assert set(results["samples"]["ttft.1 MB"]) == {"direct", "mitmdump", "balancer"}
    assert "load" in results and results["seconds"] > 0


def test_bench_script_rejects_unknown_peer():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--peer", "nginx"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
