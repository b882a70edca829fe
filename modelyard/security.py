"""Who is calling, and may they: the request-level half of auth (tokens live in registry.auth).

Runs before any body is read, so the order of checks is routing (404, 405), then auth (401,
403), then the request's form and state.
"""

from __future__ import annotations

from flask import current_app, g, request

from modelyard.registry.auth import Actor, identify, require, require_token_for
from modelyard.runtime import runtime, session

# Endpoints anyone may call: liveness, readiness, server info, the OpenAPI document and docs.
_OPEN_BLUEPRINTS = ("ops", "api-docs", "docs-assets")


def authorize_request() -> None:
    """Resolve the caller into ``g.actor`` and refuse the request if its role is too low."""
    if request.routing_exception is not None or request.endpoint is None:
        return  # routing errors answer first
    auth = runtime().config["auth"]
    g.actor = identify(session, request.headers.get("Authorization"), auth["anonymous_role"])
    if request.method == "OPTIONS":
        return
    target = _target()
    kind = getattr(target, "private_read", None)
    if kind is not None:
        require_token_for(g.actor, kind, auth["private_reads"])
    if request.blueprint in _OPEN_BLUEPRINTS:
        return
    # Fail closed: an endpoint nobody annotated needs an admin.
    require(g.actor, getattr(target, "required_role", "admin"))


def current_actor() -> Actor:
    actor: Actor = g.actor
    return actor


def authorize_alias_move(alias: str) -> None:
    """Protected aliases (config) move only with a promoter or admin token."""
    if alias in runtime().config["auth"]["protected_aliases"]:
        require(g.actor, "promoter", what=f"moving the protected alias {alias!r}")


def _target() -> object:
    """The function that answers this request: the view, or its MethodView method."""
    view = current_app.view_functions[request.endpoint or ""]
    view_class = getattr(view, "view_class", None)
    method = request.method.lower()
    if view_class is not None:
        return getattr(view_class, "get" if method == "head" else method, None)
    return view

