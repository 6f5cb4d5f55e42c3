"""Prints (one per line) the mitmproxy arguments scripts/serve and scripts/web add to the user's own.

Reverse mode to api.anthropic.com, lazy upstream connections, and the listen address from the providers
file's `settings.host`/`settings.port` -- each only where the user's arguments do not say otherwise.
An unusable providers file is reported here, before mitmproxy starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon.config import DEFAULT_PATH, ConfigError, load_config


def _given(args: list[str], flags: tuple[str, ...], option: str) -> bool:
    for i, arg in enumerate(args):
        if arg in flags or any(arg.startswith(f + "=") for f in flags if f.startswith("--")):
            return True
        if arg == "--set" and i + 1 < len(args) and args[i + 1].startswith(option + "="):
            return True
        if arg.startswith("--set=" + option + "="):
            return True
    return False


def _providers_path(args: list[str]) -> str | None:
    """The providers file the arguments name (the last `providers=` wins), None when they name none."""
    path = None
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--set" and i + 1 < len(args) else arg.removeprefix("--set=")
        if value.startswith("providers="):
            path = value.split("=", 1)[1]
    return path


def mitm_args(args: list[str]) -> list[str]:
    named = _providers_path(args)
    # A file that was named must exist: only without one does the built-in default serve.
    settings = load_config(named or DEFAULT_PATH, required=named is not None).config.settings
    extra: list[str] = []
    if not _given(args, ("--mode", "-m"), "mode"):
        extra += ["--mode", "reverse:https://api.anthropic.com"]
    if not _given(args, ("--listen-host",), "listen_host"):
        extra += ["--listen-host", settings.host]
    if not _given(args, ("--listen-port", "-p"), "listen_port"):
        extra += ["--listen-port", str(settings.port)]
    extra += ["--set", "connection_strategy=lazy"]
    return extra


if __name__ == "__main__":
    try:
        print("\n".join(mitm_args(sys.argv[1:])))
    except ConfigError as exc:
        # One line, whatever the number of problems (the addon logs the same error with one per line).
        print("error: " + str(exc).replace(":\n", ": ").replace("\n", "; "), file=sys.stderr)
        sys.exit(2)
