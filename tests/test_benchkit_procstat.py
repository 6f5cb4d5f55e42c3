"""scripts/benchkit/procstat.py against real processes: CPU time, descriptors, process trees."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from benchkit import procstat

pytestmark = pytest.mark.bench


def test_cpu_ticks_are_utime_plus_stime_even_with_spaces_and_parens_in_the_name():
    line = "4242 (node (worker) 1) S 1 4242 4242 0 -1 4194304 100 0 0 0 123 45 0 0 20 0 11 0 100 0 0"
    assert procstat.cpu_ticks(line) == 168


def test_cpu_time_of_a_process_tree_counts_a_busy_child():
    script = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
              "'import time\\nend = time.process_time() + 0.5\\nwhile time.process_time() < end: pass\\n"
              "import sys; sys.stdin.read()'])")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(procstat.tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = procstat.tree(parent.pid)
        assert len(pids) == 2 and pids[0] == parent.pid
        while procstat.cpu_seconds(pids[1:]) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procstat.cpu_seconds(pids) >= 0.5
        assert procstat.cpu_seconds(pids) >= procstat.cpu_seconds(pids[1:])
    finally:
        for pid in reversed(pids or procstat.tree(parent.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait()
    assert procstat.tree(parent.pid) == []
    assert procstat.cpu_seconds([parent.pid]) == 0.0  # gone: counts nothing, no error


def test_open_descriptors_count_each_socket():
    me = [os.getpid()]
    before = procstat.open_fds(me)
    sockets = [socket.socket() for _ in range(5)]
    try:
        assert procstat.open_fds(me) == before + 5
    finally:
        for s in sockets:
            s.close()
    assert procstat.open_fds(me) == before
    assert procstat.rss_mb(me) > 1
