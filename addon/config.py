"""The providers file: schema, `${ENV}` substitution, validation and the built-in default.

Pure functions and pydantic models only; the mitmproxy side lives in `addon/providers.py`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .base_url import normalise_base_urls
from .client_keys import ClientKey, as_entry, clash, name_by_position
from .config_checks import Unset, sort_unset, unknown_keys
from .key_identity import key_identity, key_subject
from .prices import Price
from .route_config import Route, route_problems

# A value of "passthrough" in these places means "do not replace": the seed format's spelling.
PASSTHROUGH = "passthrough"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The providers file cannot be used; the message names the file, the key and the problem."""


class _Lenient(BaseModel):
    # Unknown keys are kept (and reported as warnings) so that files written for other versions still load.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, coerce_numbers_to_str=True)


class KeyConfig(_Lenient):
    """One credential of a provider's key pool, with its share of the traffic and its own limits."""

    value: str = Field(min_length=1, repr=False)  # a credential: never in a repr
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)  # requests per minute
    tpm: int | None = Field(default=None, gt=0)  # input + output tokens per minute
    max_concurrent: int | None = Field(default=None, gt=0)  # requests open at once (streams until they end)

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrent is not None


def _text_or_not(text_tag: str, other_tag: str) -> Discriminator:
    # Tagged unions: an error names the one shape the value has, not every shape it might have had.
    return Discriminator(lambda value: text_tag if isinstance(value, str) else other_tag)


# Tags of the unions below, left out of the locations in error messages.
_UNION_TAGS = ("credential-", "pool-key-")
PoolKey = Annotated[
    Annotated[str, Tag("pool-key-text")] | Annotated[KeyConfig, Tag("pool-key-entry")],
    _text_or_not("pool-key-text", "pool-key-entry"),
]
Credential = Annotated[
    Annotated[str, Tag("credential-text")] | Annotated[list[PoolKey], Tag("credential-pool")],
    _text_or_not("credential-text", "credential-pool"),
]


class ProviderConfig(_Lenient):
    name: str = Field(min_length=1)
    type: Literal["anthropic", "openai"] = "anthropic"
    base_url: str
    auth_type: Literal["api_key", "auth_token", "passthrough"] = "api_key"
    # One credential, or a pool of them (each a string or a KeyConfig): see `keys` and `with_key`.
    auth_value: Credential = Field(default="", repr=False)
    big_model: str | None = None
    small_model: str | None = None
    enabled: bool = True
    # Seed key: an HTTP(S) proxy for this provider's connections.
    proxy: str | None = None
    # Routing: lower `priority` numbers are tried first (ties keep file order); `weight` for strategy weighted.
    priority: int = 0
    weight: float = Field(default=1.0, gt=0)
    # Sent with every request to this provider (e.g. OpenRouter's HTTP-Referer / X-Title).
    extra_headers: dict[str, str] = Field(default_factory=dict)
    # OpenAI-type providers only: how the Chat Completions request is shaped for real-world providers.
    max_tokens_cap: int | None = Field(default=None, gt=0)  # e.g. 8192 for DeepSeek
    stream_options: bool = True  # send stream_options.include_usage (some providers reject it)
    reasoning: Literal["none", "reasoning_effort", "openrouter", "deepseek"] = "reasoning_effort"
    merge_system_messages: bool = False  # mid-conversation system messages go into the next user turn
    # What it can serve: a request with images never goes to a provider with `images: false` while another can
    # take it; nor one whose estimated input tokens exceed `max_context` (provider_fit.py).
    images: bool = True
    max_context: int | None = Field(default=None, gt=0)
    _keys: list[KeyConfig] = PrivateAttr(default_factory=list)
    # How its keys' identities are made: (settings.key_fingerprint_secret, shared state on); set by BalancerConfig.
    _identity_rule: tuple[str | None, bool] = PrivateAttr(default=(None, False))

    @cached_property
    def keys(self) -> list[KeyConfig]:
        """The provider's credentials, in file order (none for passthrough). Read on every request: kept once read
        (a private attribute costs a pydantic lookup each time)."""
        return self._keys

    @cached_property
    def is_pool(self) -> bool:
        """More than one credential: each has health of its own, and a refused or rate-limited one gives way to
        the next before any other provider."""
        return len(self.keys) > 1

    @cached_property
    def key_subjects(self) -> list[str]:
        """How the balancer knows each key (key_identity.py): the same key keeps its subject whatever its place."""
        secret, shared = self._identity_rule
        parts = (self.type, self.base_url, self.auth_type)
        return [key_subject(self.name, key_identity(parts, key.value, secret, shared)) for key in self._keys]

    @property
    def credential(self) -> str:
        """The credential requests carry: `auth_value` of a single-key provider, or of the key `with_key` chose."""
        if isinstance(self.auth_value, str):
            return self.auth_value
        return self._keys[0].value if self._keys else ""

    def with_key(self, index: int) -> ProviderConfig:
        """The provider as one request to its key `index` sees it (itself, when it has a single key)."""
        if not self.is_pool:
            return self
        return self.model_copy(update={"auth_value": self._keys[index].value})

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        try:
            _ = parts.port  # urlsplit checks the port only when it is read
        except ValueError:
            raise ValueError(f"has a port outside 1-65535: {value!r}") from None
        if parts.query or parts.fragment:
            raise ValueError(f"must not carry a query string or fragment, got {value!r}")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// proxy URL, got {urlsplit(value).scheme}://...")
        return value or None

    @field_validator("big_model", "small_model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        # Empty or "passthrough": forward the model the client asked for.
        if not value or value == PASSTHROUGH:
            return None
        return value

    @field_validator("auth_value", mode="before")
    @classmethod
    def _one_or_a_pool(cls, value: Any) -> Any:
        # A number in the file is a credential all the same (coerce_numbers_to_str does not reach into the union).
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _credential(self) -> ProviderConfig:
        if self.auth_value == PASSTHROUGH:  # seed spelling of "use the client's credential"
            self.auth_type = "passthrough"
        if self.auth_type == "passthrough":
            self.auth_value = ""
        elif not self.auth_value:
            raise ValueError(f"auth_value is required when auth_type is {self.auth_type!r}")
        if isinstance(self.auth_value, list):
            if any(isinstance(k, str) and not k for k in self.auth_value):
                raise ValueError("a key of the pool is empty (an unset ${VAR:-} perhaps)")
            keys = [KeyConfig(value=k) if isinstance(k, str) else k for k in self.auth_value]
            if len({key.value for key in keys}) != len(keys):
                raise ValueError("the same key is in the pool twice")
            self._keys = keys
        elif self.auth_value:
            self._keys = [KeyConfig(value=self.auth_value)]
        return self


SHARED_STATE_SCHEMES = ("redis", "rediss", "valkey", "valkeys")

# Claude model names offered by GET /v1/models by default (settings.models replaces the list).
DEFAULT_MODELS = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)


class Settings(_Lenient):
    failure_cooldown: float = Field(default=60.0, ge=0)
    request_timeout: float = Field(default=60.0, gt=0)
    stream_idle_timeout: float = Field(default=300.0, gt=0)
    # A stream's first content (its commit point) may come this long after the request was sent: a reasoning
    # model can think silently well past its headers. Never shorter than request_timeout.
    first_content_timeout: float = Field(default=120.0, gt=0)
    # A committed stream silent this many seconds gets an Anthropic `ping` event, so that clients' stall watchdogs
    # keep waiting (0: never). Pings are not provider activity: stream_idle_timeout still ends a dead stream.
    stream_keepalive: float = Field(default=10.0, ge=0)
    # Hedged first tokens: a message request whose provider has not produced its first content after this many
    # seconds is also sent to the next provider, and the first to produce content serves (None: never).
    hedge_after: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Repeated failures: each consecutive one multiplies the cooldown by `cooldown_growth`, up to `max_cooldown`.
    cooldown_growth: float = Field(default=2.0, ge=1)
    max_cooldown: float = Field(default=600.0, ge=0)
    # A provider whose own credential is refused (401/403) stays out this long, or until the next reload.
    auth_failure_cooldown: float = Field(default=3600.0, ge=0)
    # An error answer (5xx, 529, 429 without retry-after, a stream that fails) cools a provider down only when
    # failures are at least this share of its last 10 outcomes; 0: at its first failure.
    failure_rate: float = Field(default=0.5, ge=0, le=1)
    # Providers cooling down are still tried, after the others, soonest back first (try_soonest); or never
    # until their cooldown ends (refuse: with every provider cooling down, requests are refused at once).
    all_cooling: Literal["try_soonest", "refuse"] = "try_soonest"
    strategy: Literal["priority", "round_robin", "weighted", "random", "least_latency"] = "priority"
    # Keep one Claude Code session on one provider (its prompt cache keeps hitting). Default: on for every
    # strategy but priority (which is consistent anyway).
    affinity: Literal["session", "none"] | None = None
    # POST /v1/messages/count_tokens: local (tiktoken, offline), upstream (the first healthy Anthropic-type
    # provider's own count, exact), auto (upstream within count_tokens_timeout, else local).
    count_tokens: Literal["local", "upstream", "auto"] = "auto"
    count_tokens_timeout: float = Field(default=5.0, gt=0)
    # Who may use the balancer: keys clients present as x-api-key or Authorization: Bearer (none: anyone who
    # can reach it), each a plain key or {name, key, quotas} (client_keys.py). Admin endpoints need an admin key
    # when admin_keys is set, else a client key.
    client_keys: list[ClientKey] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list, repr=False)
    # USD per million tokens by model glob, before the built-in prices of Claude models (prices.py).
    prices: dict[str, Price] = Field(default_factory=dict)
    # Larger request bodies are refused with 413 (Claude Code requests with images stay well below).
    max_body_size: int = Field(default=32 * 1024 * 1024, gt=0)
    # Every provider attempt as a flow of its own (mitmweb, mitmproxy, -w): all | failed | none. Default: all under
    # mitmweb and mitmproxy and with -w, failed under mitmdump without -w.
    attempt_flows: Literal["all", "failed", "none"] | None = None
    # Bytes of each provider answer an attempt flow keeps (the rest is counted, not kept).
    attempt_body_limit: int = Field(default=256 * 1024, ge=0)
    # What GET /v1/models offers besides the providers' configured models (each is routed by its tier).
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # Also write the log as JSON lines (one object per line, request fields under "request") to this file.
    log_file: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Several instances, one view of the providers: a Redis or Valkey server (redis://[:PASSWORD@]HOST:PORT/DB,
    # rediss:// for TLS). Unset: every instance keeps its state to itself (nothing to install).
    shared_state: str | None = Field(default=None, repr=False)  # may hold a password
    # Prefix of every key and channel, so that several teams (or test runs) can use one server.
    shared_state_namespace: str = Field(default="balancer", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Seconds any one call to the server may take; slower counts as the server being gone.
    shared_state_timeout: float = Field(default=0.5, gt=0, le=10)
    # Key pools: a key whose remaining share of a rate limit (from the providers' rate-limit headers) is below
    # `headroom`, or whose subscription window is used above `headroom_utilization` (status allowed_warning), is
    # passed over until its reset while another key or provider can serve.
    headroom: float = Field(default=0.05, ge=0, le=1)
    headroom_utilization: float = Field(default=0.9, ge=0, le=1)
    # The secret behind the keys' fingerprints in /providers, /metrics and the log (a keyed hash: the fingerprint
    # of a guessed key cannot be checked without it). Unset: a random one per process (fingerprints then differ
    # between instances and restarts; `#1`, `#2`, ... do not). It also keys the keys' identities (key_identity.py):
    # instances sharing state should have the same one.
    key_fingerprint_secret: str | None = Field(default=None, repr=False)
    # Seed keys with no effect here, accepted so that seed files load unchanged.
    app_name: str | None = None
    app_version: str | None = None

    @property
    def first_content_wait(self) -> float:
        """Seconds from sending a request to its stream's first content (or its whole answer's deadline)."""
        return max(self.request_timeout, self.first_content_timeout)

    @property
    def affinity_in_force(self) -> str:
        if self.affinity is not None:
            return self.affinity
        return "none" if self.strategy == "priority" else "session"

    @field_validator("shared_state")
    @classmethod
    def _shared_state_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Messages never repeat the URL (it may hold a password); each says "got" so that none is appended.
        parts = urlsplit(value)
        if parts.scheme not in SHARED_STATE_SCHEMES:
            raise ValueError(
                f"must be a redis://, rediss://, valkey:// or valkeys:// URL, got {parts.scheme or 'no'} scheme"
            )
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("must have a port in 1-65535, got another")
        if not parts.hostname:
            raise ValueError("must name a host (redis://127.0.0.1:6379/0), got none")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"must end in a database number (/0), got {database[:20]!r}")
        return value

    @field_validator("admin_keys")
    @classmethod
    def _no_empty_keys(cls, keys: list[str]) -> list[str]:
        if any(not key for key in keys):
            raise ValueError("keys must not be empty (an unset ${VAR:-} perhaps)")
        return keys

    @field_validator("client_keys", mode="before")
    @classmethod
    def _plain_keys(cls, value: Any) -> Any:
        return [as_entry(item) for item in value] if isinstance(value, list) else value

    @field_validator("client_keys")
    @classmethod
    def _named_once(cls, clients: list[ClientKey]) -> list[ClientKey]:
        named = name_by_position(clients)
        problem = clash(named)
        if problem:
            raise ValueError(problem)
        return named

    @property
    def client_key_values(self) -> list[str]:
        return [client.key for client in self.client_keys]

    def client_named(self, name: str | None) -> ClientKey | None:
        return next((client for client in self.client_keys if client.name == name), None) if name else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class BalancerConfig(_Lenient):
    providers: list[ProviderConfig] = Field(min_length=1)
    settings: Settings = Field(default_factory=Settings)
    # Tried in order, the first whose conditions all hold takes the request (route_config.py).
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _passthrough_needs_open_access(self) -> BalancerConfig:
        if self.settings.client_keys:
            for provider in self.providers:
                if provider.auth_type == "passthrough":
                    raise ValueError(
                        f"provider {provider.name!r} uses auth_type passthrough (it forwards the client's own "
                        "credential), but with settings.client_keys the client's credential is a key for this "
                        "balancer, never to be sent to a provider: give the provider its own auth_value, or "
                        "remove client_keys"
                    )
        return self

    @model_validator(mode="after")
    def _key_identities(self) -> BalancerConfig:
        rule = (self.settings.key_fingerprint_secret, bool(self.settings.shared_state))
        for provider in self.providers:
            provider._identity_rule = rule
            provider.__dict__.pop("key_subjects", None)
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> BalancerConfig:
        seen: set[str] = set()
        for provider in self.providers:
            if provider.name in seen:
                raise ValueError(f"provider name {provider.name!r} is used twice; names must be unique")
            seen.add(provider.name)
        return self


@dataclass
class LoadedConfig:
    config: BalancerConfig
    source: str  # the file path, or "built-in default"
    warnings: list[str] = field(default_factory=list)


DEFAULT_SOURCE = "built-in default"
DEFAULT_PATH = "providers.yaml"  # the `providers` option's default: its absence means the built-in default


def builtin_default() -> BalancerConfig:
    """No providers file: a transparent proxy to Anthropic that uses the client's own credential."""
    return BalancerConfig(
        providers=[
            ProviderConfig(
                name="anthropic",
                type="anthropic",
                base_url="https://api.anthropic.com",
                auth_type="passthrough",
            )
        ]
    )


def substitute_env(data: Any, environ: dict[str, str] | os._Environ = os.environ, where: str = "",
                   unset: list[Unset] | None = None) -> Any:
    """Replace `${VAR}` (and `${VAR:-default}`) in every string value; an unset variable is an error, or, with
    `unset`, is added to it (where, name) and its reference left as written."""
    if isinstance(data, dict):
        return {k: substitute_env(v, environ, f"{where}.{k}" if where else str(k), unset) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, environ, f"{where}[{i}]", unset) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:  # like the shell: `:-` also covers a set but empty variable
            return default
        if value is None:
            if unset is not None:
                unset.append((where, name))
                return match.group(0)
            raise ConfigError(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")
        return value

    return _ENV_REF.sub(replace, data)


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """`('providers', 1, 'auth_type')` -> `providers[1] (name 'beta').auth_type`."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" (name {node['name']!r})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "top level"


# Where a file holds credentials: an error there never repeats the value it found.
_CREDENTIAL_PLACES = frozenset({"client_keys", "admin_keys", "auth_value"})


def format_validation_error(error: ValidationError, data: Any) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith(("function-", *_UNION_TAGS)))
        )
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required key is missing"
        elif any(part in _CREDENTIAL_PLACES for part in loc):
            pass  # what was written there may be a key (under a misspelt name, in the wrong place): never repeated
        elif "input" in item and "got " not in message and item["type"] not in ("model_type", "list_type", "dict_type"):
            message += f" (got {item['input']!r})" if not isinstance(item["input"], (dict, list)) else ""
        lines.append(f"{_location(loc, data)}: {message}")
    return "\n".join(lines)


def parse_config(text: str, source: str, environ: dict[str, str] | os._Environ = os.environ) -> LoadedConfig:
    """Validate the text of a providers file. Raises ConfigError with a message meant for a person."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty; it needs a 'providers' list")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'providers' list, got {type(data).__name__}")
    unset: list[Unset] = []
    try:
        data = substitute_env(data, environ, unset=unset)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML refers to itself (a recursive alias) or is nested too deeply") from None
    unset_error, warnings = sort_unset(unset, data)
    unknown = unknown_keys(data, BalancerConfig.model_fields, Settings.model_fields, ProviderConfig.model_fields)
    if unset_error is not None:
        raise ConfigError(f"{source}: {unset_error}" + "".join(f"\n{line}" for line in unknown)) from None
    try:
        config = BalancerConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, data) + "".join(f"\n{line}" for line in unknown)
        raise ConfigError(f"{source}: invalid configuration:\n{problems}") from None
    client_names = [client.name for client in config.settings.client_keys]
    route_errors, route_warnings = route_problems(config.routes, config.providers, client_names)
    if route_errors:
        raise ConfigError(f"{source}: invalid routes:\n" + "\n".join(route_errors))
    warnings = unknown + warnings + route_warnings + normalise_base_urls(config.providers)
    return LoadedConfig(config=config, source=source, warnings=warnings)


def load_config(
    path: str | Path, environ: dict[str, str] | os._Environ = os.environ, required: bool = False
) -> LoadedConfig:
    """Read the providers file; a missing file gives the built-in default, unless the file is `required` (a
    path the user named, or a file that was there before): then it is an error."""
    path = Path(path)
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: no such file (the built-in default is used only when no file was named)")
        return LoadedConfig(config=builtin_default(), source=DEFAULT_SOURCE)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc}") from None
    return parse_config(text, str(path), environ)
