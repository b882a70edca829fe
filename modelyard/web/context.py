"""What a running app holds (engine, sessions, artifact store, the Predictor), the request's
session, and what a finished request reports to its observers (metrics). Built whole by
``create_app``; nothing here at import."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from flask import current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelyard.registry.auth import AuthPolicy
from modelyard.registry.sandbox import Limits
from modelyard.registry.service import RemovedVersion
from modelyard.registry.storage import ArtifactStore

EXTENSION = "modelyard"


class Serving(Protocol):
    """What the registry's routes, the operations routes and the UI ask of serving (the
    Predictor): this process's state of a version, to stop serving deleted versions, to load a
    version (readiness), a version's predictions for a few rows (the UI's compare), and this
    process's shadow counts written out (before a shadow's report is read)."""

    def cache_state(self, name: str, version: int, sha256: str) -> dict[str, Any]: ...

    def forget(self, removed: Sequence[RemovedVersion]) -> None: ...

    def ready(self, session: Callable[[], Session], name: str, ref: str) -> int: ...

    def predictions(self, session: Callable[[], Session], name: str, ref: str, rows: Any) -> list[Any]: ...

    def flush_counts(self) -> None: ...


class PredictAnswer(Protocol):
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    model: str
    version: str
    alias: str


class AnswersPredicts(Protocol):
    """Answers a predict request from its WSGI environ and route (serving.http)."""

    def __call__(self, environ: dict[str, Any], route: Any) -> PredictAnswer: ...


class Observation(NamedTuple):
    """One finished request, as its observers (metrics) see it (a tuple: one is made for every
    predict)."""

    endpoint: str
    method: str
    status: int
    seconds: float | None
    kind: str | None = None  # "predict", "upload": what the answering view counts as (web.auth.counts_as)
    model: str = ""  # a predict's model and version, once resolved
    version: str = ""
    alias: str = ""  # the alias that chose the version, if one did


Observer = Callable[[Observation], None]


class Startable(Protocol):
    def start(self) -> None: ...


@dataclass(frozen=True)
class Runtime:
    settings: Any  # the roof's typed Settings (modelyard.config); blueprints read the parts below
    auth: AuthPolicy
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    upload_max_bytes: int  # the largest model file accepted
    upload_limits: Limits  # what an upload's trial may use, and the extra globals it may import
    predictor: Serving  # resolve -> load (cache) -> predict, for every protocol
    predict: AnswersPredicts  # answers a predict request from its WSGI environ (serving.http)
    observers: tuple[Observer, ...] = ()
    background: tuple[Startable, ...] = ()  # started in each server process after the fork (webhook senders)

    def versions_removed(self, removed: Sequence[RemovedVersion]) -> None:
        """The registry deleted versions: this process stops serving them."""
        self.predictor.forget(removed)

    def observe(self, observation: Observation) -> None:
        for observer in self.observers:
            observer(observation)


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
