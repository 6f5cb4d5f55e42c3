"""The processes a benchmark run starts: the fake provider, bare mitmdump and mitmdump with the balancer.
Each is a context manager; every one is stopped when the run ends, however it ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).parent / "mitmdump"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_session(proc: subprocess.Popen[Any]) -> None:
    """Terminate a child started in a session of its own (`start_new_session=True`), kill it if it does not exit,
    then kill what is left in its session: the workers a supervisor (a peer's) leaves behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (VmRSS), nan when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Process:
    """A child process that prints a line telling its port; its output is kept (the last lines) for errors."""

    name = "process"
    # Seconds the child has to print its port line.
    start_timeout = 60.0

    def __init__(self, args: list[str], port_line: str, cwd: Path | None = None, stdin: bool = False):
        self.output: deque[str] = deque(maxlen=40)
        self._port_line = port_line
        self._port: int | None = None
        self._told = threading.Event()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, cwd=cwd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        # Whatever goes wrong before the port is known (silence, a crash, an unreadable line, Ctrl-C), the
        # child is stopped: nobody else holds it yet.
        try:
            threading.Thread(target=self._drain, daemon=True).start()
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self) -> int:
        # The reader thread sets the event on the port line or at the end of the output; the wait itself has
        # the deadline, so a child that goes silent cannot hold the caller.
        if not self._told.wait(self.start_timeout) or self._port is None:
            raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.output))
        return self._port

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip())
            if not self._told.is_set() and self._port_line in line:
                # An unreadable port leaves it None: the caller reports the start-up as failed.
                with contextlib.suppress(ValueError, IndexError):
                    self._port = int(line.rsplit(":" if ":" in line else " ", 1)[1].strip().rstrip("."))
                self._told.set()
        self._told.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeProvider(Process):
    """benchkit.fake_provider in its own process."""

    name = "fake provider"

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "benchkit.fake_provider"], "port ", cwd=REPO / "scripts", stdin=True)

    def anthropic(self, profile: str = "ok") -> str:
        return f"{self.url}/{profile}"

    def openai(self, profile: str = "ok") -> str:
        return f"{self.url}/{profile}/v1"


MITM_COMMON = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--set", "flow_detail=0",
               "--set", "connection_strategy=lazy"]


class BareMitmdump(Process):
    """`mitmdump --mode reverse:<target>` with no addon, streaming bodies (the floor for a streaming addon)."""

    name = "bare mitmdump"

    def __init__(self, target: str):
        super().__init__([str(MITMDUMP), *MITM_COMMON, "--mode", f"reverse:{target}",
                          "--set", "stream_large_bodies=1"], "listening at")


def provider(name: str, base_url: str, kind: str = "anthropic") -> dict[str, Any]:
    return {"name": name, "type": kind, "base_url": base_url, "auth_value": f"bench-key-{name}",
            "big_model": "bench-model", "small_model": "bench-model"}


class Balancer(Process):
    """mitmdump running addon/balancer.py over the given providers, with the default settings (INFO: one log
    line per request) unless `settings` says otherwise."""

    name = "balancer"

    def __init__(self, providers: list[dict[str, Any]], **settings: Any):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        path = self.dir / "providers.yaml"
        path.write_text(yaml.safe_dump({"providers": providers,
                                        "settings": settings}))
        try:
            super().__init__([str(MITMDUMP), *MITM_COMMON, "-s", str(REPO / "addon" / "balancer.py"),
                              "--mode", "reverse:https://api.anthropic.com", "--set", f"providers={path}"],
                             "listening at")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_together(factories: list[Callable[[], Process]]) -> list[Process]:
    """Start processes side by side (a mitmdump spends a second or two importing); if one fails, the others are
    stopped and its error raised."""
    with ThreadPoolExecutor(max_workers=len(factories) or 1) as pool:
        futures = [pool.submit(factory) for factory in factories]
        wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    for future in futures:
        error = future.exception()
        if error is not None:
            for process in started:
                process.stop()
            raise error
    return started
