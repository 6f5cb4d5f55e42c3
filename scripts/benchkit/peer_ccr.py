"""claude-code-router (npm `@musistudio/claude-code-router`) as a peer for the benchmark, run on loopback.

`ensure_install()` puts the pinned package into `.bench/ccr` with `npm ci` from the committed package.json and
package-lock.json in `ccr/` beside this file (the registry is needed then, never at run time); it installs again
only when the lock changed. `RouterProxy` starts `node <package>/dist/cli.js start` with HOME set to a temporary
directory holding `.claude-code-router/config.json` (`"LOG": false`, no API key, one provider per route), waits
until it answers, and stops it and everything it started. Checked with strace: its only connections are to the
fake provider (and its own listening socket).

Routes are picked per request with the router's own `provider,model` syntax in the request's `model`; an
Anthropic-type provider goes through its `Anthropic` transformer (passthrough), an OpenAI-type provider through
its default OpenAI translation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import envs
from .processes import free_port, stop_session

HERE = Path(__file__).resolve().parent / "ccr"
INSTALL = envs.BENCH_DIR / "ccr"
PACKAGE = "@musistudio/claude-code-router"
MODEL = "claude-sonnet-4"

Progress = Callable[[str], None]


def cli_path(install: Path = INSTALL) -> Path:
    return install / "node_modules" / PACKAGE / "dist" / "cli.js"


def pinned_version() -> str:
    return json.loads((HERE / "package.json").read_text())["dependencies"][PACKAGE]


def ensure_install(progress: Progress, install: Path | None = None) -> Path:
    """`.bench/ccr` from the committed lock (npm ci, no install scripts); the path of the router's cli.js."""
    install = install or INSTALL
    lock = (HERE / "package.json").read_bytes() + (HERE / "package-lock.json").read_bytes()
    want = hashlib.sha256(lock).hexdigest()
    stamp = install / ".bench-setup"
    if cli_path(install).exists() and stamp.exists() and stamp.read_text() == want:
        return cli_path(install)
    if shutil.which("npm") is None:
        raise RuntimeError("claude-code-router needs node and npm (node >= 20) on PATH")
    progress(f"installing {PACKAGE} {pinned_version()} into {install} (once; log: {install / 'npm-ci.log'})")
    shutil.rmtree(install, ignore_errors=True)
    install.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / name, install / name)
    log = install / "npm-ci.log"
    with log.open("w") as out:
        done = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=install,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not cli_path(install).exists():
        raise RuntimeError(f"npm ci for {PACKAGE} failed (log: {log}):\n{envs.tail(log)}")
    stamp.write_text(want)
    return cli_path(install)


def endpoint(base_url: str, kind: str) -> str:
    """The full URL the router posts to: it takes an endpoint, not a base URL."""
    base = base_url.rstrip("/")
    return base + ("/v1/messages" if kind == "anthropic" else "/chat/completions")


def router_config(routes: dict[str, tuple[str, str]], port: int) -> dict[str, Any]:
    """The router's config.json: one provider per route name (`{name: (kind, base_url)}`), each serving MODEL;
    the first route is the default. Names are lower case: the router matches `provider,model` that way."""
    providers = []
    for name, (kind, base_url) in routes.items():
        entry: dict[str, Any] = {"name": name.lower(), "api_base_url": endpoint(base_url, kind),
                                 "api_key": "bench-dummy-key", "models": [MODEL]}
        if kind == "anthropic":
            entry["transformer"] = {"use": ["Anthropic"]}
        providers.append(entry)
    first = next(iter(routes)).lower()
    return {"LOG": False, "HOST": "127.0.0.1", "PORT": port, "NON_INTERACTIVE_MODE": True,
            "Providers": providers, "Router": {"default": f"{first},{MODEL}"}}


def model_for(route: str) -> str:
    """The request `model` that sends a request down `route`."""
    return f"{route.lower()},{MODEL}"


# Built from scratch, as for LiteLLM: nothing from the bench's environment (a proxy, NODE_OPTIONS) leaks in.
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR")


class RouterProxy:
    """claude-code-router on a free port of 127.0.0.1 with the given routes."""

    def __init__(self, routes: dict[str, tuple[str, str]], progress: Progress = lambda m: None):
        self.routes, self.progress = routes, progress
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.home: Path | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("claude-code-router is not started")
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        cli = ensure_install(self.progress)
        self.home = Path(tempfile.mkdtemp(prefix="bench-ccr-"))
        (self.home / ".claude-code-router").mkdir()
        self.port = free_port()
        (self.home / ".claude-code-router" / "config.json").write_text(
            json.dumps(router_config(self.routes, self.port), indent=1))
        env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ} | {
            "HOME": str(self.home), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self._log = self.home / "ccr.log"
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(["node", str(cli), "start"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.home, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"claude-code-router exited with code {self.proc.returncode} while starting")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.2)
        self._fail(f"claude-code-router did not listen within {timeout:.0f} s")

    def _fail(self, message: str) -> None:
        tail = envs.tail(self._log, 40) if self._log else ""
        self.stop()
        raise RuntimeError(f"{message}; last output:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_session(proc)  # and a worker the supervisor left behind in its session
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> RouterProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
