"""`scripts/bench --floor`: the floor addons answer like the provider (JSON whole, a stream held to its first text
and relayed in chunks), and a tiny floor run measures and prints every row. No timing is asserted."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import anthropic
import pytest

import bench
from benchkit import floor, floor_report, loadgen
from benchkit.bodies import body
from benchkit.fake_provider import STREAM_PIECES
from benchkit.processes import FakeProvider, start_together

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)

FAKE_TEXT = "".join(f"word{i} " for i in range(STREAM_PIECES))


@pytest.fixture(scope="module")
def floors() -> Iterator[dict[str, floor.FloorMitmdump]]:
    with ExitStack() as stack:
        fake = stack.enter_context(FakeProvider())
        started = start_together([lambda n=name, s=script: floor.FloorMitmdump(n, s, fake.anthropic("ok"))
                                  for name, script in floor.FLOORS.items()])
        yield {process.name: stack.enter_context(process) for process in started}


@pytest.mark.parametrize("name", list(floor.FLOORS))
def test_a_floor_answers_with_the_fakes_message_and_stream(floors, name):
    with anthropic.Anthropic(base_url=floors[name].url, api_key="client-key", max_retries=0, timeout=30) as client:
        message = client.messages.create(model="claude-sonnet-4", max_tokens=16,
                                         messages=[{"role": "user", "content": "Hi"}])
        assert (message.id, message.content[0].text) == ("msg_bench", "Hello")
        with client.messages.stream(model="claude-sonnet-4", max_tokens=16,
                                    messages=[{"role": "user", "content": "Hi"}]) as stream:
            assert "".join(stream.text_stream) == FAKE_TEXT
            assert stream.get_final_message().stop_reason == "end_turn"


@pytest.mark.parametrize("name", list(floor.FLOORS))
def test_a_floor_passes_big_bodies_and_every_event(floors, name):
    timings, errors = asyncio.run(loadgen.measure(floors[name].url, "/v1/messages", body(1_000_000, True), 2, 1))
    assert errors == 0 and [len(t.event_times) for t in timings] == [STREAM_PIECES + 5] * 2


def read_chunk(f) -> bytes:
    size = int(f.readline().split(b";")[0], 16)
    data = f.read(size + 2)
    return data[:-2]


@pytest.mark.parametrize("name", list(floor.FLOORS))
def test_a_floor_holds_the_opening_events_until_the_first_text(floors, name):
    # As the balancer does (so that it could still fail over): the client's first chunk already has the text,
    # although the fake sends the opening events 1 ms before it.
    data = loadgen.request_body(True)
    with socket.create_connection(("127.0.0.1", floors[name].port), timeout=30) as sock, sock.makefile("rb") as f:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%b" % (len(data), data))
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        first = read_chunk(f)
        assert b"event: message_start" in first and b"event: content_block_delta" in first


def test_floor_ratios_are_of_the_time_added_over_direct():
    row = {"direct": {"p50": 1.0, "rounds": [1.0, 1.0], "cpu_ms": 0.1, "cpu_rounds": [0.1, 0.1]},
           "mitmdump": {"p50": 3.0, "rounds": [3.0, 2.0], "cpu_ms": 1.0, "cpu_rounds": [1.0, 2.0]},
           "floor-raw": {"p50": 5.0, "rounds": [4.0, 5.0], "cpu_ms": 1.5, "cpu_rounds": [1.0, 4.0]}}
    judged = floor_report.added_vs_bare(row, "floor-raw", 1.5)
    assert (judged.value, judged.low, judged.high, judged.outcome) == (2.0, 1.5, 4.0, "within noise")
    cpu = floor_report.cpu_vs_bare(row, "floor-raw")
    assert (cpu.value, cpu.low, cpu.high) == (1.5, 1.0, 2.0)


def test_a_tiny_floor_run_prints_and_writes_every_row(tmp_path, monkeypatch, capsys):
    tiny = floor.FloorPlan(requests={"2 KB": 6, "100 KB": 4, "1 MB": 2}, rounds=2, warm_up=2, name="test")
    monkeypatch.setattr(floor.FloorPlan, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "floor.json"
    assert bench.main(["--floor", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    for key, label, _, _ in floor.ROWS:
        assert set(rows[key]) == set(floor.TARGETS), key
        for name, figures in rows[key].items():
            assert figures["errors"] == 0 and figures["n"] > 0 and len(figures["rounds"]) == 2, (key, name)
        section = printed.split(label + "\n", 1)[1]
        assert [line.split()[0] for line in section.splitlines()[:5]] == list(floor.TARGETS), label
    for target in ("added latency at 1 MB", "CPU per 2 KB request", "added time to first text at 2 KB"):
        assert target in printed
