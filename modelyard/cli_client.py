"""The ``modelyard`` commands that reach a server through :mod:`modelyard.client`: models,
versions, upload (with a progress bar on a terminal), promote, rollback, predict, download,
events. Each takes ``--url`` and ``--token`` (or ``MODELYARD_URL`` and ``MODELYARD_TOKEN``),
prints a table by default and the server's exact JSON with ``--json``, and exits 1 with the
server's message when a request is refused (2 for bad usage, as click does)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from modelyard.client import FORMATS, Client, ClientError, Unauthorized
from modelyard.registry.errors import UnreadableBody
from modelyard.web.body import parse_csv

F = TypeVar("F", bound=Callable[..., Any])
_out = Console(soft_wrap=True)


def register(group: click.Group) -> None:
    from modelyard.cli_observe import drift, predictions
    from modelyard.cli_webhooks import webhooks

    for command in (models, versions, upload, promote, approve, rollback, weights, guard, shadow, history, predict,
                    download, events, webhooks, drift, predictions):
        group.add_command(command)


def _remote(command: F) -> F:
    """``--url``, ``--token`` and ``--json`` on a command that calls the server, which gets a
    ``client``; a refused request exits 1 with the server's message."""
    return _remote_as("--json")(command)


def _remote_as(output_flag: str) -> Callable[[F], F]:
    """:func:`_remote` with another name for the exact-JSON flag (``predict`` takes its body
    with ``--json BODY``, so its flag is ``--json-output``)."""

    def decorate(command: F) -> F:
        @click.option("--url", envvar="MODELYARD_URL", default="http://127.0.0.1:8080", show_default=True,
                      help="the server (or MODELYARD_URL)")
        @click.option("--token", envvar="MODELYARD_TOKEN", default=None, help="an API token (or MODELYARD_TOKEN)")
        @click.option(output_flag, "as_json", is_flag=True, help="print the server's JSON exactly")
        @functools.wraps(command)
        def run(url: str, token: str | None, as_json: bool, **kwargs: Any) -> int:
            try:
                with Client(url, token=token) as client:
                    shown = command(client, **kwargs)
            except ClientError as exc:
                click.echo(f"modelyard: {exc}{_what_to_set(exc, url, token)}", err=True)
                return 1
            if as_json:
                click.echo(json.dumps(shown.data, indent=2, ensure_ascii=False))
            else:
                shown.render()
            return 0

        return run  # type: ignore[return-value]

    return decorate


def _what_to_set(error: ClientError, url: str, token: str | None) -> str:
    """Which option (or variable) a refusal is about, when it is about the command's own settings."""
    if error.status is None:
        return "\n  (the server is set by --url or MODELYARD_URL; this command used " + url + ")"
    if isinstance(error, Unauthorized):
        sent = "no token was sent" if token is None else "the token sent was refused"
        return f"\n  ({sent}; give one with --token or MODELYARD_TOKEN)"
    return ""


class Shown:
    """What a command answered: the server's JSON, and how to show it to a person."""

    def __init__(self, data: Any, render: Callable[[], None]) -> None:
        self.data = data
        self.render = render


def _json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None


def _table(columns: list[str], rows: list[list[Any]]) -> Callable[[], None]:
    def render() -> None:
        table = Table(*columns, show_lines=False, header_style="bold")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        _out.print(table)

    return render


def _aliases(aliases: dict[str, int] | list[str]) -> str:
    if isinstance(aliases, dict):
        return ", ".join(f"{a}={v}" for a, v in aliases.items())
    return ", ".join(aliases)


@click.group(help="the models of a server")
def models() -> None:
    pass


@models.command(name="list", help="list models (every page), by name")
@click.option("--q", help="only names containing this (any case)")
@click.option("--tag", help="only models with this tag, as key:value")
@_remote
def models_list(client: Client, q: str | None, tag: str | None) -> Shown:
    found = client.list_models(q=q, tag=tag)
    return Shown(found, _table(["name", "latest", "versions", "aliases", "tags", "updated"], [
        [m["name"], m["latest_version"], m["version_count"], _aliases(m["aliases"]),
         ", ".join(f"{k}={v}" for k, v in m["tags"].items()), m["updated_at"]] for m in found]))


@models.command(name="show", help="one model: its aliases, latest version, tags")
@click.argument("name")
@_remote
def models_show(client: Client, name: str) -> Shown:
    model = client.get_model(name)
    return Shown(model, _table(["field", "value"], [
        [key, _aliases(value) if key == "aliases" else json.dumps(value) if isinstance(value, dict) else value]
        for key, value in model.items()]))


@click.group(help="the versions of a model")
def versions() -> None:
    pass


@versions.command(name="list", help="list a model's versions (every page), newest first")
@click.argument("name")
@_remote
def versions_list(client: Client, name: str) -> Shown:
    found = client.versions(name)
    return Shown(found, _table(["version", "aliases", "estimator", "format", "bytes", "by", "at", "metrics"], [
        [v["version"], _aliases(v["aliases"]), v["estimator"].rsplit(".", 1)[-1], v["format"], v["size_bytes"],
         v["created_by"], v["created_at"], json.dumps(v["metadata"]["metrics"])] for v in found]))


@click.command(help="upload a model file as the next version of --name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="the model (created if missing)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="detected from the content when absent")
@click.option("--description")
@click.option("--metrics", help="JSON object, e.g. '{\"auc\": 0.91}'")
@click.option("--params", help="JSON object of training parameters")
@click.option("--tags", help="JSON object of string tags")
@click.option("--features", help="JSON list of feature names, in column order")
@click.option("--labels", help="JSON list of class labels, aligned with classes_")
@click.option("--example", help="JSON rows or records the server's trial predicts")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="training rows, a CSV (with a header) or JSON file: profiled per feature for drift")
@click.option("--progress/--no-progress", default=None, help="a progress bar (default: on a terminal)")
@_remote
def upload(client: Client, file: Path, name: str, fmt: str | None, description: str | None, metrics: str | None,
           params: str | None, tags: str | None, features: str | None, labels: str | None, example: str | None,
           reference: Path | None, progress: bool | None) -> Shown:
    err = Console(stderr=True, force_terminal=progress if progress is not None else None)
    show = progress if progress is not None else err.is_terminal
    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=err, disable=not show)
    with bar:
        task = bar.add_task(f"uploading {file.name}", total=file.stat().st_size)
        version = client.upload(
            file, name, format=fmt, description=description, metrics=_json_option(metrics, "--metrics"),
            params=_json_option(params, "--params"), tags=_json_option(tags, "--tags"),
            features=_json_option(features, "--features"), labels=_json_option(labels, "--labels"),
            example=_json_option(example, "--example"), reference=reference,
            progress=lambda done, _total: bar.update(task, completed=done))

    def render() -> None:
        _out.print(f"uploaded {version['name']} version {version['version']}: {version['estimator']} "
                   f"({version['format']}, {version['size_bytes']:,} bytes, sha256 {version['sha256'][:12]})")
        for warning in version.get("load_warnings") or []:
            _out.print(f"  warning: {warning}")

    return Shown(version, render)


def _moved(move: dict[str, Any], name: str) -> Shown:
    if move.get("status") == "pending":  # held for a second approver
        return Shown(move, lambda: _out.print(
            f"{name}: moving {move['alias']} waits for a second approver: another promoter runs "
            f"`modelyard approve {name} {move['id']}`" + (f" --alias {move['alias']}" if move["alias"] != "production"
                                                          else "")))
    def state(weights: dict[str, int] | None, version: int | None) -> str:
        if weights:
            return " ".join(f"{v}:{w}" for v, w in weights.items())
        return "(new)" if version is None else str(version)

    return Shown(move, lambda: _out.print(
        f"{name}: {move['alias']} {state(move.get('previous_weights'), move['previous_version'])} "
        f"-> {state(move.get('weights'), move['version'])}"))


@click.command(help="split an alias between versions by weight (a canary): weights VERSION=WEIGHT ...")
@click.argument("name")
@click.argument("split", nargs=-1, required=True, metavar="VERSION=WEIGHT...")
@click.option("--alias", default="production", show_default=True)
@click.option("--guard", metavar="METRIC:MAX", help="roll back by itself when a new version passes MAX of "
              "METRIC (error_rate, disagreement or p99_ms), e.g. error_rate:0.05")
@click.option("--window", type=int, default=300, show_default=True, help="with --guard: seconds measured")
@click.option("--min-samples", type=int, default=200, show_default=True,
              help="with --guard: fewer requests than this are inconclusive, never a rollback")
@_remote
def weights(client: Client, name: str, split: tuple[str, ...], alias: str, guard: str | None, window: int,
            min_samples: int) -> Shown:
    parsed: dict[str, int] = {}
    for part in split:
        version, _, weight = part.partition("=")
        if not version or not weight.strip().isdigit():
            raise click.BadParameter(f"{part!r}: give VERSION=WEIGHT, e.g. 3=90 4=10", param_hint="VERSION=WEIGHT")
        parsed[version] = int(weight)
    rule = None
    if guard is not None:
        metric, _, limit = guard.partition(":")
        try:
            rule = {"metric": metric, "max": float(limit), "window_seconds": window, "min_samples": min_samples}
        except ValueError:
            raise click.BadParameter(f"{guard!r}: give METRIC:MAX, e.g. error_rate:0.05",
                                     param_hint="--guard") from None
    return _moved(client.set_weights(name, alias, parsed, guard=rule), name)


@click.command(help="approve a move waiting for a second approver (with another promoter's token), or "
                    "list them (no ID)")
@click.argument("name")
@click.argument("approval", type=int, required=False)
@click.option("--alias", default="production", show_default=True)
@_remote
def approve(client: Client, name: str, approval: int | None, alias: str) -> Shown:
    if approval is not None:
        return _moved(client.approve(name, approval, alias), name)
    waiting = client.approvals(name, alias)
    rows = [[p["id"], _state_text(p), p["requested_by"], p["requested_at"], p["expires_at"]] for p in waiting]
    return Shown(waiting, _table(["id", "state", "asked by", "asked at", "expires"], rows))


@click.command(help="where an alias's guarded canary stands: each new version's measure and verdict")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@_remote
def guard(client: Client, name: str, alias: str) -> Shown:
    found = client.guard_status(name, alias)
    rows = [[version, c["requests"], c["errors"], c["samples"], c["measure"], c["verdict"]]
            for version, c in found["candidates"].items()]
    title = (f"{found['metric']} over {found['window_seconds']} s, max {found['max']:g}, at least "
             f"{found['min_samples']} samples; returns to {_state_text(found['baseline'])}: {found['verdict']}")
    table = _table(["version", "requests", "errors", "samples", "measure", "verdict"], rows)

    def render() -> None:
        _out.print(title)
        table()

    return Shown(found, render)


@click.command(help="an alias's shadow: its report, or --set VERSION --fraction F, or --remove")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.option("--set", "version", help="shadow the alias with this version")
@click.option("--fraction", type=float, help="with --set: the share of requests also run on it (0 < f <= 1)")
@click.option("--remove", is_flag=True, help="stop shadowing the alias")
@_remote
def shadow(client: Client, name: str, alias: str, version: str | None, fraction: float | None,
           remove: bool) -> Shown:
    if remove:
        client.delete_shadow(name, alias)
        return Shown({}, lambda: _out.print(f"{name}: {alias} has no shadow now"))
    if version is not None:
        if fraction is None:
            raise click.UsageError("--set VERSION needs --fraction F")
        done = client.set_shadow(name, alias, version, fraction)
        return Shown(done, lambda: _out.print(f"{name}: {alias} shadowed by version {done['version']} "
                                              f"for {done['fraction']:g} of its requests"))
    report = client.shadow_report(name, alias)
    latency = report["latency_ms"]
    rows = [[report["version"], report["fraction"], report["requests"], report["compared"], report["agreement"],
             report["failures"], report["dropped"], report["max_abs_diff"],
             f"{latency['primary']['p50']} / {latency['shadow']['p50']}"]]
    return Shown(report, _table(["version", "fraction", "requests", "compared", "agreement", "failures", "dropped",
                                 "max |diff|", "p50 ms (primary / shadow)"], rows))


@click.command(help="every state an alias had, newest first, or (--at) the one in force at a time")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.option("--at", help="an ISO 8601 time, e.g. 2026-12-06T09:00:00Z")
@_remote
def history(client: Client, name: str, alias: str, at: str | None) -> Shown:
    found = client.alias_history(name, alias, at=at)
    if at is not None:
        return Shown(found, lambda: _out.print(f"{name}: {alias} at {found['at']}: "
                                               f"{_state_text(found)}"))
    rows = [[s["since"], s["until"] or "now", _state_text(s), s["actor"], s["action"], s["event"]] for s in found]
    return Shown(found, _table(["since", "until", "state", "actor", "action", "event"], rows))


def _state_text(state: dict[str, Any]) -> str:
    if state.get("weights"):
        return " ".join(f"v{v}:{w}" for v, w in state["weights"].items())
    return f"v{state['version']}"


@click.command(help="point an alias (production by default) at a version")
@click.argument("name")
@click.argument("ref")
@click.option("--alias", default="production", show_default=True)
@_remote
def promote(client: Client, name: str, ref: str, alias: str) -> Shown:
    return _moved(client.promote(name, ref, alias), name)


@click.command(help="move an alias back to where it pointed before its last move")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@_remote
def rollback(client: Client, name: str, alias: str) -> Shown:
    return _moved(client.rollback(name, alias), name)


@click.command(help="predict with a version, an alias or latest (production by default)")
@click.argument("name")
@click.argument("ref", default="production")
@click.option("--json", "body", metavar="BODY", help="a JSON body: records, rows, or {\"inputs\": ...}")
@click.option("--csv", "csv_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="a CSV file whose header row names the columns ('-' for standard input)")
@click.option("--proba", is_flag=True, help="also the class probabilities")
@_remote_as("--json-output")
def predict(client: Client, name: str, ref: str, body: str | None, csv_file: str | None, proba: bool) -> Shown:
    if (body is None) == (csv_file is None):
        raise click.UsageError("give the rows with exactly one of --json BODY or --csv FILE")
    X = _json_option(body, "--json") if body is not None else _read_csv(csv_file or "-")
    answer = client.predict(name, ref, X, proba=proba)
    labels = answer.get("labels")
    rows = [[i, p, labels[i] if labels else None] + ([answer["probabilities"][i]] if proba else [])
            for i, p in enumerate(answer["predictions"])]
    columns = ["row", "prediction", "label"] + (["probabilities"] if proba else [])

    def render() -> None:
        _out.print(f"{answer['model']} version {answer['version']}")
        _table(columns, rows)()

    return Shown(answer, render)


def _read_csv(path: str) -> dict[str, Any]:
    """A CSV file as the server reads a text/csv body (``web.body.parse_csv``), as dataframe_split."""
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return {"dataframe_split": parse_csv(raw)}
    except UnreadableBody as exc:
        raise click.BadParameter(exc.message, param_hint="--csv") from None


@click.command(help="save a version's file, checked against its sha256")
@click.argument("name")
@click.argument("ref")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="where to save it")
@_remote
def download(client: Client, name: str, ref: str, output: Path) -> Shown:
    saved = client.download(name, ref, output)
    return Shown(saved, lambda: _out.print(f"saved {saved['path']} ({saved['size_bytes']:,} bytes, "
                                           f"sha256 {saved['sha256']})"))


@click.command(help="a model's audit history (every page), newest first")
@click.argument("name")
@_remote
def events(client: Client, name: str) -> Shown:
    found = client.events(name)
    return Shown(found, _table(["at", "actor", "action", "version", "alias", "before", "after"], [
        [e["at"], e["actor"], e["action"], e["version"], e["alias"],
         json.dumps(e["before"]) if e["before"] else None, json.dumps(e["after"]) if e["after"] else None]
        for e in found]))
