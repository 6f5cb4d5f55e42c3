"""benchkit.processes: a helper process whose start-up fails is stopped, never left running."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from benchkit.processes import Process

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)


# Writes its pid to argv[1], prints argv[2] (when given), then waits silently for a long time.
CHILD = textwrap.dedent("""
    import os, sys, time
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    if len(sys.argv) > 2:
        print(sys.argv[2], flush=True)
    time.sleep(600)
""")


class QuickProcess(Process):
    name = "test child"
    start_timeout = 3.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def check_start_fails_and_stops_the_child(tmp_path: Path, *printed: str) -> None:
    pid_file = tmp_path / "pid"
    try:
        with pytest.raises(RuntimeError, match="test child did not start"):
            QuickProcess([sys.executable, "-c", CHILD, str(pid_file), *printed], "port ")
        assert not alive(int(pid_file.read_text())), "the child was left running after its start-up failed"
    finally:  # whatever the outcome, this test leaves no process behind
        if pid_file.exists() and alive(pid := int(pid_file.read_text())):
            os.kill(pid, signal.SIGKILL)


def test_a_child_that_never_prints_its_port_is_stopped_at_the_start_deadline(tmp_path: Path) -> None:
    check_start_fails_and_stops_the_child(tmp_path)


def test_a_child_whose_port_line_does_not_parse_is_stopped(tmp_path: Path) -> None:
    check_start_fails_and_stops_the_child(tmp_path, "port nope")


def test_a_child_that_tells_its_port_is_running_until_stopped(tmp_path: Path) -> None:
    with QuickProcess([sys.executable, "-c", CHILD, str(tmp_path / "pid"), "port 4321"], "port ") as child:
        assert child.port == 4321
        assert alive(child.pid)
    assert child.proc.poll() is not None
