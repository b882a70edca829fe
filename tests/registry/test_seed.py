from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from modelyard.app import create_app
from modelyard.registry import seed
from modelyard.registry.models import Alias, Event, Model, ModelVersion
from modelyard.web.context import EXTENSION, Runtime


def _counts(rt: Runtime) -> tuple[int, ...]:
    with rt.sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Model, ModelVersion, Alias, Event))


def test_seed_registers_iris_version_1_with_production(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        version = session.scalar(select(ModelVersion))
        assert version.model.name == "iris" and version.version == 1
        assert version.feature_names == seed.IRIS_FEATURES
        assert version.labels == seed.IRIS_LABELS
        assert version.classes == [0, 1, 2]
        assert version.created_by == "modelyard"
        assert runtime.store.exists(version.sha256)
        events = [e.action for e in session.scalars(select(Event).order_by(Event.id))]
    assert events == ["model.created", "version.created", "alias.set"]


def test_seeding_is_idempotent(config: dict[str, Any], runtime: Runtime) -> None:
    before = _counts(runtime)
    again = create_app(config).extensions[EXTENSION]
    assert _counts(again) == before == (1, 1, 1, 3)
    with again.sessions() as session:
        assert seed.seed_iris(session, again.store) is False


def test_seed_can_be_turned_off(config: dict[str, Any]) -> None:
    rt = create_app({**config, "serving": {"seed": False}}).extensions[EXTENSION]
    assert _counts(rt) == (0, 0, 0, 0)


def test_seed_on_postgresql(pg_url: str, tmp_path: Any) -> None:
    config = {"database": {"url": pg_url}, "artifacts": {"root": str(tmp_path / "a")},
              "auth": {"admin_token_file": str(tmp_path / "admin.token")}}
    app = create_app(config)
    client = app.test_client()
    body = {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8}
    assert client.post("/predict", json=body).json["predictions"] == [2]
    create_app(config)  # idempotent on PostgreSQL too
    assert client.get("/models/iris").json["version_count"] == 1
    app.extensions[EXTENSION].engine.dispose()
