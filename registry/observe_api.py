"""The REST routes of what serving observed: a version's sampled prediction log (a private read:
it holds the requests' inputs) and its drift against its reference profile."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import fields

from modelyard.registry import drift, observe
from modelyard.registry.schemas import ArgumentsParser
from modelyard.web.auth import private, requires
from modelyard.web.context import runtime, session
from modelyard.web.paging import Cursor, PagedBlueprint, page_of

blp = PagedBlueprint("observe", __name__, description="What the served versions answered: the prediction log and "
                                                      "drift against each version's reference")
blp.ARGUMENTS_PARSER = ArgumentsParser()

_TIME = {"format": "ISO 8601, with its zone (2026-12-06T10:00:00Z)"}


class PredictionListArgs(ma.Schema):
    since = fields.AwareDateTime(metadata={"description": "from this time (included)", **_TIME})
    until = fields.AwareDateTime(metadata={"description": "to this time (excluded)", **_TIME})
    cursor = Cursor("predictions", str)


class LoggedPredictionSchema(ma.Schema):
    id = fields.Integer()
    at = fields.AwareDateTime()
    model = fields.String()
    version = fields.Integer()
    alias = fields.String(allow_none=True, metadata={"description": "the alias that chose the version, if one did"})
    request_key = fields.String(allow_none=True, metadata={"description": "X-Request-Key, when the request sent one"})
    n_rows = fields.Integer(metadata={"description": "rows in the request; `rows` keeps the first [observe] "
                                                     "logged_rows"})
    rows = fields.List(fields.Raw(), metadata={"description": "the rows as the version read them, in feature order"})
    outputs = fields.List(fields.Raw(), metadata={"description": "what the estimator predicted for them"})
    latency_ms = fields.Float(metadata={"description": "from reading the body to the prediction"})


class DriftArgs(ma.Schema):
    window = fields.String(metadata={"description": "1h (default), 24h or 7d back from now"})
    since = fields.AwareDateTime(metadata={"description": "instead of window: from this time", **_TIME})
    until = fields.AwareDateTime(metadata={"description": "to this time (default: now)", **_TIME})


class BinSchema(ma.Schema):
    bin = fields.String(metadata={"description": "a number feature's range of values, or a category (other: the "
                                                 "categories the reference did not name)"})
    reference = fields.Float(metadata={"description": "the reference's share of its values in this bin"})
    live = fields.Float(metadata={"description": "the window's share"})


class FeatureDriftSchema(ma.Schema):
    feature = fields.String()
    kind = fields.String(metadata={"description": "number or string"})
    samples = fields.Integer(metadata={"description": "rows counted in the window (with missing values)"})
    psi = fields.Float(allow_none=True, metadata={"description": "population stability index (none when "
                                                                 "insufficient)"})
    js_distance = fields.Float(allow_none=True, metadata={"description": "Jensen-Shannon distance, base 2"})
    verdict = fields.String(metadata={"description": "insufficient, none (psi < 0.1), moderate (< 0.25) or "
                                                     "significant"})
    reason = fields.String(metadata={"description": "why the verdict is insufficient"})
    missing = fields.Dict(metadata={"description": "missing rate: reference, live and their change"})
    bins = fields.List(fields.Nested(BinSchema))


class DriftSchema(ma.Schema):
    model = fields.String()
    version = fields.Integer()
    since = fields.AwareDateTime(metadata={"description": "the window's start, rounded down to the counts' bucket"})
    until = fields.AwareDateTime()
    bucket_seconds = fields.Integer(metadata={"description": "the precision the counts are kept at"})
    min_samples = fields.Integer()
    verdict = fields.String(metadata={"description": "the worst feature's (or the predictions'); `no reference` "
                                                     "for a version uploaded without one"})
    message = fields.String()
    reference_rows = fields.Integer()
    features = fields.List(fields.Nested(FeatureDriftSchema))
    predictions = fields.Nested(FeatureDriftSchema, allow_none=True, metadata={
        "description": "the predictions' distribution against the reference's predictions"})


@blp.route("/models/<name>/versions/<ref>/predictions")
class Predictions(MethodView):
    @requires("reader")
    @private("predictions")
    @blp.arguments(PredictionListArgs, location="query", as_kwargs=True)
    @blp.response(200, LoggedPredictionSchema(many=True))
    @blp.paginate()
    def get(self, name: str, ref: str, pagination_parameters: PaginationParameters, **args: Any) -> Any:
        """A version's logged predictions

        The sampled requests ([observe] sample_rate) this version answered, newest first: their
        rows, outputs, latency, alias and request key. Each server writes its log every
        [observe] flush_seconds; kept [observe] retention_days. Pages by number or `cursor`.
        """
        runtime().predictor.flush_counts()
        page = observe.page(session(), name, ref, since=args.get("since"), until=args.get("until"),
                            offset=pagination_parameters.first_item, limit=pagination_parameters.page_size,
                            after=args.get("cursor"))
        return page_of(pagination_parameters, page, "predictions", by_cursor="cursor" in args)


@blp.route("/models/<name>/versions/<ref>/drift")
class Drift(MethodView):
    @requires("reader")
    @blp.arguments(DriftArgs, location="query", as_kwargs=True)
    @blp.response(200, DriftSchema)
    def get(self, name: str, ref: str, **args: Any) -> Any:
        """A version's drift against its reference

        Per feature, the window's traffic against the reference the version was uploaded with,
        in the reference's fixed bins (counted by every server, added up): the shares of each
        bin, PSI, Jensen-Shannon distance, missing-rate change, samples and a verdict; the same
        for its predictions when the reference's were profiled. Below [observe] min_samples a
        feature is `insufficient`, with no score.
        """
        rt = runtime()
        rt.predictor.flush_counts()
        since, until = drift.window_of(args.get("window"), args.get("since"), args.get("until"),
                                       dt.datetime.now(dt.UTC))
        return drift.report(session(), name, ref, since=since, until=until,
                            min_samples=rt.settings.observe.min_samples)
