"""Who is calling, and may they: the request-level half of auth (tokens live in registry.auth).

Runs before any body is read, so the order of checks is routing (404, 405), then auth (401,
403), then the request's form and state.
"""

from __future__ import annotations

from flask import current_app, g, request

from modelyard.runtime import runtime, session
from registry.auth import ANONYMOUS, Actor, Forbidden, Unauthorized, authenticate

# Endpoints anyone may call: liveness, readiness, server info, the OpenAPI document and docs.
_OPEN_BLUEPRINTS = ("ops", "api-docs")


def authorize_request() -> None:
    """Resolve the caller into ``g.actor`` and refuse the request if its role is too low."""
    if request.routing_exception is not None or request.endpoint is None:
        return  # routing errors answer first
    g.actor = _resolve_actor()
    if request.blueprint in _OPEN_BLUEPRINTS or request.method == "OPTIONS":
        return
    _require(_required_role())


def current_actor() -> Actor:
    return g.actor


def authorize_alias_move(alias: str) -> None:
    """Protected aliases (config) move only with a promoter or admin token."""
    if alias in runtime().config["auth"]["protected_aliases"]:
        _require("promoter", what=f"moving the protected alias {alias!r}")


def _resolve_actor() -> Actor:
    header = request.headers.get("Authorization")
    if header is None:
        role = runtime().config["auth"]["anonymous_role"]
        return Actor(ANONYMOUS, None if role == "none" else role, authenticated=False)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token>'")
    db = session()
    try:
        actor = authenticate(db, token.strip())
    finally:
        db.rollback()  # release the connection: a predict must not hold one while it waits
    if actor is None:
        raise Unauthorized("the token is unknown or revoked")
    return actor


def _required_role() -> str:
    view = current_app.view_functions[request.endpoint]
    view_class = getattr(view, "view_class", None)
    method = request.method.lower()
    if view_class is not None:
        target = getattr(view_class, "get" if method == "head" else method, None)
    else:
        target = view
    # Fail closed: an endpoint nobody annotated needs an admin.
    return getattr(target, "required_role", "admin")


def _require(role: str, *, what: str | None = None) -> None:
    actor: Actor = g.actor
    if actor.at_least(role):
        return
    need = f"{what} needs" if what else "this needs"
    if not actor.authenticated:
        raise Unauthorized(f"{need} a token with role {role} or above")
    raise Forbidden(f"{need} role {role} or above; token {actor.name!r} has role {actor.role}")
