"""Lists by page number and by cursor.

Every list takes ``page`` and ``page_size`` (flask-smorest's pagination, its ``X-Pagination``
header) and also ``cursor``: an opaque token naming the last item of the page before, which the
answer gives as ``next_cursor`` in ``X-Pagination`` and as a ``Link: <...>; rel="next"``
header. A page number is read with OFFSET and costs more the deeper it goes; a cursor is read
through the list's index from its key and costs the same at any depth (GitHub's and Stripe's
lists work the same way); a cursor page is not counted, so its ``X-Pagination`` has the total
only where it is kept (a model's versions).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlencode

import marshmallow as ma
from flask import Response, request
from flask_smorest import Blueprint
from flask_smorest.pagination import PaginationMetadataSchema, PaginationParameters

from modelyard.registry.queries import Page

__all__ = ["Cursor", "PagedBlueprint", "page_of"]


def encode_cursor(kind: str, key: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, key]).encode()).decode().rstrip("=")


class Cursor(ma.fields.Field):  # type: ignore[type-arg]
    """A cursor token of one list: decodes to the key of the item the page starts after, or
    refuses (422) a token that is not one of this list's."""

    def __init__(self, kind: str, key_type: type, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "Start after the item this token names: the `next_cursor` of the page before "
                           "(X-Pagination, or the `Link` header's `rel=\"next\"`). Costs the same at any depth; "
                           "`page` is ignored when given.")
        super().__init__(**kwargs)
        self.kind = kind
        self.key_type = key_type

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            text = str(value)
            decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ma.ValidationError("not a cursor this server gave") from None
        if (not isinstance(decoded, list) or len(decoded) != 2 or decoded[0] != self.kind
                or type(decoded[1]) is not self.key_type):
            raise ma.ValidationError("not a cursor of this list")
        return decoded[1]

    def _jsonschema_type_mapping(self) -> dict[str, str]:
        return {"type": "string"}


class CursorMetadataSchema(PaginationMetadataSchema):
    next_cursor = ma.fields.String(metadata={"description": "The `cursor` of the next page; absent on the last."})


def page_of(params: PaginationParameters, page: Page[Any], kind: str, *, by_cursor: bool) -> list[Any]:
    """The page's items, leaving its count (None when not counted) and next cursor for the
    pagination header."""
    params.total = page.total
    params.item_count = page.total or 0  # flask-smorest writes no header without one
    params.next_cursor = encode_cursor(kind, page.next_key) if page.next_key is not None else None
    params.by_cursor = by_cursor
    return page.items


class PagedBlueprint(Blueprint):
    """A blueprint whose lists also answer with a next cursor (``X-Pagination`` and ``Link``)."""

    def _set_pagination_metadata(self, page_params: PaginationParameters, result: Any,
                                 headers: Any) -> tuple[Any, Any]:
        if isinstance(result, Response):  # a list route answering one item (an alias's history ?at=)
            return result, headers
        headers = {} if headers is None else dict(headers)
        metadata = self._make_pagination_metadata(page_params.page, page_params.page_size, page_params.item_count)
        if getattr(page_params, "by_cursor", False):  # no page numbers; the total when it was free to know
            total = getattr(page_params, "total", None)
            metadata = {} if total is None else {"total": total}
        cursor = getattr(page_params, "next_cursor", None)
        if cursor is not None:
            metadata["next_cursor"] = cursor
            query = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "cursor")]
            headers["Link"] = f'<{request.path}?{urlencode([*query, ("cursor", cursor)])}>; rel="next"'
        headers[self.PAGINATION_HEADER_NAME] = json.dumps(metadata)
        return result, headers

    def _document_pagination_metadata(self, spec: Any, resp_doc: dict[str, Any]) -> None:
        resp_doc.setdefault("headers", {}).update({
            self.PAGINATION_HEADER_NAME: {"description": "Pagination metadata", "schema": CursorMetadataSchema},
            "Link": {"description": 'The next page, by cursor: `<url>; rel="next"` (absent on the last page)',
                     "schema": {"type": "string"}},
        })
