"""The `providers` option: loads and reloads the providers file and holds the providers' health."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mitmproxy import ctx, exceptions

from .capabilities import Capabilities
from .config import (
    DEFAULT_PATH,
    DEFAULT_SOURCE,
    BalancerConfig,
    ConfigError,
    LoadedConfig,
    Settings,
    builtin_default,
    load_config,
)
from .health import HealthBoard
from .key_book import KeyBook
from .redact import Redactor
from .request_log import LogFile

if TYPE_CHECKING:
    from mitmproxy.addonmanager import Loader

log = logging.getLogger("balancer")

WATCH_INTERVAL = 1.0  # seconds between looks at the providers file

# mitmproxy options the balancer needs whatever the command line says.
REQUIRED_OPTIONS = {
    # Reverse mode's default ("eager") connects to the reverse target before any hook runs.
    "connection_strategy": "lazy",
}


class Providers:
    def __init__(self) -> None:
        self.board = HealthBoard()
        self.capabilities = Capabilities()  # what each provider was found not to accept
        # The providers' keys: rate-limit readings, use in the current windows, fingerprints.
        self.keys = KeyBook()
        self.loaded = LoadedConfig(config=builtin_default(), source=DEFAULT_SOURCE)
        # Set when the file could not be loaded at start-up: nothing is served until a reload succeeds.
        self.startup_error: str | None = None
        self._loaded_once = False
        self._seen: tuple[int, int, int] | None = None
        self._watcher: asyncio.Task | None = None
        self.log_file = LogFile()
        self.redact = Redactor()
        # Called after every configuration that takes effect (start-up and each reload).
        self.on_apply: list[Callable[[], None]] = []
        # The shared state's status for GET / and /providers (None: no shared_state; set by SharedState).
        self.shared_status: Callable[[], dict[str, Any] | None] = lambda: None

    @property
    def config(self) -> BalancerConfig:
        return self.loaded.config

    @property
    def settings(self) -> Settings:
        return self.loaded.config.settings

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "providers",
            str,
            "providers.yaml",
            "Path of the providers file. Without the file, a built-in default forwards to api.anthropic.com "
            "with the client's own credential.",
        )

    def configure(self, updated: set[str]) -> None:
        for name, value in REQUIRED_OPTIONS.items():
            if name in ctx.options and getattr(ctx.options, name) != value:
                ctx.options.update(**{name: value})
        if "providers" in updated:
            self._seen = _file_state(ctx.options.providers)
            try:
                self.apply(load_config(ctx.options.providers, required=ctx.options.providers != DEFAULT_PATH))
            except ConfigError as exc:
                if self._loaded_once:  # a later `set providers=...`: refuse it, keep what runs
                    raise exceptions.OptionsError(str(exc)) from None
                # At start-up, an error in the log makes mitmdump/mitmweb exit with it (no traceback).
                self.startup_error = str(exc)
                log.error("cannot load the providers file: %s", exc)

    async def running(self) -> None:
        self._seen = _file_state(ctx.options.providers)
        self._watcher = asyncio.create_task(self._watch_file())

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self.log_file.close()

    async def _watch_file(self) -> None:
        """Live reload: a change to the providers file is picked up within WATCH_INTERVAL seconds."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                self._check_file()
            except Exception:  # the watcher must outlive any surprise
                log.exception("watching the providers file failed")

    def _check_file(self) -> None:
        path = ctx.options.providers
        state = _file_state(path)
        if state == self._seen:
            return
        self._seen = state
        if state is None:
            log.warning("%s disappeared; the running configuration is kept", path)
            return
        try:
            self.reload()
        except ConfigError as exc:
            log.error("%s changed but cannot be used; the running configuration is kept: %s", path, exc)

    def reload(self) -> LoadedConfig:
        """Re-read the file. On error the running configuration is kept and ConfigError is raised."""
        self._seen = _file_state(ctx.options.providers)  # the watcher need not read this version again
        # A file that was loaded before and is gone now is an error, not a switch to the built-in default.
        required = ctx.options.providers != DEFAULT_PATH or self.loaded.source != DEFAULT_SOURCE
        loaded = load_config(ctx.options.providers, required=required)
        self.apply(loaded)
        return loaded

    def apply(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        settings = loaded.config.settings
        secrets = (
            [k.value for p in loaded.config.providers for k in p.keys] + settings.client_key_values
            + settings.admin_keys + url_secrets(settings.shared_state)
            + ([settings.key_fingerprint_secret] if settings.key_fingerprint_secret else [])
        )
        self.redact = Redactor(secrets)
        self.startup_error = None
        self._loaded_once = True
        for subject in self.keys.configure(loaded.config, settings.key_fingerprint_secret):
            self.board.forget(subject)  # a pool key's health is kept under its subject
        self.board.retain(
            [p.name for p in loaded.config.providers]
            + [subject for p in loaded.config.providers if p.is_pool for subject in p.key_subjects]
        )
        self.capabilities.retain(loaded.config.providers)
        self.board.forgive_auth_failures()
        logging.getLogger("balancer").setLevel(loaded.config.settings.log_level)
        if loaded.config.settings.log_level == "DEBUG" and "termlog_verbosity" in ctx.options:
            ctx.options.update(termlog_verbosity="debug")  # else mitmproxy's terminal hides DEBUG lines
        try:
            self.log_file.use(loaded.config.settings.log_file)
        except OSError as exc:
            log.error("cannot write the log file %s: %s", loaded.config.settings.log_file, exc)
        for noisy in ("httpx", "httpcore", "hpack"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        for warning in [*loaded.warnings, *file_safety_warnings(loaded.source, secrets)]:
            log.warning("%s: %s", loaded.source, warning)
        log.info("%s", describe(loaded))
        for listener in self.on_apply:
            listener()


def url_secrets(url: str | None) -> list[str]:
    """The password in a URL (as written and decoded), to be kept out of every log line."""
    password = urlsplit(url).password if url else None
    return [password, unquote(password)] if password else []


def file_safety_warnings(path: str, secrets: Iterable[str]) -> list[str]:
    """A providers file that holds credentials written out (not `${VAR}`s) must not be readable by other users."""
    try:
        mode = os.stat(path).st_mode
        if not mode & 0o077:
            return []
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return []
    if not any(secret and secret in text for secret in secrets):
        return []  # only references to the environment: nothing to hide
    return [f"the file is readable by other users (mode {mode & 0o777:o}) and holds credentials: chmod 600 it"]


def _file_state(path: str) -> tuple[int, int, int] | None:
    """What tells a changed file: modification time, size, inode (None when there is no file)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def describe(loaded: LoadedConfig) -> str:
    providers: Sequence = loaded.config.providers
    enabled = [p.name for p in providers if p.enabled]
    routes = [route.name for route in loaded.config.routes]
    return (
        f"providers from {loaded.source}: {len(enabled)} of {len(providers)} enabled"
        + (f" ({', '.join(enabled)})" if enabled else "")
        + (f"; routes: {', '.join(routes)} (then default)" if routes else "")
    )
