"""How long local count_tokens takes for a ~200 KB Claude Code request (target: well under 50 ms).
Run through scripts/bench-count-tokens, which sets up the virtualenv."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from addon.token_count import count_input_tokens, warm_up  # noqa: E402
from samples import claude_code_like_request  # noqa: E402

RUNS = 50


def main() -> None:
    body = claude_code_like_request()
    size = len(json.dumps(body))
    started = time.perf_counter()
    warm_up()
    load = time.perf_counter() - started
    times = []
    tokens = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        tokens = count_input_tokens(body)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(f"request {size / 1024:.0f} KB, {tokens} tokens; vocabulary load {load * 1000:.0f} ms")
    print(f"count_tokens local: p50 {statistics.median(times):.1f} ms, p99 {times[int(len(times) * 0.99) - 1]:.1f} ms, "
          f"max {times[-1]:.1f} ms over {len(times)} runs")


if __name__ == "__main__":
    main()
