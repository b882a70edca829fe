"""What a running app holds (engine, sessions, artifact store, estimator cache), and the
request-scoped session the views use. Built once by ``create_app``; nothing here at import."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelyard.registry.refs import RefCache
from modelyard.registry.service import RemovedVersion
from modelyard.registry.storage import ArtifactStore

if TYPE_CHECKING:
    from modelyard.serving.batching import Batchers
    from modelyard.serving.cache import LRUCache

EXTENSION = "modelyard"


@dataclass
class Runtime:
    config: dict[str, dict[str, Any]]
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    cache: LRUCache[Any]
    serving: Any  # serving.service.Options, read once from the configuration
    refs: RefCache  # ref resolutions for the predict path, revalidated per request
    batchers: Batchers  # micro-batchers of the models batching is on for
    # Called after versions are deleted (serving drops them from its cache); the registry
    # announces removals without knowing who listens.
    removal_listeners: list[Callable[[Sequence[RemovedVersion]], None]] = field(default_factory=list)
    # What serving's cache holds for a version (loaded, load_ms, last_used), for its detail.
    cache_state: Callable[[str, int, str], dict[str, Any]] = lambda name, version, sha256: {}
    # serving.http.PredictHandler: answers a predict request from its WSGI environ.
    predict: Callable[..., Any] = lambda environ, route: None

    def versions_removed(self, removed: Sequence[RemovedVersion]) -> None:
        for listener in self.removal_listeners:
            listener(removed)


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions[EXTENSION]
    return rt


def session() -> Session:
    """The request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    db_session: Session = g.db_session
    return db_session


def close_session(_exc: BaseException | None = None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()
