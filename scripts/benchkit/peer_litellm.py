"""LiteLLM's proxy as a peer for the benchmark: installed into its own virtual environment, run on loopback.

`ensure_env()` creates `.bench/litellm-venv` with the interpreter that runs the bench and installs LiteLLM's
proxy there from the hash-pinned `litellm-requirements.lock` next to this file; it installs again only when the
lock or the interpreter changed. `LiteLLMProxy` writes a config that sends the model `claude-sonnet-4` (and any
other model name) to a fake Anthropic-style provider, starts `litellm` on a free port of 127.0.0.1 with
everything that would reach the internet switched off, and waits until it answers. Checked with strace: from start
to stop its only connections are to the fake provider. Several routes (Anthropic-type and OpenAI-type providers,
each under its own model name) share one proxy.

LiteLLM is left at its defaults otherwise. With its default retries (2) it holds a stream's opening events
(`message_start`, `content_block_start`) until the first content delta, much like our balancer's commit point,
but passes a `ping` on at once (ours holds it too); after the first delta, events pass through as they arrive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import envs, procstat
from .processes import free_port, stop_session

HERE = Path(__file__).resolve().parent
LOCK = HERE / "litellm-requirements.lock"

Progress = Callable[[str], None]


def ensure_env(progress: Progress) -> Path:
    """`.bench/litellm-venv` from the lock (installed only when the lock or the interpreter changed); its python."""
    return envs.ensure_env("litellm-venv", LOCK, progress)


def installed_version(python: Path) -> str:
    """The version of the `litellm` distribution installed for `python`."""
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# The proxy's environment is built from scratch (plus PATH, HOME and locale) so that nothing set in the bench's
# own environment (a DATABASE_URL, a master key, an HTTP proxy, debug logging) changes what is measured.
QUIET_OFFLINE_ENV: dict[str, str] = {
    # Bundled copies instead of downloads: the model cost map is fetched from GitHub at import, the Anthropic
    # beta-header table on the first /v1/messages request (which would stall that request without network).
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    # Only admin/UI routes fetch these, but none of them should ever leave the machine.
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "HF_HUB_OFFLINE": "1",
    # Usage telemetry: vetoed outright (it has no endpoint or database to report to here anyway).
    "LITELLM_TELEMETRY_DISABLED": "True",
    # ERROR also sets uvicorn's level, which silences its access log: no line per request.
    "LITELLM_LOG": "ERROR",
    # No master key, so no per-request key check: our balancer does not authenticate its clients either.
    # LiteLLM refuses to start without a key unless told that this is deliberate.
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    # Requests to the fake on loopback never go through a proxy.
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
    # An OpenAI-type provider is spoken to through Chat Completions, as the balancer does (LiteLLM's default for
    # /v1/messages would be OpenAI's Responses API, which the fake, like many OpenAI-compatible providers, lacks).
    "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "True",
}
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
MODEL = "claude-sonnet-4"


def proxy_config(routes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """LiteLLM config: each route name (`{name: (kind, base_url)}`, kind "anthropic" or "openai") is a model name
    that goes to that provider as `claude-sonnet-4`, through LiteLLM's translation for an OpenAI-type one; any
    other model name goes to the first route."""
    def params(kind: str, base_url: str, model: str) -> dict[str, str]:
        return {"model": f"{kind}/{model}", "api_base": base_url, "api_key": "bench-dummy-key"}

    models = [{"model_name": name, "litellm_params": params(kind, url, MODEL)} for name, (kind, url) in routes.items()]
    kind, url = next(iter(routes.values()))
    models.append({"model_name": "*", "litellm_params": params(kind, url, "*")})
    return {"model_list": models}


def _listener_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (state 0A in /proc/net/tcp and tcp6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(cols[9])
    return inodes


def _listening_pid(root: int, port: int) -> int | None:
    """The process under `root` that holds the socket listening on `port` (the one that serves requests)."""
    wanted = {f"socket:[{inode}]" for inode in _listener_inodes(port)}
    for pid in reversed(procstat.tree(root)):  # a worker child, if there is one, before its supervisor
        try:
            if any(os.readlink(fd) in wanted for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    return None


class LiteLLMProxy:
    """`litellm` (the proxy) on a free port of 127.0.0.1, routing Anthropic `/v1/messages` by model name to the
    providers of `routes` (see proxy_config)."""

    def __init__(self, routes: dict[str, tuple[str, str]] | str, progress: Progress = lambda m: None):
        self.routes = {"default": ("anthropic", routes.rstrip("/"))} if isinstance(routes, str) else routes
        self.progress = progress
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self._python: Path | None = None
        self._server_pid: int | None = None
        self._version: str | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root_pid(self) -> int:
        """The `litellm` process, the root of everything it started (whose CPU time is its cost)."""
        if self.proc is None:
            raise RuntimeError("LiteLLM proxy is not started")
        return self.proc.pid

    @property
    def pid(self) -> int:
        """The process that serves requests (with one uvicorn worker: the `litellm` process itself)."""
        if self._server_pid is None:
            raise RuntimeError("LiteLLM proxy is not started")
        return self._server_pid

    def version(self) -> str:
        """The installed litellm version (installs the environment first if needed)."""
        if self._version is None:
            self._version = installed_version(self._python or ensure_env(self.progress))
        return self._version

    def start(self, timeout: float = 120) -> None:
        """Install if needed, start the proxy and wait until /health/readiness answers 200."""
        self._python = ensure_env(self.progress)
        self.dir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
        config = self.dir / "config.yaml"
        config.write_text(json.dumps(proxy_config(self.routes), indent=2))  # JSON is valid YAML
        self.port = free_port()
        env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ} | QUIET_OFFLINE_ENV
        args = [str(self._python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                "--port", str(self.port),
                # One worker: our balancer is one process on one core, so both get the same share of the
                # machine (2 cores, one of which the load generator and the fake need).
                "--num_workers", "1"]
        self.progress(f"starting LiteLLM proxy {self.version()} on {self.url}")
        self._log = self.dir / "litellm.log"
        with self._log.open("wb") as log:
            # cwd: the temp dir, so that no .env file in the bench's working directory is picked up.
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, env=env, start_new_session=True)
        self._wait_ready(timeout)
        self._server_pid = _listening_pid(self.proc.pid, self.port) or self.proc.pid

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"LiteLLM proxy exited with code {self.proc.returncode} while starting")
            try:
                with opener.open(f"{self.url}/health/readiness", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self._fail(f"LiteLLM proxy did not get ready within {timeout:.0f} s")

    def _fail(self, message: str) -> None:
        tail = envs.tail(self._log, 40) if self._log else ""
        self.stop()
        raise RuntimeError(f"{message}; last output:\n{tail}")

    def stop(self) -> None:
        """Terminate the proxy (and anything it started), kill it if it does not exit, remove its temp dir."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_session(proc)  # and a worker the supervisor left behind in its session
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LiteLLMProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
