"""`scripts/bench --floor`: what the design itself costs. Beside direct calls, bare mitmdump and the balancer, two
minimal addons built the way the balancer must be (they own the provider I/O; streams reach the client through a
loopback relay) are measured in the same rotating rounds: floor_httpx.py (httpx) and floor_raw.py (a hand-written
HTTP/1.1 exchange). What they add over bare mitmdump is the least any addon of this design adds; the rest of the
balancer's overhead is its own. Results come in run.py's shape (rows of latency_row), read by floor_report.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from . import loadgen
from .bodies import SIZES, body
from .processes import MITM_COMMON, MITMDUMP, Balancer, BareMitmdump, FakeProvider, Process, provider, start_together
from .run import Bench, Plan, Progress, machine, raise_open_file_limit, versions
from .targets import ANTHROPIC, Direct, Fixed, Target

HERE = Path(__file__).resolve().parent
FLOORS = {"floor-httpx": HERE / "floor_httpx.py", "floor-raw": HERE / "floor_raw.py"}
TARGETS = ("direct", "mitmdump", "balancer", *FLOORS)
# (key, label, streamed, body size name): the rows of issue 17's targets and their neighbours.
ROWS = (("latency.2 KB", "latency, 2 KB", False, "2 KB"), ("latency.100 KB", "latency, 100 KB", False, "100 KB"),
        ("latency.1 MB", "latency, 1 MB", False, "1 MB"), ("ttft.2 KB", "first text, 2 KB", True, "2 KB"),
        ("ttft.100 KB", "first text, 100 KB", True, "100 KB"))
# A port nothing listens on: a flow a floor failed to answer gets mitmproxy's 502, never a reply from elsewhere.
NOWHERE = "http://127.0.0.1:9"


class FloorMitmdump(Process):
    """mitmdump running one floor addon in front of `upstream` (a fake provider's profile URL)."""

    def __init__(self, name: str, script: Path, upstream: str):
        self.name = name
        super().__init__([str(MITMDUMP), *MITM_COMMON, "-s", str(script), "--mode", f"reverse:{NOWHERE}",
                          "--set", f"floor_upstream={upstream}"], "listening at")


@dataclass(frozen=True)
class FloorPlan:
    # per target and row, over all rounds
    requests: dict[str, int] = field(default_factory=lambda: {"2 KB": 600, "100 KB": 240, "1 MB": 150})
    rounds: int = 5
    warm_up: int = 50  # 2 KB requests per target, streamed and not, before the rows
    name: str = "floor"

    @classmethod
    def quick(cls) -> FloorPlan:
        return cls(requests={"2 KB": 150, "100 KB": 60, "1 MB": 15}, rounds=3, warm_up=20, name="floor quick")


def start_targets(stack: ExitStack, fake: FakeProvider) -> list[Target]:
    """Bare mitmdump, the balancer and the floors, started side by side in front of the fake's `ok` profile; each
    is stopped when `stack` closes."""
    upstream = fake.anthropic("ok")
    factories: list[Callable[[], Process]] = [lambda: BareMitmdump(fake.url),
                                              lambda: Balancer([provider("fake", upstream)])]
    factories += [partial(FloorMitmdump, name, script, upstream) for name, script in FLOORS.items()]
    bare, balancer, *floors = [stack.enter_context(p) for p in start_together(factories)]
    return [Direct("direct", fake), Direct("mitmdump", bare), Fixed("balancer", balancer),
            *(Fixed(name, process) for name, process in zip(FLOORS, floors, strict=True))]


def warm_up(targets: list[Target], count: int) -> None:
    for target in targets:
        route = target.route("ok", ANTHROPIC)
        for stream in (False, True):
            for size, n in ((SIZES["2 KB"], count), (SIZES["100 KB"], 2), (SIZES["1 MB"], 2)):
                asyncio.run(loadgen.measure(route.url, route.path, body(size, stream, route.model), n, 1))


def run(plan: FloorPlan, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    raise_open_file_limit()
    load_at_start = list(os.getloadavg())
    bench = Bench(Plan(requests=plan.requests, rounds=plan.rounds, name=plan.name), say)
    with ExitStack() as stack:
        say("starting the fake provider, bare mitmdump, the balancer and the two floor addons")
        targets = start_targets(stack, stack.enter_context(FakeProvider()))
        progress = Progress(1 + len(ROWS))
        progress.step("warming up every path")
        warm_up(targets, plan.warm_up)
        for key, label, stream, size_name in ROWS:
            progress.step(label)
            bench.latency_row(key, targets, ANTHROPIC, stream, SIZES[size_name], plan.requests[size_name])
        seconds = progress.done()
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "mode": plan.name, "seconds": seconds,
            "load": {"start": load_at_start, "end": list(os.getloadavg())}, "machine": machine(),
            "versions": versions({}), "rows": bench.rows, "samples": bench.samples}
