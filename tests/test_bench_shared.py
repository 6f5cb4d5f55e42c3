"""scripts/bench --shared (benchkit/shared.py): a tiny run against real processes. Figures are printed, never
asserted: only that every row was measured, without errors."""

from __future__ import annotations

import math

import pytest

from benchkit import shared
from benchkit.kv_server import server_binary

pytestmark = [
    pytest.mark.bench,  # not in the default run; CI runs them (pyproject.toml)
    pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here"),
]


def test_a_tiny_shared_state_run_measures_every_row():
    figures = shared.SharedBench(requests=6, propagation_samples=3, rounds=2).run()
    ttfe = figures["ttfe"]
    for name in ("sharing off", "sharing on"):
        assert ttfe[name]["n"] == 6 and ttfe[name]["errors"] == 0
        assert ttfe[name]["p50"] > 0
    assert math.isfinite(ttfe["added"]["p50"])
    propagation = figures["propagation"]
    assert propagation["n"] == 3 and propagation["p50"] >= 0
    text = shared.render(figures)
    assert "sharing on adds" in text and "cooldown set on A, seen on B" in text
