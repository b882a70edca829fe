"""API tokens and roles: reader < predictor < uploader < promoter < admin.

A token is 32 random bytes, shown once at creation; only its sha256 is stored (the token has
full entropy, so an unsalted digest cannot be reversed and can be looked up by index). Nothing
here logs a token.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry.db import begin_write
from modelyard.registry.errors import Conflict, InvalidName, ModelyardError, NotFound
from modelyard.registry.models import Token
from modelyard.registry.refs import DEFAULT_ALIAS, MODEL_NAME

ROLES = ("reader", "predictor", "uploader", "promoter", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
ANONYMOUS = "anonymous"
TOKEN_PREFIX = "myd_"


@dataclass(frozen=True)
class Actor:
    """Who is asking: a token's name and role, or the anonymous caller's configured role."""

    name: str
    role: str | None  # None: anonymous callers may do nothing
    authenticated: bool

    def at_least(self, role: str) -> bool:
        return self.role is not None and _RANK[self.role] >= _RANK[role]


PRIVATE_READS = {"artifacts": "downloading a model file", "events": "reading the audit log",
                 "metrics": "reading the metrics", "predictions": "reading the prediction log"}


@dataclass(frozen=True)
class AuthPolicy:
    """What ``[auth]`` decides for each request: the anonymous caller's role (``none``: no
    role), the reads that need a token, and the aliases only a promoter or admin moves."""

    anonymous_role: str = "predictor"
    private_reads: frozenset[str] = frozenset(PRIVATE_READS)
    protected_aliases: frozenset[str] = frozenset({DEFAULT_ALIAS})


def require_token_for(actor: Actor, kind: str, private_reads: Collection[str]) -> None:
    """401 for an anonymous caller of a read marked :func:`private` that the config keeps private."""
    if kind in private_reads and not actor.authenticated:
        raise Unauthorized(f"{PRIVATE_READS[kind]} needs a token; anonymous callers may predict and read "
                           "model metadata only ([auth] private_reads)")


class Unauthorized(ModelyardError):
    """No usable credentials: none given where the anonymous role is not enough, or a bad token (401)."""


class Forbidden(ModelyardError):
    """The caller's role is below what the request needs (403)."""


class TokenExists(Conflict):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a token named {name!r} exists")


class TokenNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no token named {name!r}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, role: str, *, created_by: str) -> dict[str, Any]:
    """Create a token; the answer holds the token itself, which is never shown again.

    Raises InvalidName (422) for a bad name or role, TokenExists (409).
    """
    if not MODEL_NAME.match(name):
        raise InvalidName("token", name, "use letters, digits, '.', '_' and '-' (at most 128)")
    if role not in ROLES:
        raise InvalidName("role", role, f"must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    begin_write(session)
    try:
        if session.scalar(select(Token.id).where(Token.name == name)) is not None:
            raise TokenExists(name)
        row = Token(name=name, role=role, token_hash=hash_token(token), created_by=created_by)
        session.add(row)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise TokenExists(name) from None
    except BaseException:
        session.rollback()
        raise
    return {"name": name, "role": role, "token": token, "created_at": row.created_at, "created_by": created_by}


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Names and roles; never the tokens."""
    return [
        {"name": t.name, "role": t.role, "created_at": t.created_at, "created_by": t.created_by}
        for t in session.scalars(select(Token).order_by(Token.name))
    ]


def revoke_token(session: Session, name: str) -> None:
    """Delete a token; requests bearing it are refused from the next one on."""
    begin_write(session)
    result = session.execute(delete(Token).where(Token.name == name))
    deleted = getattr(result, "rowcount", 0)  # a DELETE's result is a CursorResult
    session.commit()
    if not deleted:
        raise TokenNotFound(name)


def authenticate(session: Session, token: str) -> Actor | None:
    """The actor a presented token stands for, or None when it is unknown or revoked."""
    row = session.execute(select(Token.name, Token.role).where(Token.token_hash == hash_token(token))).first()
    if row is None:
        return None
    return Actor(name=row.name, role=row.role, authenticated=True)


def identify(session: Callable[[], Session], authorization: str | None, anonymous_role: str) -> Actor:
    """The actor behind a request's ``Authorization`` header (None: the anonymous caller).

    ``session`` is called only when a token must be looked up; its read is ended at once so
    no connection is held for the rest of the request.
    """
    if authorization is None:
        return anonymous(anonymous_role)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token>'")
    db = session()
    try:
        actor = authenticate(db, token.strip())
    finally:
        db.rollback()
    if actor is None:
        raise Unauthorized("the token is unknown or revoked")
    return actor


@functools.lru_cache(maxsize=8)
def anonymous(anonymous_role: str) -> Actor:
    """The anonymous caller (one value per configured role: an Actor is frozen)."""
    return Actor(ANONYMOUS, None if anonymous_role == "none" else anonymous_role, authenticated=False)


def require(actor: Actor, role: str, *, what: str | None = None) -> None:
    """Refuse an actor below ``role``: 401 for an anonymous caller (a token would help), 403
    for a token whose role is too low."""
    if actor.at_least(role):
        return
    need = f"{what} needs" if what else "this needs"
    if not actor.authenticated:
        raise Unauthorized(f"{need} a token with role {role} or above; send it as 'Authorization: Bearer <token>'")
    raise Forbidden(f"{need} role {role} or above; token {actor.name!r} has role {actor.role}")


def ensure_admin_token(session: Session, path: Path) -> bool:
    """On first start (no admin token yet), create token ``admin`` and write it to ``path``,
    readable by its owner only. Returns True when a token was written."""
    if session.scalar(select(Token.id).where(Token.role == "admin").limit(1)) is not None:
        return False
    existing = session.scalar(select(Token).where(Token.name == "admin"))
    if existing is not None:  # a non-admin token holds the name: pick another
        name = f"admin-{secrets.token_hex(3)}"
    else:
        name = "admin"
    try:
        created = create_token(session, name, "admin", created_by="modelyard")
    except TokenExists:  # another server starting at the same time made it
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(created["token"] + "\n")
    os.chmod(path, 0o600)
    return True
