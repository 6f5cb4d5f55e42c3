"""scripts/benchkit/turns.py: the order in which the targets of a row take turns."""

from __future__ import annotations

import pytest

from benchkit.turns import turns

pytestmark = pytest.mark.bench


def test_every_round_gives_each_target_one_turn_and_the_first_turn_rotates():
    order = turns(["direct", "mitmdump", "balancer"], 4)
    assert [name for r, name in order if r == 0] == ["direct", "mitmdump", "balancer"]
    assert [name for r, name in order if r == 1] == ["mitmdump", "balancer", "direct"]
    assert [name for r, name in order if r == 3] == ["direct", "mitmdump", "balancer"]
    assert [r for r, _ in order] == sorted(r for r, _ in order)  # round after round, never a target's block
    for name in ("direct", "mitmdump", "balancer"):
        assert [r for r, n in order if n == name] == [0, 1, 2, 3]


def test_no_target_runs_all_its_requests_in_one_block():
    order = [name for _, name in turns(["a", "b"], 3)]
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert turns([], 3) == []
