"""Benchmark: what the balancer adds, side by side with direct calls, bare mitmdump and (optionally) LiteLLM and
claude-code-router.

Run it through `scripts/bench`, which sets up .venv first. Everything runs on 127.0.0.1: a fast fake provider in
its own process, mitmdump subprocesses, the peers (`--peer litellm`, `--peer ccr`, installed into .bench/ on first
use) and a lean load generator in this process. See docs/benchmarks.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit.report import markdown, render
from benchkit.run import Bench, Plan


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: a run well under 90 s (without peers)")
    parser.add_argument("--peer", choices=["litellm", "ccr", "all"], action="append", default=[],
                        help="also measure this peer proxy (installed into .bench/ on first use); repeatable")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="write the results (with the raw latency samples) as JSON")
    parser.add_argument("--plot", metavar="PNG", help="draw the latency distributions to this PNG file "
                        "(matplotlib is installed into .bench/ on first use)")
    parser.add_argument("--shared", action="store_true", help="measure settings.shared_state instead: time to "
                        "first event with sharing off and on, and how soon a cooldown reaches another instance")
    parser.add_argument("--ttft-study", action="store_true", help="why measurements of the time to first event "
                        "differ: the balancer against bare mitmdump behind fakes that write differently, read by "
                        "different clients (docs/benchmarks.md)")
    parser.add_argument("--floor", action="store_true", help="what the design itself costs: two minimal addons "
                        "that own the provider I/O as the balancer does, beside bare mitmdump and the balancer")
    args = parser.parse_args(argv)
    if args.floor:
        from benchkit import floor, floor_report

        results = floor.run(floor.FloorPlan.quick() if args.quick else floor.FloorPlan())
        print(floor_report.render(results))
        if args.json:
            Path(args.json).write_text(json.dumps(_jsonable(results), indent=1))
            print(f"\nresults written to {args.json}")
        return 0
    if args.ttft_study:
        from benchkit import ttft_study

        study = ttft_study.run(30 if args.quick else 150)
        print(ttft_study.render(study))
        if args.json:
            Path(args.json).write_text(json.dumps(_jsonable(study), indent=1))
        return 0
    if args.shared:
        from benchkit import shared

        figures = shared.SharedBench(300 if args.quick else 3000, 30 if args.quick else 200).run()
        print(shared.render(figures))
        if args.json:
            Path(args.json).write_text(json.dumps(_jsonable(figures), indent=1))
        return 0
    peers = tuple(p for p in ("litellm", "ccr") if p in args.peer or "all" in args.peer)
    plan = Plan.quick(peers) if args.quick else Plan.full(peers)
    results = Bench(plan).run()
    print(render(results))
    if args.markdown:
        print("\n" + markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(results), indent=1))
        print(f"\nresults written to {args.json}")
    if args.plot:
        from benchkit.plot import draw

        draw(results, Path(args.plot), say=lambda m: print(m, file=sys.stderr))
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
