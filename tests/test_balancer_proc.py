"""The test harness's own promise: a process it starts is stopped even when start-up goes wrong."""

import subprocess
import sys
import threading

import pytest

from balancer_proc import BalancerProcess

# Never says it listens: start() waits for it until something gives up.
SILENT = [sys.executable, "-c", "import time; time.sleep(120)"]


class InterruptedWait(threading.Event):
    """A wait that is interrupted, as by Ctrl-C or a test timeout, while start() is waiting."""

    def wait(self, timeout: float | None = None) -> bool:
        raise KeyboardInterrupt


def test_a_process_that_never_listens_is_stopped(tmp_path) -> None:
    process = BalancerProcess(tmp_path, command=SILENT)
    with pytest.raises(RuntimeError, match="did not start listening"):
        process.start(timeout=0.5)
    assert process._proc is not None and process._proc.poll() is not None


def test_an_interrupt_during_start_up_stops_the_process(tmp_path) -> None:
    process = BalancerProcess(tmp_path, command=SILENT)
    process._listening = InterruptedWait()
    with pytest.raises(KeyboardInterrupt):
        process.start()
    assert process._proc is not None and process._proc.poll() is not None


def test_an_interrupt_while_the_key_value_server_starts_stops_it(tmp_path, monkeypatch) -> None:
    from benchkit import kv_server

    def interrupted(port: int) -> bool:  # Ctrl-C arrives while the starter waits for the server to answer
        raise KeyboardInterrupt

    monkeypatch.setattr(kv_server, "answers", interrupted)
    binary = tmp_path / "server"
    binary.write_text("#!/bin/sh\nexec sleep 120\n")
    binary.chmod(0o755)
    server = kv_server.KeyValueServer(binary=str(binary))
    launched: list[subprocess.Popen[bytes]] = []
    launch = server._launch

    def launch_and_note(timeout: float) -> None:
        try:
            launch(timeout)
        finally:
            launched.append(server.proc)  # type: ignore[arg-type]

    server._launch = launch_and_note  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert len(launched) == 1 and launched[0].poll() is not None
    assert server.proc is None


@pytest.mark.skipif(__import__("benchkit.kv_server").kv_server.server_binary() is None, reason="no valkey-server")
def test_a_key_value_server_whose_port_another_took_is_not_taken_for_ours() -> None:
    # Tests in parallel: two starters may choose the same free port; the one whose server could not bind it must
    # not talk to the other's server (their counts would mix).
    from benchkit.kv_server import KeyValueServer

    with KeyValueServer() as first:
        second = KeyValueServer(port=first.port)
        with pytest.raises(RuntimeError, match="did not start"):
            second.start(timeout=10)
        assert second.proc is None
