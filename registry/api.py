"""The registry's REST API (read side): models, versions and aliases."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.pagination import PaginationParameters

from modelyard.runtime import session
from registry import service
from registry.schemas import ModelListArgs, ModelSchema, VersionSchema

blp = Blueprint("registry", __name__, description="Registered models, their versions and aliases")


@blp.route("/models")
class Models(MethodView):
    @blp.arguments(ModelListArgs, location="query", as_kwargs=True)
    @blp.response(200, ModelSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters, **filters: Any) -> Any:
        """List models

        Ordered by name; `q` filters by name substring, `tag` by `key:value`. Pagination
        metadata is in the `X-Pagination` header.
        """
        page, total = service.list_models(
            session(),
            q=filters.get("q"),
            tag=filters.get("tag"),
            offset=pagination_parameters.first_item,
            limit=pagination_parameters.page_size,
        )
        pagination_parameters.item_count = total
        return page


@blp.route("/models/<name>")
class ModelDetail(MethodView):
    @blp.response(200, ModelSchema)
    def get(self, name: str) -> Any:
        """Get a model

        With its aliases (`{alias: version}`), latest version number and version count.
        """
        return service.model_detail(session(), name)


@blp.route("/models/<name>/versions")
class Versions(MethodView):
    @blp.response(200, VersionSchema(many=True))
    @blp.paginate()
    def get(self, name: str, pagination_parameters: PaginationParameters) -> Any:
        """List a model's versions

        Newest first. Pagination metadata is in the `X-Pagination` header.
        """
        page, total = service.list_versions(
            session(), name,
            offset=pagination_parameters.first_item,
            limit=pagination_parameters.page_size,
        )
        pagination_parameters.item_count = total
        return page


@blp.route("/models/<name>/versions/<ref>")
class VersionDetail(MethodView):
    @blp.response(200, VersionSchema)
    def get(self, name: str, ref: str) -> Any:
        """Get a version

        `ref` is a version number (`3` or `v3`), an alias such as `production`, or `latest`.
        """
        return service.version_detail(session(), name, ref)


@blp.route("/models/<name>/aliases")
class Aliases(MethodView):
    @blp.response(200, {"type": "object", "additionalProperties": {"type": "integer"}})
    def get(self, name: str) -> Any:
        """List a model's aliases

        As `{alias: version}`.
        """
        return jsonify(service.model_aliases(session(), name))
