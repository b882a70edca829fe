"""Webhooks: URLs told of the registry's events, the Standard Webhooks way
(https://www.standardwebhooks.com): each delivery is a POST of ``{"type", "timestamp", "data"}``
with the headers ``webhook-id`` (the same on every retry), ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the webhook's
secret (``whsec_`` and base64, as the standard's libraries read it).

Delivery is an **outbox**: :func:`enqueue` writes one delivery row per subscribed webhook in the
transaction that records the event (``writes.record``), so an event committed is an event that
will be delivered even if its server dies the next instant. Servers :func:`claim` due deliveries
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock serialises claims) and push each
one's next attempt past the send's time limit, so no two servers send one delivery at once; they
:func:`finish` it with the receiver's answer: delivered on a 2xx, retried with exponential
backoff (or the receiver's ``Retry-After``) on a 429, a 5xx or no answer, failed on any other
status or after ``max_attempts``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import secrets
import socket
import urllib.parse
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelyard.registry.db import begin_write, utcnow
from modelyard.registry.errors import InvalidInput, NotFound
from modelyard.registry.models import Delivery, Event, Webhook

EVENTS = ("model.created", "model.updated", "model.deleted", "version.created", "version.updated",
          "version.deleted", "alias.set", "alias.moved", "alias.rolled_back", "alias.removed", "alias.guard_tripped",
          "alias.shadow_set", "alias.shadow_removed", "alias.move_requested", "version.drift_significant")
ALL = "*"
MAX_ID = 2**31 - 1  # ids past the integer column's range name nothing (a 404, not the driver's overflow)
SECRET_PREFIX = "whsec_"


class Policy(NamedTuple):
    """``[webhooks]``: where deliveries may go and how they are retried."""

    allow_private: bool = False
    timeout_seconds: float = 5.0
    max_attempts: int = 8
    backoff_seconds: float = 10.0  # the first retry's wait; doubled each time, at most an hour

    @classmethod
    def of(cls, section: Any) -> Policy:
        """From the configuration's ``[webhooks]`` section (any object with its keys)."""
        return cls(section.allow_private, section.timeout_seconds, section.max_attempts, section.backoff_seconds)


class WebhookNotFound(NotFound):
    def __init__(self, webhook_id: int) -> None:
        super().__init__(f"no webhook {webhook_id}")


class Claimed(NamedTuple):
    id: int
    url: str
    secret: str
    payload: dict[str, Any]
    attempts: int  # this one included


def create(session: Session, url: str, events: list[Any], secret: str | None, *, actor: str,
           policy: Policy) -> tuple[Webhook, str | None]:
    """Add a webhook; the secret it signs with is generated when none is given (returned here, the
    only time it is ever shown). Raises InvalidInput (422) for a URL that is not http(s), points
    at a loopback, private or reserved address (unless ``allow_private``), unknown events, or a
    secret that is not base64 of 24 to 64 bytes."""
    chosen = _checked_events(events)
    generated = None
    if secret is None:
        secret = generated = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    signing_key(secret)
    check_url(url, allow_private=policy.allow_private)  # last: it may ask the resolver
    begin_write(session)
    try:
        hook = Webhook(url=url, events=chosen, secret=secret, created_by=actor)
        session.add(hook)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return hook, generated


def listed(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def get(session: Session, webhook_id: int) -> Webhook:
    hook = session.get(Webhook, webhook_id) if 0 < webhook_id <= MAX_ID else None
    if hook is None:
        raise WebhookNotFound(webhook_id)
    return hook


def delete(session: Session, webhook_id: int) -> None:
    """Remove a webhook and its deliveries (those not yet sent are never sent)."""
    begin_write(session)
    try:
        session.delete(get(session, webhook_id))
        session.commit()
    except BaseException:
        session.rollback()
        raise


def deliveries(session: Session, webhook_id: int, *, offset: int = 0, limit: int = 10) -> tuple[list[Delivery], int]:
    """A webhook's delivery log, newest first: a page of it, and how many there are."""
    get(session, webhook_id)
    where = Delivery.webhook_id == webhook_id
    total = session.scalar(select(func.count()).where(where))
    rows = list(session.scalars(select(Delivery).where(where).order_by(Delivery.id.desc()).offset(offset)
                                .limit(limit)))
    return rows, int(total or 0)


def enqueue(session: Session, event: Event) -> None:
    """One delivery per webhook subscribed to ``event``, in the event's transaction (flushed)."""
    hooks = [h for h in session.scalars(select(Webhook)) if ALL in h.events or event.action in h.events]
    if not hooks:
        return
    at = event.at.isoformat()
    data = {"id": event.id, "model": event.model_name, "action": event.action, "version": event.version,
            "alias": event.alias, "actor": event.actor, "at": at, "before": event.before, "after": event.after}
    payload = {"type": event.action, "timestamp": at, "data": data}
    for hook in hooks:
        session.add(Delivery(webhook_id=hook.id, event_id=event.id, event_type=event.action, payload=payload))


def claim(session: Session, policy: Policy, *, limit: int = 20) -> list[Claimed]:
    """Take the deliveries due now (oldest first), each attempt counted and its next one moved past
    this send's time limit: no other server takes them meanwhile."""
    begin_write(session)
    try:
        now = utcnow()
        rows = list(session.scalars(
            select(Delivery).where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
            .order_by(Delivery.id).limit(limit).with_for_update(skip_locked=True)))
        claimed = []
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = now + dt.timedelta(seconds=policy.timeout_seconds * 2 + 5)
            hook = session.get(Webhook, row.webhook_id)
            assert hook is not None
            claimed.append(Claimed(row.id, hook.url, hook.secret, row.payload, row.attempts))
        session.commit()
        return claimed
    except BaseException:
        session.rollback()
        raise


def finish(session: Session, claimed: Claimed, policy: Policy, *, status: int | None, error: str | None,
           retry_after: float | None = None) -> str:
    """Record a send's outcome (``status`` the receiver's, None when it did not answer); the
    delivery's new status."""
    begin_write(session)
    try:
        row = session.get(Delivery, claimed.id)
        if row is None:  # its webhook was deleted meanwhile
            session.rollback()
            return "gone"
        row.last_status, row.last_error = status, (error or None) and error[:512]
        if status is not None and 200 <= status < 300:
            row.status, row.delivered_at, row.last_error = "delivered", utcnow(), None
        elif (status is None or status == 429 or status >= 500) and claimed.attempts < policy.max_attempts:
            wait = min(policy.backoff_seconds * 2 ** (claimed.attempts - 1), 3600.0)
            row.next_attempt_at = utcnow() + dt.timedelta(seconds=max(wait, retry_after or 0.0))
        else:
            row.status = "failed"
        session.commit()
        return row.status
    except BaseException:
        session.rollback()
        raise


def check_url(url: str, *, allow_private: bool) -> None:
    """InvalidInput unless ``url`` is http(s) to a host whose every address is public (or
    ``allow_private``). Checked when a webhook is made and again before every send, so a name
    that later resolves to a private address is refused too."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"a webhook URL must be http:// or https:// with a host, got {url!r}", errors={"url": url})
    if parts.username or parts.password:
        raise InvalidInput("a webhook URL must not carry credentials: sign with the secret", errors={"url": url})
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(f"the webhook host {parts.hostname!r} does not resolve", errors={"url": url}) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise InvalidInput(f"the webhook host {parts.hostname!r} is {address}, a loopback, private or reserved "
                               "address; [webhooks] allow_private admits those", errors={"url": url})


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` optional, then base64)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not 24 <= len(key) <= 64:
        raise InvalidInput("a webhook secret is base64 of 24 to 64 random bytes, optionally prefixed whsec_ "
                           "(leave it out to have one made)", errors={"secret": "malformed"})
    return key


def _checked_events(events: list[Any]) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events must be a non-empty list of event names, or [\"*\"]", errors={"events": events})
    unknown = [e for e in events if e != ALL and e not in EVENTS]
    if unknown:
        raise InvalidInput(f"unknown event {unknown[0]!r}; known: {', '.join(EVENTS)} (or \"*\")",
                           errors={"events": unknown})
    return sorted(set(events))
