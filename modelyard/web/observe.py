"""Timing and reporting Flask's requests to the runtime's observers (the predict lane reports
its own, in the same :class:`~modelyard.web.context.Observation`)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from modelyard.web.auth import answering_view
from modelyard.web.context import Observation, runtime


def install(app: Flask) -> None:
    """Installed first, so the time includes authentication."""
    app.before_request(_start)
    app.after_request(_finish)


def label_prediction(model: str, version: str, alias: str = "") -> None:
    """A predict view says which version answered (and the alias that chose it), once known."""
    g.observed_model = model
    g.observed_version = version
    g.observed_alias = alias


def _start() -> None:
    g.observe_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("observe_started")
    endpoint = request.endpoint
    kind = getattr(answering_view(), "counts_as", None) if endpoint is not None else None
    runtime().observe(Observation(
        endpoint or "unmatched", request.method, response.status_code,
        None if started is None else time.perf_counter() - started,
        kind, g.get("observed_model", ""), g.get("observed_version", ""), g.get("observed_alias", "")))
    return response
