"""scripts/benchkit: the separate environments and the LiteLLM peer's set-up (no download: an empty lock)."""

from __future__ import annotations

import subprocess

import pytest

from benchkit import envs, peer_litellm
from benchkit.processes import FakeProvider

pytestmark = pytest.mark.bench  # not in the default run; CI runs them (pyproject.toml)


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "BENCH_DIR", tmp_path / ".bench")
    return tmp_path / ".bench"


def test_env_is_created_once_and_again_only_when_the_lock_changes(bench_dir, tmp_path):
    lock = tmp_path / "empty.lock"
    lock.write_text("# nothing pinned\n")
    said: list[str] = []
    python = envs.ensure_env("probe", lock, said.append)
    assert python == bench_dir / "probe" / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True,
                          text=True).stdout.strip() == str(bench_dir / "probe")
    assert len(said) == 1 and "probe" in said[0]
    envs.ensure_env("probe", lock, said.append)
    assert len(said) == 1  # up to date: nothing done
    lock.write_text("# changed\n")
    envs.ensure_env("probe", lock, said.append)
    assert len(said) == 2


def test_failed_install_names_its_log(bench_dir, tmp_path):
    lock = tmp_path / "bad.lock"
    lock.write_text("this is not a requirement ===\n")
    with pytest.raises(RuntimeError, match=r"pip-install\.log"):
        envs.ensure_env("broken", lock, lambda _m: None)
    # No stamp was written, so the next run tries again instead of trusting a half-made environment.
    assert not (bench_dir / "broken" / ".bench-setup").exists()


def test_litellm_config_routes_each_model_name_to_its_provider_and_the_rest_to_the_first():
    config = peer_litellm.proxy_config({"anthropic-ok": ("anthropic", "http://127.0.0.1:9/ok"),
                                        "openai-ok": ("openai", "http://127.0.0.1:9/ok/v1")})
    routes = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert routes["anthropic-ok"] == {"model": "anthropic/claude-sonnet-4", "api_base": "http://127.0.0.1:9/ok",
                                      "api_key": "bench-dummy-key"}
    assert routes["openai-ok"]["model"] == "openai/claude-sonnet-4"  # LiteLLM translates to Chat Completions
    assert routes["openai-ok"]["api_base"] == "http://127.0.0.1:9/ok/v1"
    assert routes["*"] == {**routes["anthropic-ok"], "model": "anthropic/*"}


def test_the_serving_process_is_found_by_its_listening_socket():
    with FakeProvider() as fake:
        assert peer_litellm._listening_pid(fake.pid, fake.port) == fake.pid
        assert peer_litellm._listening_pid(fake.pid, fake.port + 1 if fake.port < 65535 else 1) is None
