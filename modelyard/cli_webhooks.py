"""``modelyard webhooks``: add, list and remove the URLs told of the registry's events, and read a
webhook's delivery log, on a server (admin token)."""

from __future__ import annotations

import click

from modelyard.cli_client import Shown, _out, _remote, _table
from modelyard.client import Client


@click.group(help="the URLs told of the registry's events (admin): list, add, remove, deliveries")
def webhooks() -> None:
    pass


@webhooks.command(name="list", help="the webhooks (never their secrets)")
@_remote
def list_(client: Client) -> Shown:
    found = client.webhooks()
    return Shown(found, _table(["id", "url", "events", "created by"],
                               [[h["id"], h["url"], " ".join(h["events"]), h["created_by"]] for h in found]))


@webhooks.command(help="tell TARGET (an http(s) URL) of EVENTS (names such as alias.moved, or *); prints a made "
                       "secret once")
@click.argument("target")
@click.argument("events", nargs=-1, required=True)
@click.option("--secret", envvar="MODELYARD_WEBHOOK_SECRET", help="whsec_ and base64 (or MODELYARD_WEBHOOK_SECRET); "
              "left out, the server makes one")
@_remote
def add(client: Client, target: str, events: tuple[str, ...], secret: str | None) -> Shown:
    made = client.add_webhook(target, list(events), secret)

    def render() -> None:
        _out.print(f"webhook {made['id']}: {made['url']} <- {' '.join(made['events'])}")
        if "secret" in made:
            _out.print(f"secret (shown this once): {made['secret']}")

    return Shown(made, render)


@webhooks.command(help="remove a webhook (deliveries not yet sent are dropped)")
@click.argument("webhook_id", type=int)
@_remote
def remove(client: Client, webhook_id: int) -> Shown:
    client.delete_webhook(webhook_id)
    return Shown({}, lambda: _out.print(f"webhook {webhook_id} removed"))


@webhooks.command(help="a webhook's delivery log, newest first")
@click.argument("webhook_id", type=int)
@_remote
def deliveries(client: Client, webhook_id: int) -> Shown:
    found = client.webhook_deliveries(webhook_id)
    rows = [[d["id"], d["event_type"], d["status"], d["attempts"], d["last_status"], d["last_error"]] for d in found]
    return Shown(found, _table(["id", "event", "status", "attempts", "last status", "last error"], rows))
