"""Marshmallow schemas of the registry API (responses and query arguments)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate


class ModelListArgs(ma.Schema):
    q = fields.String(metadata={"description": "Only models whose name contains this substring"})
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
    library_versions = fields.Dict(keys=fields.String(), values=fields.String())
    description = fields.String()
    metadata = fields.Dict(keys=fields.String(), values=fields.Raw())
    tags = fields.Dict(keys=fields.String(), values=fields.String())
    aliases = fields.List(fields.String())
    created_at = fields.AwareDateTime()
    created_by = fields.String()
