"""Errors of the serving request layer (the body's form, before it meets a model)."""

from __future__ import annotations

from registry.errors import ModelyardError


class MalformedBody(ModelyardError):
    """The body is not valid JSON (400)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the body is not valid JSON: {detail}")


class UnsupportedMediaType(ModelyardError):
    """The body is not declared as JSON (415)."""

    def __init__(self, mimetype: str) -> None:
        self.mimetype = mimetype
        shown = mimetype or "none"
        super().__init__(f"the body must be JSON (Content-Type: application/json), got {shown}")
