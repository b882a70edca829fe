"""Wire protocols: how a request's body becomes rows and a prediction becomes an answer.
``native`` is modelyard's own, ``mlflow`` MLflow's scoring API, ``v2`` the Open Inference Protocol;
each uses the same Predictor, auth, limits and metrics (the lane in ``serving.http``).

Every protocol is one module with the same three names (:class:`WireProtocol`): ``MEDIA_TYPES``
and ``accepts`` (the 415 check), and ``read``, which makes the body a :class:`Read`: inputs for
the Predictor with their :class:`PredictOptions`, and ``write``, which makes the
:class:`Prediction` the answer's bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from modelyard.serving.routes import Route
from modelyard.serving.service import Inputs, LoadedModel, Prediction, PredictOptions

JSON_HEADERS = [("Content-Type", "application/json")]


class Request(NamedTuple):
    """What a protocol may read of an HTTP request besides its body."""

    mimetype: str
    query: str = ""
    header_length: str | None = None  # Inference-Header-Content-Length (the OIP's binary tensors)
    request_key: str | None = None  # X-Request-Key: which version of a weighted alias (the same key, the same one)


class Reply(NamedTuple):
    body: bytes
    headers: list[tuple[str, str]]


class Read(Inputs, Protocol):
    """A request as its protocol read it: inputs for the Predictor, how it wants them predicted,
    and how to write the answer."""

    @property
    def options(self) -> PredictOptions: ...

    def write(self, prediction: Prediction, route: Route) -> Reply:
        """The answer's bytes and headers (Content-Type; the lane adds the rest)."""
        ...


class WireProtocol(Protocol):
    @property
    def MEDIA_TYPES(self) -> str: ...  # noqa: N802 - a module constant, as each protocol module names it

    def accepts(self, mimetype: str) -> bool: ...

    def read(self, raw: bytes, request: Request) -> Read: ...


@dataclass(slots=True)
class BodyRead:
    """A read whose body is the same for every version (the JSON and CSV protocols'); each
    protocol adds its ``write``."""

    body: Any
    options: PredictOptions

    def rows(self, model: LoadedModel) -> Any:
        return self.body
