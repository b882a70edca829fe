"""``modelyard drift`` and ``modelyard predictions``: what a server observed of a version's
traffic, its drift against the version's reference and its sampled prediction log."""

from __future__ import annotations

import itertools
import json

import click

from modelyard.cli_client import Shown, _out, _remote, _table
from modelyard.client import Client


@click.command(help="a version's drift against its reference, per feature (VERSION: a number, an alias or latest)")
@click.argument("name")
@click.argument("version", default="production")
@click.option("--window", type=click.Choice(["1h", "24h", "7d"]), default="1h", show_default=True)
@_remote
def drift(client: Client, name: str, version: str, window: str) -> Shown:
    found = client.drift(name, version, window)
    judged = found["features"] + ([found["predictions"]] if found["predictions"] else [])

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [[f["feature"], f["verdict"], score(f["psi"]), score(f["js_distance"]), f["samples"]] for f in judged]
    table = _table(["feature", "verdict", "PSI", "JS distance", "samples"], rows)

    def render() -> None:
        _out.print(f"{name} v{found['version']}, {window} from {found['since']}: {found['verdict']}")
        if found.get("message"):
            _out.print(found["message"])
        else:
            table()

    return Shown(found, render)


@click.command(help="a version's logged predictions, newest first (a token: it holds the requests' inputs)")
@click.argument("name")
@click.argument("version", default="production")
@click.option("--limit", type=int, default=20, show_default=True, help="at most this many")
@_remote
def predictions(client: Client, name: str, version: str, limit: int) -> Shown:
    found = list(itertools.islice(client.predictions(name, version), limit))
    rows = [[p["at"], p["alias"] or "", p["request_key"] or "", p["n_rows"], p["latency_ms"],
             json.dumps(p["outputs"])[:60]] for p in found]
    return Shown(found, _table(["at", "alias", "key", "rows", "ms", "outputs"], rows))
