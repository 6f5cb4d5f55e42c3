"""Runs the real thing: `mitmdump -s addon/balancer.py` as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchkit.kv_server import KeyValueServer

REPO = Path(__file__).resolve().parent.parent
ADDON = REPO / "addon" / "balancer.py"
MITMDUMP = Path(sys.executable).parent / "mitmdump"
_LISTENING = re.compile(r"listening at (?:\w+://)?[^\s]*:(\d+)")


def providers_yaml(providers: list[dict[str, Any]], **settings: Any) -> str:
    return yaml.safe_dump({"providers": providers, "settings": settings}, sort_keys=False)


class BalancerProcess:
    def __init__(
        self,
        workdir: Path,
        providers_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.workdir = workdir
        self.providers_file = providers_file or workdir / "providers.yaml"
        self.extra_args = extra_args
        self.command = command  # instead of the default mitmdump command line
        self.env = env  # added to this process's environment
        self.log_lines: list[str] = []
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def run_to_exit(self, timeout: float = 60.0) -> int:
        """For a command expected to fail at start-up: its exit code (output in `log`)."""
        self.start_process()
        try:
            return self.wait_exit(timeout)
        finally:
            self.stop()

    def start(self, timeout: float = 60.0) -> BalancerProcess:
        """Starts mitmdump and waits until it listens; whatever goes wrong meanwhile (even a KeyboardInterrupt),
        the process is stopped before the exception leaves."""
        try:
            self.start_process()
            deadline = time.monotonic() + timeout
            assert self._proc is not None
            while not self._listening.wait(0.1):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mitmdump did not start listening; its output:\n{self.log}")
        except BaseException:
            self.stop()
            raise
        return self

    def start_process(self) -> None:
        cmd = self.command or [
            str(MITMDUMP), "-s", str(ADDON),
            "--mode", "reverse:https://api.anthropic.com",
            "--listen-host", "127.0.0.1", "--listen-port", "0",
            "--set", f"providers={self.providers_file}",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, **self.env} if self.env else None,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            self.log_lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._listening.set()

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self._proc
        code = self._proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return code

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._reader:
            self._reader.join(5)

    # -- helpers for tests ----------------------------------------------------------------------------------
    def write_providers(self, providers: list[dict[str, Any]], **settings: Any) -> None:
        self.providers_file.write_text(providers_yaml(providers, **settings))

    def reload(self) -> httpx.Response:
        return httpx.post(self.url + "/providers/reload", timeout=10)

    def use(self, providers: list[dict[str, Any]], **settings: Any) -> None:
        """Write the providers file and reload it; fails the test if the balancer rejects it."""
        self.write_providers(providers, **settings)
        response = self.reload()
        assert response.status_code == 200, response.text

    def provider_status(self, name: str) -> dict[str, Any]:
        providers = httpx.get(self.url + "/providers", timeout=10).json()["providers"]
        return next(p for p in providers if p["name"] == name)

    def __enter__(self) -> BalancerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def two_instances_and_a_server(root: Path) -> Iterator[tuple[KeyValueServer, list[BalancerProcess]]]:
    """A real key-value server and two balancers running on a placeholder provider (each test then `use`s its
    providers and the server); all of them stopped afterwards, whatever happens."""
    instances = [BalancerProcess(root / f"i{i}") for i in range(2)]
    with KeyValueServer() as kv:
        try:
            for instance in instances:
                instance.workdir.mkdir(parents=True, exist_ok=True)
                instance.write_providers([{"name": "placeholder", "base_url": "http://127.0.0.1:9", "auth_value": "x"}])
                instance.start()
            yield kv, instances
        finally:
            for instance in instances:
                instance.stop()
