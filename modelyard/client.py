"""A Python client for a modelyard server: upload right after ``fit``, predict with a DataFrame,
promote and roll back, list, download; every answer the server's JSON as plain dicts and lists.

    from modelyard.client import Client
    client = Client("http://127.0.0.1:8080", token="...")   # or MODELYARD_URL / MODELYARD_TOKEN
    version = client.upload(model, "churn", metrics={"auc": 0.91}, example=X_test[:5])
    client.predict("churn", "latest", X_test)
    client.promote("churn", version["version"])

It speaks the REST API over httpx and imports neither Flask nor SQLAlchemy (nor numpy, pandas or
skops until a call needs them). Errors raise :class:`ClientError`, one subclass per status
family, which are also the server's own domain error families (``modelyard.registry.errors``):
``except NotFound`` catches a missing model whether it was raised in process or answered over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import httpx

from modelyard.registry import errors as domain

DEFAULT_URL = "http://127.0.0.1:8080"
FORMATS = ("skops", "joblib", "pickle")


class ClientError(domain.ModelyardError):
    """A request the server refused (``status``, its ``message`` and field ``errors``), or one
    that never reached it (``status`` None)."""

    def __init__(self, message: str, *, status: int | None = None, errors: Any = None) -> None:
        super().__init__(message, errors=errors)
        self.status = status

    def __str__(self) -> str:
        return f"[{self.status}] {self.message}" if self.status else self.message


class InvalidInput(ClientError, domain.InvalidInput):
    """400 or 422: the body or its content is not usable."""


class Unauthorized(ClientError):
    """401: no token, or one the server does not know."""


class Forbidden(ClientError):
    """403: the token's role is too low."""


class NotFound(ClientError, domain.NotFound):
    """404: no such model, version or alias."""


class Conflict(ClientError, domain.Conflict):
    """409: the registry's state forbids it (a model that exists, a version in use...)."""


class TooLarge(ClientError, domain.TooLarge):
    """413: over the server's body or upload limit."""


class Unavailable(ClientError, domain.Unavailable):
    """503, or the server could not be reached."""


_FAMILIES: dict[int, type[ClientError]] = {400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                           409: Conflict, 413: TooLarge, 415: InvalidInput, 422: InvalidInput,
                                           503: Unavailable}

Progress = Callable[[int, int], None]  # (bytes sent so far, total)


class Client:
    """One modelyard server. ``url`` and ``token`` default to ``MODELYARD_URL`` and
    ``MODELYARD_TOKEN``; ``transport`` is httpx's (e.g. ``httpx.WSGITransport(app=app)``)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30,
                 *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("MODELYARD_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("MODELYARD_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- models and versions ---------------------------------------------------------------

    def list_models(self, q: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        """Every model (all pages), by name; ``q`` a name substring, ``tag`` ``"key:value"``."""
        params = {k: v for k, v in (("q", q), ("tag", tag)) if v is not None}
        return list(self._pages("/models", params))

    def get_model(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/models/{_p(name)}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a model (all pages), newest first."""
        return list(self._pages(f"/models/{_p(name)}/versions"))

    def get_version(self, name: str, ref: str | int) -> dict[str, Any]:
        return self._json("GET", f"/models/{_p(name)}/versions/{_p(ref)}")

    def events(self, name: str) -> list[dict[str, Any]]:
        """A model's audit history (all pages), newest first."""
        return list(self._pages(f"/models/{_p(name)}/events"))

    def drift(self, name: str, ref: str | int, window: str = "1h") -> dict[str, Any]:
        """Per feature, the window's traffic (1h, 24h, 7d) against the version's reference: PSI, verdict, bins."""
        return self._json("GET", f"/models/{_p(name)}/versions/{_p(ref)}/drift", params={"window": window})

    def predictions(self, name: str, ref: str | int, **window: str) -> Iterator[dict[str, Any]]:
        """The version's logged predictions, newest first (``since``/``until``: ISO 8601 times)."""
        return self._pages(f"/models/{_p(name)}/versions/{_p(ref)}/predictions", dict(window))

    def delete_version(self, name: str, ref: str | int) -> None:
        self._request("DELETE", f"/models/{_p(name)}/versions/{_p(ref)}")

    def delete_model(self, name: str) -> None:
        self._request("DELETE", f"/models/{_p(name)}")

    def upload(self, model: Any, name: str, *, format: str | None = None, description: str | None = None,
               metrics: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
               tags: dict[str, str] | None = None, features: list[str] | None = None, labels: list[Any] | None = None,
               feature_aliases: dict[str, str] | None = None, example: Any = None, reference: Any = None,
               progress: Progress | None = None) -> dict[str, Any]:
        """Upload a new version of ``name`` and return its detail. ``model`` is a fitted
        estimator (written with skops unless ``format`` says joblib or pickle) or the path of a
        model file; ``example`` rows, records or a DataFrame the server's trial predicts;
        ``reference`` the training data (a DataFrame, an array, rows or records, or the path of a
        CSV or JSON file), profiled per feature by the server for drift and not kept."""
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below, after the request
            filename, size = path.name, path.stat().st_size
        else:
            fmt = format or "skops"
            data = _serialize(model, fmt)
            format = fmt
            stream, filename, size = io.BytesIO(data), f"{name}.{fmt}", len(data)
        fields: dict[str, str] = {}
        if format:
            fields["format"] = format
        if description is not None:
            fields["description"] = description
        metadata = {k: v for k, v in (("metrics", metrics), ("params", params)) if v is not None}
        for key, value in (("metadata", metadata or None), ("tags", tags), ("features", features),
                           ("labels", labels), ("feature_aliases", feature_aliases),
                           ("example", _rows(example) if example is not None else None)):
            if value is not None:
                fields[key] = json.dumps(value)
        files: dict[str, Any] = {}
        if isinstance(reference, (str, os.PathLike)):
            files["reference"] = (Path(reference).name, Path(reference).read_bytes(), "application/octet-stream")
        elif reference is not None:
            files["reference"] = ("reference.json", json.dumps(_rows(reference)).encode(), "application/json")
        try:
            reader = _Counting(stream, size, progress) if progress else stream
            return self._json("POST", f"/models/{_p(name)}/versions", data=fields,
                              files={"file": (filename, reader, "application/octet-stream"), **files})
        finally:
            stream.close()

    # --- predictions ------------------------------------------------------------------------

    def predict(self, name: str, ref: str | int = "production", X: Any = None, *,
                proba: bool = False) -> dict[str, Any]:
        """Predict with a version, an alias or ``latest``. ``X``: a NumPy array, a pandas
        DataFrame (columns matched by name, in any order), a list of records or of rows, or one
        record (a dict)."""
        return self._json("POST", f"/models/{_p(name)}/{_p(ref)}/predict", json=_body(X),
                          params={"proba": "true"} if proba else None)

    # --- aliases ----------------------------------------------------------------------------

    def promote(self, name: str, ref: str | int, alias: str = "production") -> dict[str, Any]:
        """Point ``alias`` at the version ``ref`` names: ``{alias, version, previous_version}``."""
        return self._json("POST", f"/models/{_p(name)}/versions/{_p(ref)}/promote", json={"alias": alias})

    def rollback(self, name: str, alias: str = "production") -> dict[str, Any]:
        """Move ``alias`` back to where it pointed before its last move."""
        return self._json("POST", f"/models/{_p(name)}/aliases/{_p(alias)}/rollback")

    def set_alias(self, name: str, alias: str, ref: str | int) -> dict[str, Any]:
        return self._json("PUT", f"/models/{_p(name)}/aliases/{_p(alias)}", json={"version": str(ref)})

    def set_weights(self, name: str, alias: str, weights: Mapping[str, int] | Mapping[int, int], *,
                    guard: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Split ``alias`` between versions by weight (``{3: 90, 4: 10}``): a canary; with
        ``guard`` (``{"metric": "error_rate", "max": 0.05, "window_seconds": 300, "min_samples":
        200}``) the servers return the alias to its state before the canary when a new version
        passes the limit."""
        body: dict[str, Any] = {"weights": {str(k): v for k, v in weights.items()}}
        if guard is not None:
            body["guard"] = dict(guard)
        return self._json("PUT", f"/models/{_p(name)}/aliases/{_p(alias)}", json=body)

    def approvals(self, name: str, alias: str = "production") -> list[dict[str, Any]]:
        """The moves of ``alias`` waiting for a second approver."""
        return cast(list[dict[str, Any]], self._request("GET", f"/models/{_p(name)}/aliases/{_p(alias)}/approvals")
                    .json())

    def approve(self, name: str, approval: int, alias: str = "production") -> dict[str, Any]:
        """Approve a pending move with this client's token (another promoter's than the asker's)."""
        return self._json("POST", f"/models/{_p(name)}/aliases/{_p(alias)}/approvals/{approval}")

    def guard_status(self, name: str, alias: str = "production") -> dict[str, Any]:
        """Where ``alias``'s guarded canary stands: per candidate, its measure over the window and
        its verdict (ok, over, inconclusive)."""
        return self._json("GET", f"/models/{_p(name)}/aliases/{_p(alias)}/guard")

    def aliases(self, name: str) -> dict[str, Any]:
        """``{alias: version}``, a weighted alias as ``{alias: {"weights": {...}}}``."""
        return self._json("GET", f"/models/{_p(name)}/aliases")

    def alias_history(self, name: str, alias: str = "production", *, at: str | None = None) -> Any:
        """Every state ``alias`` had (all pages), newest first; with ``at`` (an ISO 8601 time)
        the one state in force then."""
        path = f"/models/{_p(name)}/aliases/{_p(alias)}/history"
        if at is not None:
            return self._json("GET", path, params={"at": at})
        return list(self._pages(path))

    def set_shadow(self, name: str, alias: str, ref: str | int, fraction: float) -> dict[str, Any]:
        """Also run ``fraction`` of ``alias``'s requests on version ``ref``, after the answer."""
        return self._json("PUT", f"/models/{_p(name)}/aliases/{_p(alias)}/shadow",
                          json={"version": str(ref), "fraction": fraction})

    def shadow_report(self, name: str, alias: str = "production") -> dict[str, Any]:
        """How ``alias``'s shadow compares: requests, compared, agreement, failures, latency."""
        return self._json("GET", f"/models/{_p(name)}/aliases/{_p(alias)}/shadow")

    def delete_shadow(self, name: str, alias: str = "production") -> None:
        self._request("DELETE", f"/models/{_p(name)}/aliases/{_p(alias)}/shadow")

    def add_webhook(self, url: str, events: list[str], secret: str | None = None) -> dict[str, Any]:
        """Tell ``url`` of ``events`` (or ``["*"]``), signed with ``secret`` (made, and shown only
        in this answer, when None). Admin."""
        return self._json("POST", "/webhooks", json={"url": url, "events": events,
                                                      **({"secret": secret} if secret is not None else {})})

    def webhooks(self) -> list[dict[str, Any]]:
        """The webhooks (never their secrets). Admin."""
        return cast(list[dict[str, Any]], self._request("GET", "/webhooks").json())

    def delete_webhook(self, webhook_id: int) -> None:
        self._request("DELETE", f"/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: int) -> list[dict[str, Any]]:
        """A webhook's delivery log (every page), newest first."""
        return list(self._pages(f"/webhooks/{webhook_id}/deliveries"))

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/models/{_p(name)}/aliases/{_p(alias)}")

    def download(self, name: str, ref: str | int, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Save a version's file at ``path``, checked against its sha256 (the ETag) as it
        arrives; ``{path, sha256, size_bytes}``."""
        target, digest, size = Path(path), hashlib.sha256(), 0
        partial = target.with_name(target.name + ".part")
        try:
            with self._http.stream("GET", f"/models/{_p(name)}/versions/{_p(ref)}/artifact") as response:
                _raise_for(response, read=True)
                expected = response.headers.get("ETag", "").strip('"')
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise _unreachable(self.url, exc) from None
        if expected and digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise ClientError(f"the download's sha256 {digest.hexdigest()} is not the version's {expected}")
        partial.replace(target)
        return {"path": str(target), "sha256": digest.hexdigest(), "size_bytes": size}

    # --- plumbing ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        _raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self._request(method, path, **kwargs).json())

    def _pages(self, path: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a list, following its ``Link: rel="next"`` (cursor pages)."""
        url: str | None = path
        query: dict[str, Any] | None = {**(params or {}), "page_size": 100}
        while url:
            response = self._request("GET", url, params=query)
            yield from response.json()
            url, query = response.links.get("next", {}).get("url"), None


class _Counting:
    """A file the multipart encoder reads in chunks, reporting the bytes read so far (seek and
    tell pass through: the encoder measures the file's length with them)."""

    def __init__(self, stream: BinaryIO, total: int, progress: Progress) -> None:
        self._stream, self._total, self._progress = stream, total, progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._progress(self._stream.tell(), self._total)
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


def _raise_for(response: httpx.Response, *, read: bool = False) -> None:
    if response.status_code < 400:
        return
    if read:
        response.read()
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") or body.get("error") or response.reason_phrase if isinstance(body, dict) else ""
    family = _FAMILIES.get(response.status_code, ClientError)
    raise family(str(message), status=response.status_code,
                 errors=body.get("errors") if isinstance(body, dict) else None)


def _unreachable(url: str, exc: httpx.HTTPError) -> ClientError:
    return Unavailable(f"could not reach the modelyard server at {url}: {exc}")


def _p(part: str | int) -> str:
    return quote(str(part), safe="")


def _serialize(model: Any, fmt: str) -> bytes:
    if fmt == "skops":
        import skops.io

        data: bytes = skops.io.dumps(model)
        return data
    if fmt == "joblib":
        import joblib

        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue()
    if fmt == "pickle":
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _rows(X: Any) -> Any:
    """Rows or records as JSON values: a DataFrame as records, an array as rows."""
    if hasattr(X, "to_dict") and hasattr(X, "columns"):
        return json.loads(X.to_json(orient="records"))  # NaN becomes null, numpy types plain
    if hasattr(X, "tolist"):
        return X.tolist()
    return X


def _body(X: Any) -> Any:
    if hasattr(X, "to_dict") and hasattr(X, "columns"):
        return {"dataframe_split": json.loads(X.to_json(orient="split", index=False))}
    if hasattr(X, "tolist"):
        rows = X.tolist()
        return {"inputs": rows if rows and isinstance(rows[0], list) else [rows]}
    if X is None:
        raise TypeError("predict needs X: rows, records, a NumPy array or a DataFrame")
    return X
