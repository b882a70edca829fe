"""``modelyard`` command line (click): serve (granian or gunicorn), debug (Flask's server), migrate,
config, token, check, gc, db copy and observe export on this host; the commands that reach a server are
``cli_client``'s."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from modelyard import cli_client
from modelyard.config import ConfigError, load_config
from modelyard.registry.auth import ROLES

_TIMES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """modelyard: serve and manage the registry (serve, migrate, token, check, gc, db copy, observe export) on
    this host, or reach a server from anywhere (models, versions, upload, predict, promote,
    rollback, download, events; --url and --token, or MODELYARD_URL and MODELYARD_TOKEN)."""


cli_client.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``modelyard`` command: its exit status (2 for bad usage or configuration, 1 for a
    request the server refused, else the command's own)."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="modelyard",
                          standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        print("modelyard: aborted", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"modelyard: configuration error: {exc}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def _command(command: str, **values: Any) -> int:
    return _run(argparse.Namespace(command=command, **values))


@cli.command(help="serve the registry and the models (granian or gunicorn)")
@click.option("--engine", type=click.Choice(["granian", "gunicorn"]), help="HTTP server (default: [server] engine)")
@click.option("--host", help="address to bind (default: [server] host, 127.0.0.1)")
@click.option("--port", type=int, help="port to bind (default: [server] port, 8080)")
@click.option("--workers", type=int, help="worker processes (default: [server] workers)")
@click.option("--threads", type=int, help="threads per worker (default: [server] threads)")
def serve(**options: Any) -> int:
    return _command("serve", **options)


@cli.command(help="Flask's development server, for debugging only")
@click.option("--port", type=int)
def debug(port: int | None) -> int:
    return _command("debug", port=port)


@cli.command(help="upgrade the database schema to the newest revision")
def migrate() -> int:
    return _command("migrate")


@cli.command(name="config", help="print the effective configuration")
def config_command() -> int:
    return _command("config")


@cli.group(help="manage API tokens (create prints the token once)")
def token() -> None:
    pass


@token.command(name="create", help="create a token and print it (only time it is shown)")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
def token_create(name: str, role: str) -> int:
    return _command("token", token_command="create", name=name, role=role)


@token.command(name="list", help="list token names and roles")
def token_list() -> int:
    return _command("token", token_command="list")


@token.command(name="revoke", help="revoke a token")
@click.option("--name", required=True)
def token_revoke(name: str) -> int:
    return _command("token", token_command="revoke", name=name)


@cli.command(help="re-trial every stored version under the installed libraries (exit status 1 when one is broken)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def check(as_json: bool) -> int:
    return _command("check", json=as_json)


@cli.command(help="remove artifact blobs no version refers to (left by a killed upload)")
@click.option("--grace-seconds", type=float, default=3600.0, show_default=True,
              help="spare blobs put more recently than this (uploads still committing)")
@click.option("--dry-run", is_flag=True, help="report the orphans, remove nothing")
def gc(grace_seconds: float, dry_run: bool) -> int:
    return _command("gc", grace_seconds=grace_seconds, dry_run=dry_run)


@cli.group(help="the registry database as a whole")
def db() -> None:
    pass


@db.command(name="copy", help="copy the configured registry (rows and artifacts) to another database: a move from "
                               "SQLite to PostgreSQL, or a consistent backup while the server runs")
@click.option("--to", "to", required=True, metavar="URL",
              help="target database, e.g. postgresql+psycopg://user@host/db or sqlite:///backup.db")
@click.option("--to-store", type=click.Choice(["database", "local"]), default="database", show_default=True,
              help="where the target keeps artifacts: in its database (one file for a SQLite backup, shared by "
                   "every host for PostgreSQL) or as files under --to-root")
@click.option("--to-root", metavar="DIR", help="artifact directory of the target (--to-store local)")
@click.option("--replace", is_flag=True, help="empty a target that is not empty, then copy")
def db_copy(to: str, to_store: str, to_root: str | None, replace: bool) -> int:
    if to_store == "local" and not to_root:
        raise click.UsageError("--to-store local needs --to-root DIR")
    return _command("db", to=to, to_store=to_store, to_root=to_root, replace=replace)


@cli.group(help="what the servers observed: the prediction log")
def observe() -> None:
    pass


@observe.command(name="export", help="write the prediction log (one line per logged row, a column per feature) to a "
                                     "CSV or Parquet file")
@click.option("--to", "to", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="the file to write: .csv, or .parquet (needs pyarrow: the parquet extra)")
@click.option("--since", type=click.DateTime(_TIMES), help="from this time, UTC (included)")
@click.option("--until", type=click.DateTime(_TIMES), help="to this time, UTC (excluded)")
@click.option("--model", help="only this model's versions")
def observe_export(to: Path, since: dt.datetime | None, until: dt.datetime | None, model: str | None) -> int:
    return _command("observe", to=to, since=since, until=until, model=model)


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        overrides = {"server": {k: v for k in ("engine", "host", "port", "workers", "threads")
                                if (v := getattr(args, k)) is not None}}
        _metrics_directory()
        from modelyard.server import serve

        serve(overrides)
    elif args.command == "debug":
        from modelyard.app import create_app

        server = load_config().server
        create_app().run(host=server.host, port=args.port or server.port, debug=True)
    elif args.command == "migrate":
        from modelyard.registry.db import make_engine, upgrade_to_head

        engine = make_engine(load_config().database.url)
        upgrade_to_head(engine)
        engine.dispose()
        print("database schema is at head")
    elif args.command == "config":
        _print_config(load_config().as_tables())
    elif args.command == "token":
        return _token(args)
    elif args.command == "check":
        return _check(args)
    elif args.command == "gc":
        return _gc(args)
    elif args.command == "db":
        return _db_copy(args)
    elif args.command == "observe":
        return _export(args)
    return 0


def _export(args: argparse.Namespace) -> int:
    from modelyard.observe_export import ExportError, export
    from modelyard.registry.db import make_engine, make_session_factory

    def utc(at: dt.datetime | None) -> dt.datetime | None:
        return at.replace(tzinfo=dt.UTC) if at is not None and at.tzinfo is None else at

    engine = make_engine(load_config().database.url)
    try:
        with make_session_factory(engine)() as session:
            written = export(session, args.to, since=utc(args.since), until=utc(args.until), model=args.model)
    except ExportError as exc:
        print(f"modelyard: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"wrote {written:,} logged rows to {args.to}")
    return 0


def _db_copy(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from modelyard.registry.copy import copy_registry
    from modelyard.registry.db import make_engine
    from modelyard.registry.errors import ModelyardError
    from modelyard.registry.storage import make_store

    settings = load_config()
    source, target = make_engine(settings.database.url), make_engine(args.to)
    shown = make_url(args.to).render_as_string(hide_password=True)
    try:
        report = copy_registry(source, make_store(settings.artifacts.store, settings.artifacts.root, source),
                               target, make_store(args.to_store, args.to_root or "", target), replace=args.replace)
    except ModelyardError as exc:
        print(f"modelyard: {exc.message}", file=sys.stderr)
        return 1
    finally:
        source.dispose()
        target.dispose()
    rows = ", ".join(f"{n} {table}" for table, n in report.rows.items())
    print(f"copied {rows}; {report.artifacts} artifacts ({report.artifact_bytes:,} bytes, every sha256 checked "
          f"on arrival) to {shown} in {report.seconds:.1f} s")
    store = "MODELYARD_ARTIFACTS_STORE=database" if args.to_store == "database" else \
        f"MODELYARD_ARTIFACTS_STORE=local MODELYARD_ARTIFACTS_ROOT={args.to_root}"
    print(f"serve it with: MODELYARD_DATABASE_URL='{shown}' {store} modelyard serve")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from modelyard.registry import maintenance
    from modelyard.registry.db import make_engine, make_session_factory, upgrade_to_head
    from modelyard.registry.storage import make_store

    settings = load_config()
    engine = make_engine(settings.database.url)
    try:
        upgrade_to_head(engine)
        store = make_store(settings.artifacts.store, settings.artifacts.root, engine)
        with make_session_factory(engine)() as session:
            report = maintenance.collect_orphans(session, store, grace_seconds=args.grace_seconds, dry_run=args.dry_run)
    finally:
        engine.dispose()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report['orphans'])} orphan blob{'' if len(report['orphans']) == 1 else 's'}")
    for sha in report["orphans"]:
        print(f"  {sha}")
    if report["stale_temporaries"]:
        print(f"removed {report['stale_temporaries']} partial writes")
    return 0


def _check(args: argparse.Namespace) -> int:
    import json

    from modelyard.app import create_app
    from modelyard.registry import maintenance
    from modelyard.web.context import EXTENSION, Runtime

    app = create_app()
    rt: Runtime = app.extensions[EXTENSION]
    try:
        with rt.sessions() as session:
            report = maintenance.check_versions(session, rt.store, limits=rt.upload_limits)
    finally:
        rt.engine.dispose()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        libraries = ", ".join(f"{k} {v}" for k, v in report["libraries"].items())
        print(f"checked {len(report['results'])} versions under {libraries}")
        for row in report["results"]:
            line = f"{row['model']} v{row['version']}\t{row['status']}"
            print(line + ("\t" + " ".join(row["reason"].split()) if row["reason"] else ""))
        print(", ".join(f"{n} {s}" for s, n in report["counts"].items()))
    return 1 if report["counts"]["broken"] else 0


def _metrics_directory() -> None:
    """Several workers share Prometheus metrics through files in one directory; it must be set
    before prometheus_client is imported, and start empty."""
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelyard-metrics-")


def _token(args: argparse.Namespace) -> int:
    from modelyard.registry import auth
    from modelyard.registry.db import make_engine, make_session_factory, upgrade_to_head
    from modelyard.registry.errors import ModelyardError

    engine = make_engine(load_config().database.url)
    try:
        upgrade_to_head(engine)
        with make_session_factory(engine)() as session:
            if args.token_command == "create":
                created = auth.create_token(session, args.name, args.role, created_by="cli")
                print(created["token"])
            elif args.token_command == "list":
                for row in auth.list_tokens(session):
                    print(f"{row['name']}\t{row['role']}\t{row['created_at']:%Y-%m-%d %H:%M}\t{row['created_by']}")
            else:
                auth.revoke_token(session, args.name)
                print(f"revoked {args.name}")
    except ModelyardError as exc:
        print(f"modelyard: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _print_config(config: dict[str, dict[str, Any]]) -> None:
    from sqlalchemy.engine import make_url

    for section, values in config.items():
        print(f"[{section}]")
        for key, value in values.items():
            if (section, key) == ("database", "url"):
                value = make_url(value).render_as_string(hide_password=True)
            print(f"{key} = {value!r}")
        print()


if __name__ == "__main__":
    sys.exit(main())
