"""Domain errors. They carry their data as attributes and build their own message.

The app's single error handler maps each family (the base classes below) to an HTTP status;
nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any


class ModelyardError(Exception):
    """Base of every error modelyard reports to a client."""

    message: str = "error"

    def __init__(self, message: str | None = None, *, errors: dict[str, Any] | None = None) -> None:
        self.message = message or self.message
        self.errors = errors
        super().__init__(self.message)


class NotFound(ModelyardError):
    """Something named in the request does not exist."""


class Conflict(ModelyardError):
    """The request is well formed but the registry's state forbids it."""


class InvalidInput(ModelyardError):
    """The request is well formed but its content is unusable (422)."""


class TooLarge(ModelyardError):
    """The request exceeds a configured limit (413)."""


class Unavailable(ModelyardError):
    """A dependency (database, artifact) cannot serve right now (503)."""


class MalformedBody(ModelyardError):
    """The body is not valid JSON (400)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the body is not valid JSON: {detail}")


class UnreadableBody(MalformedBody):
    """A body that parses but is not in the form its protocol reads (400)."""

    def __init__(self, message: str, *, errors: dict[str, Any] | None = None) -> None:
        self.detail = message
        ModelyardError.__init__(self, message, errors=errors)


class UnsupportedMediaType(ModelyardError):
    """The body is not of the media type the route takes (415)."""

    def __init__(self, mimetype: str, expected: str = "application/json") -> None:
        self.mimetype = mimetype
        self.expected = expected
        super().__init__(f"the body must be {expected} (Content-Type), got {mimetype or 'none'}")


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model {name!r} not found")


class VersionNotFound(NotFound):
    def __init__(self, name: str, ref: str, hint: str = "") -> None:
        self.name = name
        self.ref = ref
        super().__init__(f"model {name!r} has no version or alias {ref!r}" + (f": {hint}" if hint else ""))


class NoVersions(VersionNotFound):
    """A ref that names the model's default version, of a model that has none."""

    def __init__(self, name: str, ref: str) -> None:
        NotFound.__init__(self, f"model {name!r} has no versions yet: upload one first")
        self.name = name
        self.ref = ref


class ArtifactMissing(Unavailable):
    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        super().__init__(f"artifact {sha256} is missing from the store")


class ArtifactCorrupt(Unavailable):
    def __init__(self, sha256: str, actual: str) -> None:
        self.sha256 = sha256
        self.actual = actual
        super().__init__(f"artifact {sha256} failed its checksum (found {actual})")


class UnsafeArtifact(InvalidInput):
    """The artifact would import something outside the allowlist (``globals_`` names every
    such global, so a user fixes the model in one go), or uses an opcode that cannot be
    proven safe (``reason`` says which)."""

    def __init__(self, globals_: str | Sequence[str], reason: str = "not on the allowlist") -> None:
        self.globals_ = [globals_] if isinstance(globals_, str) else list(globals_)
        self.global_ = self.globals_[0]
        self.reason = reason
        if len(self.globals_) == 1:
            message = f"artifact refers to {self.global_!r}, {reason}"
        else:
            message = (f"artifact refers to {len(self.globals_)} globals {reason}: "
                       f"{', '.join(repr(g) for g in self.globals_)}")
        if reason == "not on the allowlist":
            message += ("; modelyard loads scikit-learn, NumPy and SciPy objects only (an admin can "
                        "admit a team's own classes with [upload] extra_globals)")
        super().__init__(message, errors={"global": self.global_, "globals": self.globals_})


class InvalidArtifact(InvalidInput):
    """The artifact cannot be read as a model (truncated, wrong format, not an estimator)."""


class ModelExists(Conflict):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model {name!r} already exists")


class AliasNotFound(NotFound):
    def __init__(self, name: str, alias: str) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"model {name!r} has no alias {alias!r}")


class NoShadow(NotFound):
    def __init__(self, name: str, alias: str) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"alias {alias!r} of {name!r} has no shadow")


class NoGuard(NotFound):
    def __init__(self, name: str, alias: str) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"alias {alias!r} of {name!r} has no guard: give it weights with a guard")


class NoStateAt(NotFound):
    """An alias's state asked for at an instant before it existed, or while it was removed."""

    def __init__(self, name: str, alias: str, at: dt.datetime) -> None:
        self.name = name
        self.alias = alias
        self.at = at
        super().__init__(f"model {name!r} had no alias {alias!r} at {at.isoformat()}")


class VersionInUse(Conflict):
    def __init__(self, name: str, version: int, aliases: list[str]) -> None:
        self.name = name
        self.version = version
        self.aliases = aliases
        super().__init__(
            f"version {version} of {name!r} is the target of alias{'es' if len(aliases) > 1 else ''} "
            f"{', '.join(aliases)}; move or delete them first",
            errors={"aliases": aliases},
        )


class NoRollbackHistory(Conflict):
    def __init__(self, name: str, alias: str, reason: str) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"alias {alias!r} of {name!r} cannot be rolled back: {reason}")


class PredictFailed(InvalidInput):
    """The estimator raised on rows that decoded for it (an unknown category, a value it cannot
    take): the request's rows, as this version sees them, are the cause, so a 422 naming the
    estimator's own message (never a 500 or a traceback)."""

    def __init__(self, name: str, version: int, error: Exception) -> None:
        self.name = name
        self.version = version
        text = str(error)
        detail = f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
        super().__init__(f"version {version} of {name!r} could not predict these rows: {detail}")


class InvalidName(InvalidInput):
    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"invalid {kind} name {value!r}: {reason}", errors={kind: value})
