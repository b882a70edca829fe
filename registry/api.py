"""The registry's REST API: models, versions (upload, metadata, artifacts), aliases, events."""

from __future__ import annotations

import mmap
import os
from dataclasses import replace
from typing import Any

from flask import Response, request, url_for
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters

from modelyard.registry import auth, maintenance, queries, service, upload
from modelyard.registry.errors import InvalidArtifact, InvalidInput, MalformedBody, TooLarge
from modelyard.registry.schemas import (
    ArgumentsParser,
    CheckReportSchema,
    EventListArgs,
    EventSchema,
    ModelCreateSchema,
    ModelListArgs,
    ModelSchema,
    PatchSchema,
    TokenCreateSchema,
    TokenSchema,
    UploadSchema,
    VersionListArgs,
    VersionSchema,
)
from modelyard.registry.storage import Data, chunks_of
from modelyard.web.auth import counts_as, current_actor, private, requires
from modelyard.web.body import parse_csv, parse_json, require_json, require_multipart
from modelyard.web.context import runtime, session
from modelyard.web.paging import PagedBlueprint, page_of

blp = PagedBlueprint("registry", __name__, description="Registered models, their versions and aliases")
blp.ARGUMENTS_PARSER = ArgumentsParser()

_UPLOAD_ENDPOINT = "registry.Versions"
_FORM_OVERHEAD = 1 << 20  # room for the other multipart fields around the file


@blp.before_request
def check_body_type() -> None:
    """415 for a body of the wrong media type; raise the size limit for uploads only."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if request.endpoint == _UPLOAD_ENDPOINT and request.method == "POST":
        request.max_content_length = runtime().upload_max_bytes + _FORM_OVERHEAD
        require_multipart(request.mimetype)
    elif request.content_length:
        require_json(request.mimetype)


@blp.route("/models")
class Models(MethodView):
    @requires("reader")
    @blp.arguments(ModelListArgs, location="query", as_kwargs=True)
    @blp.response(200, ModelSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters, **filters: Any) -> Any:
        """List models

        Ordered by name; `q` filters by name substring (any case), `tag` by `key:value`.
        Pagination metadata is in the `X-Pagination` header; `cursor` pages cost the same at any depth.
        """
        page = queries.list_models(session(), q=filters.get("q"), tag=filters.get("tag"),
                                   offset=pagination_parameters.first_item, limit=pagination_parameters.page_size,
                                   after=filters.get("cursor"))
        return page_of(pagination_parameters, page, "models", by_cursor="cursor" in filters)

    @requires("uploader")
    @blp.arguments(ModelCreateSchema)
    @blp.response(201, ModelSchema)
    @blp.alt_response(409, description="A model with that name exists")
    def post(self, body: dict[str, Any]) -> Any:
        """Create a model

        Uploading a version also creates its model when missing; this creates an empty one.
        """
        detail = service.create_model(session(), body["name"], description=body["description"],
                                      tags=body["tags"], actor=current_actor().name)
        return detail, 201, {"Location": url_for("registry.ModelDetail", name=detail.name)}


@blp.route("/models/<name>")
class ModelDetail(MethodView):
    @requires("reader")
    @blp.response(200, ModelSchema)
    def get(self, name: str) -> Any:
        """Get a model

        With its aliases (`{alias: version}`), latest version number and version count.
        """
        return queries.model_detail(session(), name)

    @requires("uploader")
    @blp.arguments(PatchSchema)
    @blp.response(200, ModelSchema)
    def patch(self, body: dict[str, Any], name: str) -> Any:
        """Update a model's description and/or tags

        Tags are replaced whole.
        """
        return service.update_model(session(), name, description=body.get("description"),
                                    tags=body.get("tags"), actor=current_actor().name)

    @requires("admin")
    @blp.response(204)
    def delete(self, name: str) -> None:
        """Delete a model

        With all its versions and aliases; artifacts no other model uses are removed.
        """
        runtime().versions_removed(service.delete_model(session(), runtime().store, name, actor=current_actor().name))


@blp.route("/models/<name>/versions")
class Versions(MethodView):
    @requires("reader")
    @blp.arguments(VersionListArgs, location="query", as_kwargs=True)
    @blp.response(200, VersionSchema(many=True))
    @blp.paginate()
    def get(self, name: str, pagination_parameters: PaginationParameters, **args: Any) -> Any:
        """List a model's versions

        Newest first. Pagination metadata is in the `X-Pagination` header; `cursor` pages cost the
        same at any depth.
        """
        page = queries.list_versions(session(), name, offset=pagination_parameters.first_item,
                                     limit=pagination_parameters.page_size, before=args.get("cursor"))
        return page_of(pagination_parameters, page, "versions", by_cursor="cursor" in args)

    @counts_as("upload")
    @requires("uploader")
    @blp.arguments(UploadSchema, location="files")
    @blp.response(201, VersionSchema)
    @blp.alt_response(413, description="The file is larger than the upload limit")
    @blp.alt_response(415, description="The body is not multipart/form-data")
    def post(self, form: dict[str, Any], name: str) -> Any:
        """Upload a new version

        Multipart: `file` (pickle, joblib or skops) and optional `format`, `description`, and
        JSON-string fields `metadata` ({metrics, params, tags}), `features`, `labels`,
        `feature_aliases`, `tags`, `example`, and `reference` (training rows, CSV or JSON: profiled
        per feature for drift, not kept). The file is scanned before anything is stored: a pickle that
        imports anything off the allowlist is refused with 422 naming it. Creates the model
        when missing.
        """
        rt = runtime()
        data = _read_upload(form["file"].stream, rt.upload_max_bytes)
        metadata = form.get("metadata") or {}
        spec = upload.VersionSpec(
            fmt=form.get("format"),
            description=form["description"],
            feature_names=form.get("features"),
            feature_aliases=form.get("feature_aliases") or {},
            labels=form.get("labels"),
            metrics=metadata.get("metrics", {}),
            params=metadata.get("params", {}),
            tags={**metadata.get("tags", {}), **(form.get("tags") or {})},
            example=form.get("example"),
            reference=_reference(form.get("reference"), rt.upload_max_bytes),
        )
        try:
            detail = service.register_version(session(), rt.store, name, data, spec,
                                              actor=current_actor().name, limits=rt.upload_limits)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
        location = url_for("registry.VersionDetail", name=name, ref=str(detail.version))
        return detail, 201, {"Location": location}


@blp.route("/models/<name>/versions/<ref>")
class VersionDetail(MethodView):
    @requires("reader")
    @blp.response(200, VersionSchema)
    def get(self, name: str, ref: str) -> Any:
        """Get a version

        `ref` is a version number (`3` or `v3`), an alias such as `production`, or `latest`.
        `loaded`, `load_ms` and `last_used` describe the serving process that answers.
        """
        detail = queries.version_detail(session(), name, ref)
        return replace(detail, serving=runtime().predictor.cache_state(name, detail.version, detail.sha256))

    @requires("uploader")
    @blp.arguments(PatchSchema)
    @blp.response(200, VersionSchema)
    def patch(self, body: dict[str, Any], name: str, ref: str) -> Any:
        """Update a version's description and/or tags

        The rest of a version is immutable. Tags are replaced whole.
        """
        return service.update_version(session(), name, ref, description=body.get("description"),
                                      tags=body.get("tags"), actor=current_actor().name)

    @requires("promoter")
    @blp.response(204)
    @blp.alt_response(409, description="An alias points at the version")
    def delete(self, name: str, ref: str) -> None:
        """Delete a version

        Refused with 409 while an alias points at it. Its number is never reused.
        """
        removed = service.delete_version(session(), runtime().store, name, ref, actor=current_actor().name)
        runtime().versions_removed([removed])


@blp.route("/models/<name>/versions/<ref>/artifact")
class VersionArtifact(MethodView):
    @requires("reader")
    @private("artifacts")
    @blp.response(200, {"type": "string", "format": "binary"}, content_type="application/octet-stream")
    @blp.alt_response(304, description="Not modified: If-None-Match names this artifact's sha256")
    def get(self, name: str, ref: str) -> Response:
        """Download a version's stored file

        The ETag is the file's sha256; send it back in `If-None-Match` to get a 304.
        """
        tags = request.if_none_match
        known = ("*",) if tags.star_tag else tuple(tags.as_set())
        artifact = queries.get_artifact(session(), runtime().store, name, ref, if_none_match=known)
        if artifact.data is None:
            response = Response(status=304)
        else:
            data = artifact.data
            body = data if isinstance(data, bytes) else chunks_of(data)
            response = Response(body, mimetype="application/octet-stream")
            response.content_length = len(data)
            response.headers["Content-Disposition"] = f'attachment; filename="{artifact.filename}"'
        response.set_etag(artifact.sha256)
        return response


@blp.route("/models/<name>/events")
class Events(MethodView):
    @requires("reader")
    @private("events")
    @blp.arguments(EventListArgs, location="query", as_kwargs=True)
    @blp.response(200, EventSchema(many=True))
    @blp.paginate()
    def get(self, name: str, pagination_parameters: PaginationParameters, **args: Any) -> Any:
        """A model's audit history

        Newest first; every change with its actor, time, before and after. Kept after the
        model is deleted. Pages by number or by `cursor`, as the other lists.
        """
        page = queries.list_events(session(), name, offset=pagination_parameters.first_item,
                                   limit=pagination_parameters.page_size, before=args.get("cursor"))
        return page_of(pagination_parameters, page, "events", by_cursor="cursor" in args)


@blp.route("/admin/check")
class Check(MethodView):
    @requires("admin")
    @blp.response(200, CheckReportSchema)
    def post(self) -> Any:
        """Re-trial every stored version

        Each version is loaded and trial-predicted again in the sandbox under the libraries
        installed now, and reported as `ok`, `warning` (it loads and predicts, with load
        warnings such as a scikit-learn version mismatch) or `broken` (with the reason). Run it
        before upgrading scikit-learn.
        """
        rt = runtime()
        return maintenance.check_versions(session(), rt.store, limits=rt.upload_limits)


@blp.route("/tokens")
class Tokens(MethodView):
    @requires("admin")
    @blp.response(200, TokenSchema(many=True))
    def get(self) -> Any:
        """List API tokens

        Names, roles and who created them; never the tokens themselves.
        """
        return auth.list_tokens(session())

    @requires("admin")
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenSchema)
    @blp.alt_response(409, description="A token with that name exists")
    def post(self, body: dict[str, Any]) -> Any:
        """Create an API token

        The answer carries the token once; only its hash is kept. Roles: reader, predictor,
        uploader, promoter, admin.
        """
        return auth.create_token(session(), body["name"], body["role"], created_by=current_actor().name)


@blp.route("/tokens/<name>")
class TokenDetail(MethodView):
    @requires("admin")
    @blp.response(204)
    def delete(self, name: str) -> None:
        """Revoke an API token

        Requests bearing it are refused from the next one on.
        """
        auth.revoke_token(session(), name)


def _reference(part: Any, max_bytes: int) -> Any:
    """An upload's reference: a CSV (a ``.csv`` file, a ``text/csv`` part, or text that is not
    JSON) as ``{"columns", "data"}``, else JSON rows or records; None when absent."""
    if part is None:
        return None
    if isinstance(part, str):
        raw, csv = part.encode(), not part.lstrip().startswith(("[", "{"))
    else:
        raw = part.stream.read(max_bytes + 1)
        csv = (part.filename or "").lower().endswith(".csv") or part.mimetype == "text/csv"
    if len(raw) > max_bytes:
        raise TooLarge(f"the reference is larger than the upload limit of {max_bytes} bytes",
                       errors={"max_bytes": max_bytes})
    try:
        return parse_csv(raw) if csv else parse_json(raw)
    except MalformedBody as unreadable:  # the field's content, not the request's body
        text = unreadable.message.replace("the CSV body", "it").replace("the body", "it")
        raise InvalidInput(f"the reference could not be parsed as {'CSV' if csv else 'JSON'}: {text}",
                           errors={"reference": "unreadable"}) from None


_IN_MEMORY_BYTES = 1 << 20  # a smaller file is read into memory; a larger one is mapped


def _read_upload(stream: Any, max_bytes: int) -> Data:
    """The uploaded file's bytes. werkzeug has already streamed a large one to a temporary file
    as it arrived; it is mapped read-only rather than read into this worker's memory."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    if size > max_bytes:
        raise TooLarge(f"the file is larger than the upload limit of {max_bytes} bytes",
                       errors={"max_bytes": max_bytes})
    if not size:
        raise InvalidArtifact("the file is empty")
    if size > _IN_MEMORY_BYTES:
        try:
            return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except (AttributeError, OSError, ValueError):  # a stream with no file under it (io.UnsupportedOperation)
            pass
    data: bytes = stream.read()
    return data
