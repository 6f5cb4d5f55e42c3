"""scripts/cluster N: instances on consecutive ports sharing one local server; Ctrl-C stops everything."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from balancer_proc import providers_yaml
from benchkit.kv_server import server_binary
from fakes import FakeProvider, Status
from helpers import anthropic_provider

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here")


def consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            held = []
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    raise RuntimeError("no run of free ports")


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.slow
def test_cluster_starts_n_sharing_instances_and_stops_them_all_on_ctrl_c(tmp_path):
    with FakeProvider() as first, FakeProvider() as second:
        base = consecutive_free_ports(2)
        (tmp_path / "providers.yaml").write_text(providers_yaml(
            [anthropic_provider("first", first.url), anthropic_provider("second", second.url)],
            port=base, failure_cooldown=600,
        ))
        proc = subprocess.Popen([str(REPO / "scripts" / "cluster"), "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if "Ctrl-C stops them all" in line:
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert ready.wait(120), "\n".join(lines)
            text = "\n".join(lines)
            urls = re.findall(r"^instance \d: (http://\S+)$", text, re.M)
            assert urls == [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
            server_port = int(re.search(r"^shared state: redis://127\.0\.0\.1:(\d+)/0", text, re.M).group(1))

            first.then(Status(529))
            body = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
            answer = httpx.post(urls[0] + "/v1/messages", json=body, timeout=30)
            assert answer.headers["x-balancer-provider"] == "second"
            deadline = time.monotonic() + 30
            while True:  # the other instance hears of the 529
                providers = httpx.get(urls[1] + "/providers", timeout=10).json()
                if next(p for p in providers["providers"] if p["name"] == "first")["cooldown_remaining"] > 0:
                    break
                assert time.monotonic() < deadline, providers
                time.sleep(0.05)
            assert providers["shared_state"]["connected"] is True

            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(60) == 0
            reader.join(10)
            assert all(refuses(port) for port in (base, base + 1, server_port))
            assert "stopped every instance and the shared state server" in "\n".join(lines)
        finally:
            if proc.poll() is None:  # the script stops what it started on SIGTERM as on Ctrl-C
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
