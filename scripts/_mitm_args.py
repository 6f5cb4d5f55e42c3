"""Prints (one per line) the mitmproxy arguments scripts/serve and scripts/web add to the user's own.

Reverse mode to api.anthropic.com, lazy upstream connections, and the listen address from the providers
file's `settings.host`/`settings.port` -- each only where the user's arguments do not say otherwise; under mitmweb
(`BALANCER_TOOL=mitmweb`, scripts/web) also a flow list with the comment column, where each flow says which
provider served it. An unusable providers file is reported here, before mitmproxy starts.
"""

from __future__ import annotations

import importlib.util
import os
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


# mitmweb's default columns, then the comment: `served by backup (attempt 2 of 2) after main: HTTP 529 ...`,
# `attempt 1 of 2 for req 9ee6dd4e: ...`, `answered by the balancer`.
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")


def has_web_columns() -> bool:
    """mitmweb has the `web_columns` option (mitmproxy 11.1 and later; Python 3.11 gets 11.0.2)."""
    try:
        return importlib.util.find_spec("mitmproxy.tools.web.web_columns") is not None
    except ImportError:
        return False


def web_args(args: list[str]) -> list[str]:
    if _given(args, (), "web_columns") or not has_web_columns():
        return []
    return [arg for column in WEB_COLUMNS for arg in ("--set", f"web_columns={column}")]


def mitm_args(args: list[str], tool: str = "mitmdump") -> list[str]:
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
    if tool == "mitmweb":
        extra += web_args(args)
    return extra


if __name__ == "__main__":
    try:
        print("\n".join(mitm_args(sys.argv[1:], os.environ.get("BALANCER_TOOL", "mitmdump"))))
    except ConfigError as exc:
        # One line, whatever the number of problems (the addon logs the same error with one per line).
        print("error: " + str(exc).replace(":\n", ": ").replace("\n", "; "), file=sys.stderr)
        sys.exit(2)
