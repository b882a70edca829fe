"""schemathesis over /openapi.json: generated requests for every operation, a bounded number of
examples each, find no 5xx and no response that breaks the documented schema."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from modelyard.app import create_app
from modelyard.web.context import EXTENSION

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[Flask, Any, str]]:
    # SQLite only: the OpenAPI contract does not depend on the backend, and every route's
    # behaviour is tested on both backends by the HTTP tests.
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-schemathesis-"))
    app = create_app({
        "database": {"url": f"sqlite:///{tmp / 'registry.db'}"},
        "artifacts": {"root": str(tmp / "artifacts")},
        "auth": {"admin_token_file": str(tmp / "admin.token")},
    })
    token = (tmp / "admin.token").read_text().strip()
    yield app, schemathesis.openapi.from_wsgi("/openapi.json", app), token
    app.extensions[EXTENSION].engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def _operations() -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-schemathesis-ops-"))
    try:
        app = create_app({"database": {"url": f"sqlite:///{tmp / 'r.db'}"}, "artifacts": {"root": str(tmp / "a")},
                          "auth": {"admin_token_file": str(tmp / "t")}, "serving": {"seed": False}}, prepare=False)
        spec = app.test_client().get("/openapi.json").json
        return [f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item
                if method in ("get", "post", "put", "patch", "delete")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("operation", _operations())
def test_no_5xx_and_responses_match_the_schema(api: tuple[Flask, Any, str], operation: str) -> None:
    _app, schema, token = api
    method, path = operation.split(" ", 1)
    strategy = schema[path][method].as_strategy()

    @given(case=strategy)
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def run(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    run()
