import re
from pathlib import Path

import pytest

from modelyard.config import DEFAULT_CONFIG_FILE, ConfigError, load_config


def test_defaults_come_from_config_toml() -> None:
    config = load_config(environ={})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.serving.default_model == "iris"
    assert config.cache.preload_aliases == ("production",)


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    config = load_config(environ={}, cwd=tmp_path)
    assert config.database.url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert config.artifacts.root == str(tmp_path / "artifacts")
    assert config.auth.admin_token_file == str(tmp_path / "admin.token")


def test_a_config_file_holds_only_what_it_changes_and_its_paths_are_its_own(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "modelyard.toml").write_text('[server]\nport = 9100\n[artifacts]\nroot = "blobs"\n')
    config = load_config(environ={"MODELYARD_CONFIG": str(etc / "modelyard.toml")}, cwd=tmp_path / "work")
    assert config.server.port == 9100
    assert config.server.host == "127.0.0.1"  # the packaged default
    assert config.artifacts.root == str(etc / "blobs")
    assert config.database.url == f"sqlite:///{tmp_path / 'work' / 'registry.db'}"


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nport = 'x'\n", "[server] port: expected int"),
    ("[nope]\nkey = 1\n", "unknown config section [nope]"),
    ("[server]\nnope = 1\n", "unknown config key [server] nope"),
    ("[server\n", "is not valid TOML"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path=tmp_path / "bad.toml", environ={})


def test_the_defaults_ship_inside_the_package() -> None:
    import modelyard

    assert DEFAULT_CONFIG_FILE.parent == Path(modelyard.__file__).parent
    assert DEFAULT_CONFIG_FILE.read_text().startswith("# modelyard defaults")


def test_env_overrides_with_types() -> None:
    config = load_config(environ={
        "MODELYARD_SERVER_PORT": "9000",
        "MODELYARD_DATABASE_ECHO": "true",
        "MODELYARD_CACHE_PRELOAD_ALIASES": "production, staging",
        "MODELYARD_SERVING_MAX_BODY_BYTES": "1024",
    })
    assert config.server.port == 9000
    assert config.database.echo is True
    assert config.cache.preload_aliases == ("production", "staging")
    assert config.serving.max_body_bytes == 1024


def test_overrides_win_over_env() -> None:
    config = load_config({"server": {"port": 7000}}, environ={"MODELYARD_SERVER_PORT": "9000"})
    assert config.server.port == 7000


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert load_config({"database": {"url": url}}, environ={}).database.url == url


@pytest.mark.parametrize(
    "environ, overrides, fragment",
    [
        ({"MODELYARD_SERVER_PROT": "1"}, None, "MODELYARD_SERVER_PROT"),
        ({"MODELYARD_SERVER_PORT": "eighty"}, None, "MODELYARD_SERVER_PORT"),
        ({"MODELYARD_DATABASE_ECHO": "perhaps"}, None, "MODELYARD_DATABASE_ECHO"),
        ({}, {"server": {"prot": 1}}, "[server] prot"),
        ({}, {"nope": {"x": 1}}, "[nope]"),
        ({}, {"server": {"port": "8080"}}, "[server] port"),
        ({}, {"server": {"port": True}}, "[server] port"),
        ({}, {"server": {"port": 0}}, "[server] port"),
        ({}, {"server": {"port": 70000}}, "[server] port"),
        ({}, {"serving": {"max_rows": -1}}, "[serving] max_rows"),
        ({}, {"artifacts": {"store": "s3"}}, "[artifacts] store"),
        ({}, {"logging": {"level": "LOUD"}}, "[logging] level"),
        ({}, {"server": {"engine": "uwsgi"}}, "[server] engine: must be one of ['granian', 'gunicorn']"),
        ({"MODELYARD_SERVER_ENGINE": "waitress"}, None, "[server] engine"),
        ({}, {"server": {"backpressure": -1}}, "[server] backpressure: must not be negative"),
    ],
)
def test_bad_keys_and_values_name_the_key(environ: dict[str, str], overrides: dict | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides, environ=environ)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(path=tmp_path / "absent.toml", environ={})


def test_cli_prints_one_line_for_a_bad_config(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from modelyard.cli import main

    monkeypatch.setenv("MODELYARD_SERVER_PORT", "eighty")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MODELYARD_SERVER_PORT" in err


def test_cli_config_hides_database_password(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from modelyard.cli import main

    monkeypatch.setenv("MODELYARD_DATABASE_URL", "postgresql+psycopg://user:s3cret@db/modelyard")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "user:***@db" in out


def test_settings_are_typed_and_hold_every_key_of_the_defaults_file() -> None:
    import dataclasses
    import tomllib

    settings = load_config(environ={})
    with open(DEFAULT_CONFIG_FILE, "rb") as fh:
        defaults = tomllib.load(fh)
    tables = settings.as_tables()
    assert {section: set(values) for section, values in tables.items()} == {
        section: set(values) for section, values in defaults.items()}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]
    assert isinstance(settings.batching.max_wait_ms, float) and isinstance(settings.auth.private_reads, tuple)


def test_variables_of_no_section_of_ours_pass_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The client's MODELYARD_URL and MODELYARD_TOKEN, and another tool's MODELYARD_* variables,
    must not stop a server; a misspelt key of a section of ours still does."""
    with caplog.at_level("WARNING", logger="modelyard"):
        config = load_config(environ={"MODELYARD_URL": "http://x", "MODELYARD_TOKEN": "t", "MODELYARD_NOPE_X": "1",
                                      "MODELYARD_SERVER_PORT": "9000"})
    assert config.server.port == 9000
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring MODELYARD_NOPE_X: modelyard has no config section [nope]"]
    with pytest.raises(ConfigError, match="MODELYARD_SERVER_PROT"):
        load_config(environ={"MODELYARD_URL": "http://x", "MODELYARD_SERVER_PROT": "1"})
