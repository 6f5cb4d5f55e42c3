"""Separate virtual environments for what only the benchmark needs (a plotting library, a peer proxy), kept under
`.bench/` so that the balancer's own `.venv` stays exactly what requirements.lock says."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .processes import REPO

BENCH_DIR = REPO / ".bench"


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def base_python() -> str:
    """The interpreter this venv was made from, so a bench environment matches the balancer's Python."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_env(name: str, lock: Path, progress: Callable[[str], None]) -> Path:
    """`.bench/<name>` installed from the hash-pinned `lock`; re-installed only when the lock or the Python
    changed. Returns the environment's python. Raises RuntimeError with the tail of pip's log on failure."""
    venv = BENCH_DIR / name
    BENCH_DIR.mkdir(exist_ok=True)
    python = venv / "bin" / "python"
    stamp = venv / ".bench-setup"
    want = f"{sys.version.split()[0]} {hashlib.sha256(lock.read_bytes()).hexdigest()}"
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    progress(f"setting up .bench/{name} from {lock.name} (once; log: {venv / 'pip-install.log'})")
    made = subprocess.run([base_python(), "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"could not create {venv} with {base_python()}:\n{made.stdout}{made.stderr}".rstrip())
    log = venv / "pip-install.log"
    with log.open("w") as out:
        done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                               "--require-hashes", "--prefer-binary", "-r", str(lock)],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"installing {lock.name} into .bench/{name} failed (log: {log}):\n{tail(log)}")
    stamp.write_text(want)
    return python
