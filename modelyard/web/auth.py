"""Who is calling, and may they: the request-level half of auth (tokens live in
``registry.auth``), and the marks views carry (least role, private read, what they count as).

Runs before any body is read, so the order of checks is routing (404, 405), then auth (401,
403), then the request's form and state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from modelyard.registry.auth import PRIVATE_READS, Actor, identify, require, require_token_for
from modelyard.web.context import runtime, session

F = TypeVar("F", bound=Callable[..., Any])

# Endpoints anyone may call: liveness, readiness, server info, the OpenAPI document and docs.
_OPEN_BLUEPRINTS = ("ops", "api-docs", "docs-assets")


def requires(role: str) -> Callable[[F], F]:
    """Mark a view (function or MethodView method) with the least role that may call it."""

    def mark(view: F) -> F:
        view.required_role = role  # type: ignore[attr-defined]
        return view

    return mark


def private(kind: str) -> Callable[[F], F]:
    """Mark a read that needs a token (any role) while ``kind`` is in ``[auth] private_reads``:
    an anonymous caller predicts and reads model metadata, nothing more."""
    if kind not in PRIVATE_READS:
        raise ValueError(f"unknown private read {kind!r}")

    def mark(view: F) -> F:
        view.private_read = kind  # type: ignore[attr-defined]
        return view

    return mark


def counts_as(kind: str) -> Callable[[F], F]:
    """Mark a view whose requests the observers count apart ("upload", "predict")."""

    def mark(view: F) -> F:
        view.counts_as = kind  # type: ignore[attr-defined]
        return view

    return mark


def authorize_request() -> None:
    """Resolve the caller into ``g.actor`` and refuse the request if its role is too low."""
    if request.routing_exception is not None or request.endpoint is None:
        return  # routing errors answer first
    policy = runtime().auth
    g.actor = identify(session, request.headers.get("Authorization"), policy.anonymous_role)
    if request.method == "OPTIONS":
        return
    target = answering_view()
    kind = getattr(target, "private_read", None)
    if kind is not None:
        require_token_for(g.actor, kind, policy.private_reads)
    if request.blueprint in _OPEN_BLUEPRINTS:
        return
    # Fail closed: an endpoint nobody annotated needs an admin.
    require(g.actor, getattr(target, "required_role", "admin"))


def current_actor() -> Actor:
    actor: Actor = g.actor
    return actor


def authorize_alias_move(alias: str) -> None:
    """Protected aliases (config) move only with a promoter or admin token."""
    if alias in runtime().auth.protected_aliases:
        require(g.actor, "promoter", what=f"moving the protected alias {alias!r}")


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
