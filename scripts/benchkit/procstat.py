"""What a target process (and its workers) has used, read from /proc: CPU time, open file descriptors, memory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/PID/task/*/children), parents first; [] when it is gone."""
    if not Path(f"/proc/{pid}").exists():
        return []
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) from a /proc/PID/stat line; the name in parentheses may hold spaces."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system, all threads) the processes have used so far; a process that is gone counts 0."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            ticks += cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    return ticks / TICKS


def open_fds(pids: Iterable[int]) -> int:
    """How many file descriptors the processes hold."""
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{pid}/fd"))
    return count


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of the processes in MiB (VmRSS summed), nan when none can be read."""
    total, seen = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        seen = True
        except OSError:
            continue
    return total / 1024 if seen else float("nan")
