"""Marshmallow schemas of the registry API (part of its blueprint, with ``api.py``): request
bodies, query arguments, responses; the responses dump the read side's views (``queries``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import marshmallow as ma
from flask_smorest.fields import Upload
from marshmallow import ValidationError, fields, validate
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.datastructures import CombinedMultiDict

from modelyard.registry.auth import ROLES
from modelyard.registry.refs import DEFAULT_ALIAS
from modelyard.registry.safety import FORMATS
from modelyard.web.body import parse_json
from modelyard.web.paging import Cursor

_DESCRIPTION = validate.Length(max=10_000)
MAX_EXAMPLE_ROWS = 100  # an upload's example is kept with the version and shown in its detail


def _fail(message: str) -> bool:
    raise ValidationError(message)
class ArgumentsParser(FlaskParser):
    """flask-smorest's parser, reading JSON bodies through :func:`parse_json`, and a multipart
    body's files and fields as one (``location="files"``), so one schema documents the whole
    upload as an OpenAPI 3 ``multipart/form-data`` request body."""

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        return parse_json(req.get_data(cache=True))

    def load_files(self, req: Any, schema: ma.Schema) -> Any:
        return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)


def _tags(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=128)),
        values=fields.String(validate=validate.Length(max=1024)),
        validate=validate.Length(max=100),
        **kwargs,
    )


class JSONString(fields.Field):  # type: ignore[type-arg]
    """A multipart form field holding JSON, checked with an inner field. ``expected`` and
    ``example`` make the error say what to send (``must be a JSON list, e.g. ["a", "b"]``)."""

    def __init__(self, inner: fields.Field, *, expected: str = "JSON", example: str = "",  # type: ignore[type-arg]
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.hint = f"must be {expected}" + (f", e.g. {example}" if example else "")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError(f"{self.hint} (a string holding JSON)")
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValidationError(f"{self.hint}; not valid JSON: {exc}") from None
        try:
            return self.inner.deserialize(parsed)
        except ValidationError as exc:
            if isinstance(exc.messages, list):
                raise ValidationError([f"{self.hint}: {m}" for m in exc.messages]) from None
            raise


class MetadataSchema(ma.Schema):
    metrics = fields.Dict(keys=fields.String(), values=fields.Float(allow_nan=False), load_default=dict)
    params = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)
    tags = _tags(load_default=dict)


class ModelFile(Upload):
    """The model file part; a text field of that name (``-F file=model.pkl``, without ``@``)
    gets an error that says what to do."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            raise ValidationError("must be a file upload (curl -F file=@model.pkl), not a text field")
        return value


class ReferenceFile(Upload):
    """The reference data part: a file, or the same text in a form field (``-F reference=@x.csv``
    or ``-F 'reference=[[...]]'``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return value


class UploadSchema(ma.Schema):
    file = ModelFile(required=True, metadata={"description": "The model file: pickle, joblib or skops"},
                     error_messages={"required": "a model file is required (curl -F file=@model.pkl)"})
    format = fields.String(validate=validate.OneOf(FORMATS),
                           metadata={"description": "pickle, joblib or skops; detected from the content when absent"})
    description = fields.String(validate=_DESCRIPTION, load_default="")
    metadata = JSONString(fields.Nested(MetadataSchema), expected="a JSON object",
                          example='{"metrics": {"accuracy": 0.97}, "params": {"C": 1.0}}',
                          metadata={"description": "JSON: {metrics, params, tags}"})
    features = JSONString(
        fields.List(fields.String(validate=validate.Length(min=1, max=256)), validate=validate.Length(min=1)),
        expected="a JSON list of feature names", example='["sepal.length", "sepal.width"]',
        metadata={"description": "JSON list of feature names, in the estimator's column order"},
    )
    labels = JSONString(
        fields.List(fields.Raw(), validate=validate.Length(min=1)),
        expected="a JSON list", example='["setosa", "versicolor", "virginica"]',
        metadata={"description": "JSON list of class labels, aligned with the estimator's classes_"},
    )
    feature_aliases = JSONString(
        fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=256)), values=fields.String()),
        expected="a JSON object", example='{"sepal.lenght": "sepal.length"}',
        metadata={"description": "JSON object {synonym: feature name}"},
    )
    tags = JSONString(_tags(), expected="a JSON object of strings", example='{"team": "fraud"}',
                      metadata={"description": "JSON object of string tags"})

    example = JSONString(
        fields.Raw(validate=lambda v: not isinstance(v, list) or len(v) <= MAX_EXAMPLE_ROWS
                   or _fail(f"at most {MAX_EXAMPLE_ROWS} rows")),
        expected="JSON rows or records", example="[[5.1, 3.5, 1.4, 0.2]]",
        metadata={"description": "JSON rows or records (texts for a text model) the upload's trial predicts, "
                                 "kept with the version; without it, probe rows are tried"},
    )


    reference = ReferenceFile(metadata={
        "description": "A file of training (or validation) rows: CSV with a header, or JSON rows or records. "
                       "Profiled per feature in fixed bins (drift compares with them); not kept"})


class ModelCreateSchema(ma.Schema):
    name = fields.String(required=True)
    description = fields.String(validate=_DESCRIPTION, load_default="")
    tags = _tags(load_default=dict)


class PatchSchema(ma.Schema):
    """description and/or tags (tags are replaced whole)."""

    description = fields.String(validate=_DESCRIPTION)
    tags = _tags()

    @ma.validates_schema
    def not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("give description and/or tags")


class VersionRef(fields.Field):  # type: ignore[type-arg]
    """A version number, or a ref string (``v3``, an alias, ``latest``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise ValidationError("must be a version number or a ref string")
        if isinstance(value, int) and value < 1:
            raise ValidationError("version numbers start at 1")
        return str(value)


class AliasSetSchema(ma.Schema):
    version = VersionRef(metadata={"description": "version number (or v<n>, alias, latest)"})
    weights = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={
        "description": 'split requests between versions: {"<version>": weight}, whole numbers >= 0, one above 0',
        "example": {"3": 90, "4": 10}})
    guard = fields.Raw(metadata={
        "description": "with weights: return the alias to its state before the canary when a version new to it "
                       "passes the limit over the window (never on fewer than min_samples requests)",
        "example": {"metric": "error_rate", "max": 0.05, "window_seconds": 300, "min_samples": 200}})

    @ma.validates_schema
    def one_target(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if ("version" in data) == ("weights" in data):
            raise ValidationError('give exactly one of version ({"version": 4}) or weights ({"weights": {"3": 90, '
                                  '"4": 10}})')
        if "guard" in data and "weights" not in data:
            raise ValidationError("a guard watches a canary: give it with weights", "guard")


class PromoteSchema(ma.Schema):
    alias = fields.String(load_default=DEFAULT_ALIAS)


class AliasMoveSchema(ma.Schema):
    alias = fields.String()
    version = fields.Integer(metadata={"description": "the version it points at (a weighted alias: its heaviest)"})
    previous_version = fields.Integer(allow_none=True)
    weights = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "the split, for a weighted alias"})
    previous_weights = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    guard = fields.Dict(allow_none=True, metadata={"description": "the rule guarding the split, if any"})

    @ma.post_dump
    def plain_stays_plain(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        """A plain alias answers as it always did: no weights fields."""
        for key in ("weights", "previous_weights", "guard"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class EventSchema(ma.Schema):
    id = fields.Integer()
    model = fields.String()
    action = fields.String()
    version = fields.Integer(allow_none=True)
    alias = fields.String(allow_none=True)
    actor = fields.String()
    at = fields.AwareDateTime()
    before = fields.Dict(allow_none=True)
    after = fields.Dict(allow_none=True)


class ModelListArgs(ma.Schema):
    q = fields.String(metadata={"description": "Only models whose name contains this substring (any case)"})
    cursor = Cursor("models", str)
    tag = fields.String(
        validate=validate.Regexp(r"^[^:]+:.*$", error="tag filter must read key:value"),
        metadata={"description": "Only models with this tag, as key:value"},
    )

    @ma.post_load
    def split_tag(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if "tag" in data:
            key, _, value = data["tag"].partition(":")
            data["tag"] = (key, value)
        return data


class VersionListArgs(ma.Schema):
    cursor = Cursor("versions", int)


class EventListArgs(ma.Schema):
    cursor = Cursor("events", int)


class HistoryArgs(ma.Schema):
    cursor = Cursor("history", int)
    at = fields.AwareDateTime(default_timezone=dt.UTC, metadata={
        "description": "An ISO 8601 time: answer the one state in force then, "
                       '`{"alias", "at", "version"}` or `{"alias", "at", "weights"}` (404 before the alias existed)'})


class ShadowSetSchema(ma.Schema):
    version = VersionRef(required=True, metadata={"description": "the version to shadow the alias with"})
    fraction = fields.Float(required=True, metadata={"description": "the share of the alias's requests also run "
                                                                    "on it: above 0, at most 1"})


class ShadowSchema(ma.Schema):
    alias = fields.String()
    version = fields.Integer()
    fraction = fields.Float()
    since = fields.AwareDateTime()


class LatencySchema(ma.Schema):
    p50 = fields.Float(allow_none=True)
    p99 = fields.Float(allow_none=True)


class ShadowReportSchema(ShadowSchema):
    requests = fields.Integer(metadata={"description": "requests sampled for the shadow"})
    compared = fields.Integer(metadata={"description": "of those, answered by the shadow and compared"})
    agreement = fields.Float(allow_none=True, metadata={"description": "share of compared rows predicted alike"})
    rows = fields.Integer(metadata={"description": "rows compared"})
    failures = fields.Integer(metadata={"description": "the shadow failed or refused the input"})
    dropped = fields.Integer(metadata={"description": "not run: the runner's queue was full"})
    max_abs_diff = fields.Float(allow_none=True, metadata={"description": "regressors: the largest difference"})
    latency_ms = fields.Dict(keys=fields.String(), values=fields.Nested(LatencySchema))


class AliasStateSchema(ma.Schema):
    """One state an alias had: a version, or a split of versions."""

    event = fields.Integer(metadata={"description": "the event that gave the alias this state"})
    alias = fields.String()
    version = fields.Integer()
    weights = fields.Dict(keys=fields.String(), values=fields.Integer())
    guard = fields.Dict(metadata={"description": "the rule that guarded the split"})
    since = fields.AwareDateTime()
    until = fields.AwareDateTime(allow_none=True, metadata={"description": "null: the state it has now"})
    actor = fields.String()
    action = fields.String()


class ModelSchema(ma.Schema):
    name = fields.String()
    description = fields.String()
    tags = fields.Dict(keys=fields.String(), values=fields.String())
    latest_version = fields.Integer(allow_none=True)
    version_count = fields.Integer()
    aliases = fields.Dict(keys=fields.String(), values=fields.Integer())
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class VersionSchema(ma.Schema):
    name = fields.String()
    version = fields.Integer()
    sha256 = fields.String()
    size_bytes = fields.Integer()
    format = fields.String()
    estimator = fields.String()
    n_features = fields.Integer()
    feature_names = fields.List(fields.String())
    feature_aliases = fields.Dict(keys=fields.String(), values=fields.String())
    classes = fields.List(fields.Raw(), allow_none=True)
    labels = fields.List(fields.Raw(), allow_none=True)
    has_proba = fields.Boolean()
    input_kind = fields.String(metadata={"description": "array (numbers only) or dataframe (named, typed columns)"})
    feature_types = fields.List(fields.String(), allow_none=True,
                                metadata={"description": "number or string per feature (dataframe inputs)"})
    library_versions = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "sklearn, numpy, scipy and python on the server at upload; sklearn_pickled: the "
                       "scikit-learn version that wrote the file"})
    allow_nan = fields.Boolean(metadata={"description": "null values are sent to the estimator as NaN (missing)"})
    example = fields.Raw(allow_none=True, metadata={"description": "The rows given at upload for the trial"})
    profile = fields.Raw(allow_none=True, metadata={
        "description": "The upload reference's profile per feature: fixed bins (number: decile edges, an "
                       "underflow and an overflow bin, counts, mean, std, missing; string: top categories, "
                       "other, missing), what drift compares with; null without a reference"})
    explainable = fields.Boolean(allow_none=True, metadata={
        "description": "?explain=true explains it (found by its upload's trial; null: uploaded before that)"})
    unexplainable = fields.String(allow_none=True, metadata={"description": "why ?explain=true cannot"})
    example_predictions = fields.Raw(allow_none=True, metadata={
        "description": "What the version predicted for them at upload: a replay at promotion must get the same"})
    load_warnings = fields.List(fields.String(), metadata={
        "description": "Warnings loading the file raised (at upload, and in the answering process)"})
    description = fields.String()
    metadata = fields.Dict(keys=fields.String(), values=fields.Raw())
    tags = fields.Dict(keys=fields.String(), values=fields.String())
    aliases = fields.List(fields.String())
    created_at = fields.AwareDateTime()
    created_by = fields.String()
    loaded = fields.Boolean(metadata={"description": "Loaded in the answering server process"})
    load_ms = fields.Float(allow_none=True)
    last_used = fields.AwareDateTime(allow_none=True)
    fast_path = fields.Boolean(allow_none=True, metadata={
        "description": "Loaded with a predict that skips scikit-learn's per-call input checks "
                       "(verified at load to answer identically)"})


class CheckResultSchema(ma.Schema):
    model = fields.String()
    version = fields.Integer()
    status = fields.String(metadata={"description": "ok, warning or broken"})
    reason = fields.String()
    load_warnings = fields.List(fields.String())
    sklearn_pickled = fields.String(allow_none=True, metadata={"description": "scikit-learn that wrote the file"})


class CheckReportSchema(ma.Schema):
    libraries = fields.Dict(keys=fields.String(), values=fields.String(),
                            metadata={"description": "the libraries the versions were checked under"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    results = fields.List(fields.Nested(CheckResultSchema))


class TokenCreateSchema(ma.Schema):
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class TokenSchema(ma.Schema):
    name = fields.String()
    role = fields.String()
    token = fields.String(metadata={"description": "Only in the answer to the creation"})
    created_at = fields.AwareDateTime()
    created_by = fields.String()
