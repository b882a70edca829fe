"""Configuration: the packaged defaults, a config file of the user's, ``MODELYARD_<SECTION>_<KEY>``
env vars, then overrides.

The packaged ``config.toml`` (``modelyard/config.toml``, the checkout's top-level one) is the
single list of keys: a key that is not in it is unknown, and a value must have the type of the
default it replaces. Problems raise :class:`ConfigError` with one line naming the key, which
the CLI prints before exiting. The result is :class:`Settings`: frozen, typed sections, read
once at start; the app factory hands each part what it needs (the registry's and serving's
domains never read the configuration themselves).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.registry.auth import PRIVATE_READS, ROLES
from modelyard.web.body import truth

DEFAULT_CONFIG_FILE = Path(__file__).parent / "config.toml"
ENV_PREFIX = "MODELYARD_"
CONFIG_FILE_ENV = "MODELYARD_CONFIG"
# Env vars with the prefix that are not config keys.
CLIENT_ENV = frozenset({"MODELYARD_URL", "MODELYARD_TOKEN"})  # modelyard.client's, not the server's
_ENV_NOT_KEYS = {CONFIG_FILE_ENV, *CLIENT_ENV}
# Settings holding a filesystem path (a SQLite URL counts): a relative one is resolved when read.
_PATH_KEYS = (("artifacts", "root"), ("auth", "admin_token_file"), ("database", "url"), ("cache", "mapped_root"))

Config = dict[str, dict[str, Any]]


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid."""


@dataclass(frozen=True)
class ServerSettings:
    engine: str
    host: str
    port: int
    workers: int
    threads: int
    backpressure: int
    timeout: int


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int
    max_overflow: int
    pool_timeout: float
    pool_recycle: int
    connect_timeout: int
    echo: bool


@dataclass(frozen=True)
class ArtifactSettings:
    store: str
    root: str


@dataclass(frozen=True)
class CacheSettings:
    max_entries: int
    max_bytes: int
    preload_aliases: tuple[str, ...]
    mapped: bool
    mapped_root: str
    mapped_min_bytes: int


@dataclass(frozen=True)
class UploadSettings:
    max_bytes: int
    trial_timeout_seconds: float
    trial_memory_bytes: int
    max_expanded_bytes: int
    extra_globals: tuple[str, ...]


@dataclass(frozen=True)
class AuthSettings:
    anonymous_role: str
    admin_token_file: str
    protected_aliases: tuple[str, ...]
    private_reads: tuple[str, ...]


@dataclass(frozen=True)
class ServingSettings:
    default_model: str
    max_rows: int
    max_body_bytes: int
    seed: bool


@dataclass(frozen=True)
class BatchingSettings:
    models: tuple[str, ...]
    max_rows: int
    max_wait_ms: float


@dataclass(frozen=True)
class ShadowSettings:
    max_queue: int
    flush_seconds: float


@dataclass(frozen=True)
class AliasSettings:
    replay: tuple[str, ...]
    second_approver: tuple[str, ...]
    approval_ttl_seconds: int


@dataclass(frozen=True)
class WebhookSettings:
    allow_private: bool
    timeout_seconds: float
    max_attempts: int
    backoff_seconds: float
    poll_seconds: float


@dataclass(frozen=True)
class ObserveSettings:
    reference_max_rows: int
    max_categories: int
    sample_rate: float
    count_bins: bool
    logged_rows: int
    max_queue: int
    flush_seconds: float
    retention_days: int
    min_samples: int


@dataclass(frozen=True)
class LoggingSettings:
    level: str


@dataclass(frozen=True)
class Settings:
    """The effective configuration, one typed section per ``config.toml`` table."""

    server: ServerSettings
    database: DatabaseSettings
    artifacts: ArtifactSettings
    cache: CacheSettings
    upload: UploadSettings
    auth: AuthSettings
    serving: ServingSettings
    batching: BatchingSettings
    shadow: ShadowSettings
    aliases: AliasSettings
    webhooks: WebhookSettings
    observe: ObserveSettings
    logging: LoggingSettings

    @classmethod
    def from_tables(cls, config: Config) -> Settings:
        sections = {}
        for section in dataclasses.fields(cls):
            values = {key: tuple(v) if isinstance(v, list) else v for key, v in config[section.name].items()}
            sections[section.name] = _SECTIONS[section.name](**values)
        return cls(**sections)

    def as_tables(self) -> Config:
        """``{section: {key: value}}``, lists as lists: what ``modelyard config`` prints."""
        return {section.name: {key: list(v) if isinstance(v, tuple) else v
                               for key, v in dataclasses.asdict(getattr(self, section.name)).items()}
                for section in dataclasses.fields(self)}


_SECTIONS: dict[str, Any] = {
    "server": ServerSettings, "database": DatabaseSettings, "artifacts": ArtifactSettings, "cache": CacheSettings,
    "upload": UploadSettings, "auth": AuthSettings, "serving": ServingSettings, "batching": BatchingSettings,
    "shadow": ShadowSettings, "aliases": AliasSettings, "webhooks": WebhookSettings,
    "observe": ObserveSettings,
    "logging": LoggingSettings,
}


def load_config(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    path: str | os.PathLike[str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Return the effective configuration.

    Layers, last wins: the packaged defaults; a config file (``path``, else
    ``$MODELYARD_CONFIG``) holding only the keys it changes; environment variables; then
    ``overrides`` (what tests pass). Relative paths (SQLite file, artifact root, admin token
    file) in the config file resolve against that file's directory; every other relative
    path against the working directory (``cwd``), as ``mlflow server`` keeps ``./mlruns``:
    ``modelyard serve`` in an empty directory keeps its registry there.
    """
    environ = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    defaults = _read_toml(DEFAULT_CONFIG_FILE)
    config = copy.deepcopy(defaults)
    user_file = path or environ.get(CONFIG_FILE_ENV)
    if user_file:
        user_path = Path(user_file)
        changes = _read_toml(user_path)
        for section, values in changes.items():
            if section not in config or not isinstance(values, dict):
                raise ConfigError(f"{user_path}: unknown config section [{section}]")
            for key, value in values.items():
                config[section][key] = _check_value(defaults, section, key, value)
        _resolve_paths(config, user_path.resolve().parent, only=changes)
    _apply_env(config, environ)
    for section, values in (overrides or {}).items():
        if section not in config:
            raise ConfigError(f"unknown config section [{section}]")
        for key, value in values.items():
            config[section][key] = _check_value(defaults, section, key, value)
    _validate(config)
    _resolve_paths(config, base)
    return Settings.from_tables(config)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _apply_env(config: Config, environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in config:
            # Not one of ours (another tool's variable that shares the prefix): said, not fatal.
            logging.getLogger("modelyard").warning("ignoring %s: modelyard has no config section [%s]", name, section)
            continue
        if key not in config[section]:  # a section of ours: a misspelt key must not pass unseen
            raise ConfigError(f"unknown config key in environment: {name}")
        config[section][key] = _check_value(config, section, key, _parse_env(config[section][key], raw, name))


def _parse_env(default: Any, raw: str, name: str) -> Any:
    try:
        if isinstance(default, bool):
            flag = truth(raw)
            if flag is None:
                raise ValueError(raw)
            return flag
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return [item.strip() for item in raw.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{name}: expected {type(default).__name__}, got {raw!r}") from None
    return raw


def _check_value(config: Config, section: str, key: str, value: Any) -> Any:
    if key not in config.get(section, {}):
        raise ConfigError(f"unknown config key [{section}] {key}")
    default = config[section][key]
    expected = type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(
            f"[{section}] {key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


_POSITIVE = {
    ("server", "port"),
    ("server", "workers"),
    ("server", "threads"),
    ("server", "timeout"),
    ("database", "pool_size"),
    ("database", "pool_timeout"),
    ("database", "pool_recycle"),
    ("database", "connect_timeout"),
    ("cache", "max_entries"),
    ("cache", "max_bytes"),
    ("cache", "mapped_min_bytes"),
    ("upload", "max_bytes"),
    ("upload", "trial_timeout_seconds"),
    ("upload", "trial_memory_bytes"),
    ("upload", "max_expanded_bytes"),
    ("serving", "max_rows"),
    ("serving", "max_body_bytes"),
    ("batching", "max_rows"),
    ("shadow", "max_queue"),
    ("shadow", "flush_seconds"),
    ("aliases", "approval_ttl_seconds"),
    ("webhooks", "timeout_seconds"),
    ("webhooks", "max_attempts"),
    ("webhooks", "backoff_seconds"),
    ("webhooks", "poll_seconds"),
    ("observe", "reference_max_rows"),
    ("observe", "max_categories"),
    ("observe", "logged_rows"),
    ("observe", "max_queue"),
    ("observe", "flush_seconds"),
    ("observe", "retention_days"),
    ("observe", "min_samples"),
}
_CHOICES = {
    ("server", "engine"): {"granian", "gunicorn"},
    ("artifacts", "store"): {"local", "database"},
    ("logging", "level"): {"DEBUG", "INFO", "WARNING", "ERROR"},
    ("auth", "anonymous_role"): {"none", *ROLES},
}


def _validate(config: Config) -> None:
    for section, key in _POSITIVE:
        if config[section][key] <= 0:
            raise ConfigError(f"[{section}] {key}: must be positive, got {config[section][key]}")
    if not 0 <= config["observe"]["sample_rate"] <= 1:
        raise ConfigError(f"[observe] sample_rate: must be from 0 to 1, got {config['observe']['sample_rate']}")
    if config["server"]["port"] > 65535:
        raise ConfigError(f"[server] port: must be at most 65535, got {config['server']['port']}")
    for (section, key), choices in _CHOICES.items():
        if config[section][key] not in choices:
            raise ConfigError(
                f"[{section}] {key}: must be one of {sorted(choices)}, got {config[section][key]!r}"
            )
    if config["database"]["max_overflow"] < 0:
        raise ConfigError(f"[database] max_overflow: must not be negative, got {config['database']['max_overflow']}")
    if config["server"]["backpressure"] < 0:
        raise ConfigError(f"[server] backpressure: must not be negative, got {config['server']['backpressure']}")
    if config["batching"]["max_wait_ms"] < 0:
        raise ConfigError(f"[batching] max_wait_ms: must not be negative, got {config['batching']['max_wait_ms']}")
    unknown_reads = sorted(set(config["auth"]["private_reads"]) - set(PRIVATE_READS))
    if unknown_reads:
        raise ConfigError(f"[auth] private_reads: unknown {', '.join(map(repr, unknown_reads))}; "
                          f"expected {', '.join(PRIVATE_READS)}")
    for name in config["upload"]["extra_globals"]:
        if not isinstance(name, str) or "." not in name or "*" in name or name.endswith("."):
            raise ConfigError(f"[upload] extra_globals: {name!r} is not an exact module.name")
    if not config["database"]["url"]:
        raise ConfigError("[database] url: must not be empty")


def _resolve_paths(config: Config, base: Path, only: Mapping[str, Any] | None = None) -> None:
    """Make the relative paths of ``config`` absolute against ``base`` (of the keys ``only``
    names, when given)."""
    for section, key in _PATH_KEYS:
        if only is not None and key not in only.get(section, {}):
            continue
        value = config[section][key]
        if section == "database":
            prefix = "sqlite:///"
            if value.startswith(prefix) and value != "sqlite:///:memory:":
                db_path = Path(value[len(prefix):])
                if not db_path.is_absolute():
                    config[section][key] = prefix + str(base / db_path)
            continue
        path = Path(value)
        config[section][key] = str(path if path.is_absolute() else base / path)
