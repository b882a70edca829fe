"""``modelyard`` command line: serve (granian or gunicorn), debug (Flask's server), migrate, config, token,
check and gc."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelyard.config import ConfigError, load_config
from modelyard.registry.auth import ROLES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelyard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the registry and the models (granian or gunicorn)")
    serve.add_argument("--engine", choices=("granian", "gunicorn"), help="HTTP server (default: [server] engine)")
    serve.add_argument("--host", help="address to bind (default: [server] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: [server] port, 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: [server] workers)")
    serve.add_argument("--threads", type=int, help="threads per worker (default: [server] threads)")

    debug = commands.add_parser("debug", help="Flask's development server, for debugging only")
    debug.add_argument("--port", type=int)

    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")

    token = commands.add_parser("token", help="manage API tokens (create prints the token once)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token and print it (only time it is shown)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    token_commands.add_parser("list", help="list token names and roles")
    revoke = token_commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument("--name", required=True)
    commands.add_parser("config", help="print the effective configuration")
    check = commands.add_parser("check", help="re-trial every stored version under the installed libraries "
                                              "(exit status 1 when one is broken)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    gc = commands.add_parser("gc", help="remove artifact blobs no version refers to (left by a killed upload)")
    gc.add_argument("--grace-seconds", type=float, default=3600.0,
                    help="spare blobs put more recently than this (uploads still committing); default 3600")
    gc.add_argument("--dry-run", action="store_true", help="report the orphans, remove nothing")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"modelyard: configuration error: {exc}", file=sys.stderr)
        return 2


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
