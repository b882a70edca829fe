"""Configuration: ``config.toml`` defaults, ``MODELYARD_<SECTION>_<KEY>`` env vars, then overrides.

The shipped ``config.toml`` is the single list of keys: a key that is not in it is unknown, and
a value must have the type of the default it replaces. Problems raise :class:`ConfigError`
with one line naming the key, which the CLI prints before exiting.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config.toml"
ENV_PREFIX = "MODELYARD_"
# Env vars with the prefix that are not config keys.
_ENV_NOT_KEYS = {"MODELYARD_CONFIG"}

Config = dict[str, dict[str, Any]]


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid."""


def load_config(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Config:
    """Return the effective configuration.

    Layers, last wins: the defaults file (``path``, else ``$MODELYARD_CONFIG``, else the repo's
    ``config.toml``), environment variables, then ``overrides`` (what tests pass). Relative
    paths (SQLite file, artifact root) are resolved against the defaults file's directory so
    the server finds the same registry whatever its working directory.
    """
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("MODELYARD_CONFIG") or DEFAULT_CONFIG_FILE)
    try:
        with open(path, "rb") as fh:
            defaults = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    config = copy.deepcopy(defaults)
    _apply_env(config, environ)
    for section, values in (overrides or {}).items():
        if section not in config:
            raise ConfigError(f"unknown config section [{section}]")
        for key, value in values.items():
            config[section][key] = _check_value(defaults, section, key, value)
    _validate(config)
    _resolve_paths(config, path.resolve().parent)
    return config


def _apply_env(config: Config, environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in config or key not in config[section]:
            raise ConfigError(f"unknown config key in environment: {name}")
        config[section][key] = _check_value(config, section, key, _parse_env(config[section][key], raw, name))


def _parse_env(default: Any, raw: str, name: str) -> Any:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
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
    ("cache", "max_entries"),
    ("cache", "max_bytes"),
    ("upload", "max_bytes"),
    ("upload", "trial_timeout_seconds"),
    ("upload", "trial_memory_bytes"),
    ("upload", "max_expanded_bytes"),
    ("serving", "max_rows"),
    ("serving", "max_body_bytes"),
    ("batching", "max_rows"),
}
_CHOICES = {
    ("artifacts", "store"): {"local"},
    ("logging", "level"): {"DEBUG", "INFO", "WARNING", "ERROR"},
    ("auth", "anonymous_role"): {"none", "reader", "predictor", "uploader", "promoter", "admin"},
}


def _validate(config: Config) -> None:
    for section, key in _POSITIVE:
        if config[section][key] <= 0:
            raise ConfigError(f"[{section}] {key}: must be positive, got {config[section][key]}")
    if config["server"]["port"] > 65535:
        raise ConfigError(f"[server] port: must be at most 65535, got {config['server']['port']}")
    for (section, key), choices in _CHOICES.items():
        if config[section][key] not in choices:
            raise ConfigError(
                f"[{section}] {key}: must be one of {sorted(choices)}, got {config[section][key]!r}"
            )
    if config["batching"]["max_wait_ms"] < 0:
        raise ConfigError(f"[batching] max_wait_ms: must not be negative, got {config['batching']['max_wait_ms']}")
    unknown_reads = sorted(set(config["auth"]["private_reads"]) - {"artifacts", "events", "metrics"})
    if unknown_reads:
        raise ConfigError(f"[auth] private_reads: unknown {', '.join(map(repr, unknown_reads))}; "
                          "expected artifacts, events, metrics")
    for name in config["upload"]["extra_globals"]:
        if not isinstance(name, str) or "." not in name or "*" in name or name.endswith("."):
            raise ConfigError(f"[upload] extra_globals: {name!r} is not an exact module.name")
    if not config["database"]["url"]:
        raise ConfigError("[database] url: must not be empty")


def _resolve_paths(config: Config, base: Path) -> None:
    for section, key in (("artifacts", "root"), ("auth", "admin_token_file")):
        path = Path(config[section][key])
        config[section][key] = str(path if path.is_absolute() else base / path)
    url = config["database"]["url"]
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite:///:memory:":
        db_path = Path(url[len(prefix) :])
        if not db_path.is_absolute():
            config["database"]["url"] = prefix + str(base / db_path)
