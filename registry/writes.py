"""How a registry write is done: one transaction per use case that bumps the registry
generation (so every server's ref cache sees it on its next request) and commits once
(:func:`write`), and the audit log it adds to (:func:`record`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry import beacon, poll, webhooks
from modelyard.registry.db import begin_write
from modelyard.registry.models import Event, RegistryState

T = TypeVar("T")
_ATTEMPTS = 3  # a write that lost a uniqueness race (two creators of one model) is retried


def write(session: Session, step: Callable[[], T], *, on_conflict: Callable[[], Exception] | None = None) -> T:
    """Run ``step`` in one write transaction, commit, and return what it returned; roll back
    on any error.

    A uniqueness race lost to a concurrent writer (IntegrityError) is retried from the start,
    where ``step`` sees the winner's row; ``on_conflict`` turns the last failure into a domain
    error.
    """
    for attempt in range(_ATTEMPTS):
        begin_write(session)
        try:
            result = step()
            session.execute(update(RegistryState).values(generation=RegistryState.generation + 1))
            session.commit()
            published(session.get_bind().engine.url)
            return result
        except IntegrityError:
            session.rollback()
            if attempt == _ATTEMPTS - 1:
                if on_conflict is not None:
                    raise on_conflict() from None
                raise
        except BaseException:
            session.rollback()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def published(url: URL) -> None:
    """What a registry write does once committed, so that every server serves it on the next
    request after the write returns: on SQLite, change the token its servers check
    (``registry.beacon``); on PostgreSQL, wait out the grace its servers' polls rely on
    (``registry.poll``)."""
    beacon.bump(url)
    poll.after_commit(url.get_backend_name())


def record(
    session: Session, model_name: str, action: str, actor: str, *, version: int | None = None,
    alias: str | None = None, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
) -> Event:
    """Add one event to the audit log, and its webhook deliveries to the outbox, in the write's
    transaction."""
    event = Event(model_name=model_name, version=version, alias=alias, action=action, actor=actor,
                  before=before, after=after)
    session.add(event)
    session.flush()
    webhooks.enqueue(session, event)
    return event
