"""Who is calling, and may they: the request-level half of auth (tokens live in
``registry.auth``), and the marks views carry (least role, private read, what they count as).

Runs before any body is read, so the order of checks is routing (404, 405), then auth (401,
403), then the request's form and state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy.orm import Session

from modelyard.registry.auth import PRIVATE_READS, Actor, AuthPolicy, identify, require, require_token_for
from modelyard.registry.errors import ModelyardError
from modelyard.registry.refs import DEFAULT_ALIAS
from modelyard.web.body import parse_json
from modelyard.web.context import runtime, session

F = TypeVar("F", bound=Callable[..., Any])

# Endpoints anyone may call: liveness, readiness, server info, the OpenAPI document and docs.
# (the UI's pages check the reader role themselves, answering a token form; its assets are open)
_OPEN_BLUEPRINTS = ("ops", "api-docs", "docs-assets", "ui")


def requires(role: str) -> Callable[[F], F]:
    """Mark a view (function or MethodView method) with the least role that may call it."""

    def mark(view: F) -> F:
        view.required_role = role  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    """Mark a view anyone may call, as the open blueprints' are (a protocol's health checks)."""
    view.required_role = None  # type: ignore[attr-defined]
    return view


def private(kind: str) -> Callable[[F], F]:
    """Mark a read that needs a token (any role) while ``kind`` is in ``[auth] private_reads``:
    an anonymous caller predicts and reads model metadata, nothing more."""
    if kind not in PRIVATE_READS:
        raise ValueError(f"unknown private read {kind!r}")

    def mark(view: F) -> F:
        view.private_read = kind  # type: ignore[attr-defined]
        return view

    return mark


def moves_alias(view: F) -> F:
    """Mark a view that moves an alias: the one its path names, or else its JSON body's ``alias``
    (default ``production``). A protected alias needs a promoter, checked with the request's
    auth, so a 401 or 403 names the role the move really needs."""
    view.moves_alias = True  # type: ignore[attr-defined]
    return view


def counts_as(kind: str) -> Callable[[F], F]:
    """Mark a view whose requests the observers count apart ("upload", "predict")."""

    def mark(view: F) -> F:
        view.counts_as = kind  # type: ignore[attr-defined]
        return view

    return mark


def authorize(session: Callable[[], Session], authorization: str | None, policy: AuthPolicy, *,
              role: str | None, private_read: str | None = None, what: str | None = None) -> Actor:
    """The one auth decision, for Flask's routes and the predict lane alike: who the caller is
    (401 for a bad token), then a private read needs a token (401), then ``role`` at least
    (401 anonymous, 403 a token's role too low; ``what`` names the action); ``role`` None
    checks nothing more."""
    actor = identify(session, authorization, policy.anonymous_role)
    if private_read is not None:
        require_token_for(actor, private_read, policy.private_reads)
    if role is not None:
        require(actor, role, what=what)
    return actor


def authorize_request() -> None:
    """Resolve the caller into ``g.actor`` and refuse the request if its role is too low."""
    if request.routing_exception is not None or request.endpoint is None:
        return  # routing errors answer first
    authorization = request.headers.get("Authorization")
    if request.method == "OPTIONS":
        g.actor = authorize(session, authorization, runtime().auth, role=None)
        return
    target = answering_view()
    # Fail closed: an endpoint nobody annotated needs an admin.
    role = None if request.blueprint in _OPEN_BLUEPRINTS else getattr(target, "required_role", "admin")
    what = None
    if getattr(target, "moves_alias", False):
        alias = _moved_alias()
        if alias in runtime().auth.protected_aliases:
            role, what = "promoter", f"moving the protected alias {alias!r}"
    g.actor = authorize(session, authorization, runtime().auth, role=role,
                        private_read=getattr(target, "private_read", None), what=what)


def _moved_alias() -> str:
    """The alias a :func:`moves_alias` view moves: its path's, else its JSON body's ``alias``
    (a body that is not JSON, or names none, moves the default)."""
    alias = (request.view_args or {}).get("alias")
    if alias is None and request.is_json:
        try:
            body = parse_json(request.get_data(cache=True))  # read once: the view's parser reuses it
        except ModelyardError:  # malformed or too deep: the view's own parse refuses it
            body = None
        alias = body.get("alias") if isinstance(body, dict) else None
    return alias if isinstance(alias, str) else DEFAULT_ALIAS


def current_actor() -> Actor:
    actor: Actor = g.actor
    return actor


def answering_view() -> object:
    """The function that answers this request: the view, or its MethodView method (looked
    up once per request)."""
    if "answering_view" in g:
        return g.answering_view
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    method = request.method.lower()
    if view_class is not None:
        view = getattr(view_class, "get" if method == "head" else method, None)
    g.answering_view = view
    return view
