"""``modelyard`` command line: serve (gunicorn), migrate, and a debug server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from modelyard.config import ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelyard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the registry and the models with gunicorn")
    serve.add_argument("--host", help="address to bind (default: [server] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: [server] port, 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: [server] workers)")
    serve.add_argument("--threads", type=int, help="threads per worker (default: [server] threads)")

    debug = commands.add_parser("debug", help="Flask's development server, for debugging only")
    debug.add_argument("--port", type=int)

    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")
    commands.add_parser("config", help="print the effective configuration")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"modelyard: configuration error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        overrides = {"server": {k: v for k in ("host", "port", "workers", "threads")
                                if (v := getattr(args, k)) is not None}}
        from modelyard.server import serve

        serve(overrides)
    elif args.command == "debug":
        from modelyard.app import create_app

        config = load_config()
        create_app().run(host=config["server"]["host"], port=args.port or config["server"]["port"], debug=True)
    elif args.command == "migrate":
        from registry.db import make_engine, upgrade_to_head

        engine = make_engine(load_config()["database"]["url"])
        upgrade_to_head(engine)
        engine.dispose()
        print("database schema is at head")
    elif args.command == "config":
        _print_config(load_config())
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
