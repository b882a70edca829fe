"""One set of body rules for every route: the media type (415), the size limit (413), a body
the client could not finish sending (400), JSON that is malformed (400) or nested too deep (422),
and yes/no query flags (422); and CSV bodies read as columns and rows.

The predict lane reads bodies from the WSGI environ itself (see ``serving.http``); Flask views
have werkzeug read them, and check their media type here.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any
from urllib.parse import parse_qsl

import orjson
from werkzeug.exceptions import BadRequest, ClientDisconnected

from modelyard.registry.errors import InvalidInput, MalformedBody, TooLarge, UnreadableBody, UnsupportedMediaType

JSON = "application/json"
MULTIPART = "multipart/form-data"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


MAX_JSON_DEPTH = 1024  # orjson's limit; a deeper body is refused, never recursed into


def parse_json(data: bytes) -> Any:
    """Decode a JSON body once, with orjson. Raises MalformedBody (400), or InvalidInput (422)
    for nesting deeper than MAX_JSON_DEPTH (the stdlib decoder would recurse until it fails)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise InvalidInput(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
        raise MalformedBody(str(exc)) from None


def parse_csv(raw: bytes) -> dict[str, Any]:
    """A CSV body (pandas' ``to_csv(index=False)``) as ``{"columns": [...], "data": [[...]]}``: the
    header row names the columns; a cell that reads as a finite number is one, an empty cell is
    missing (None), anything else stays text (which a numeric feature then refuses by name).
    Raises UnreadableBody (400) for a body that is not UTF-8 CSV or has no header row."""
    try:
        rows = [row for row in csv.reader(io.StringIO(raw.decode("utf-8-sig"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableBody(f"the CSV body could not be read: {exc}") from None
    if not rows:
        raise UnreadableBody("the CSV body is empty: it needs a header row naming the columns")
    return {"columns": rows[0], "data": [[_cell(v) for v in row] for row in rows[1:]]}


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def truth(raw: str) -> bool | None:
    """``true``/``yes``/``on``/``1`` and their opposites, in any case; None for anything else."""
    lowered = raw.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    return None


def mimetype_of(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def is_json(mimetype: str) -> bool:
    return mimetype == JSON or mimetype.endswith("+json")


def require_json(mimetype: str) -> None:
    """415 unless the body is JSON (``application/json`` or a ``+json`` type)."""
    if not is_json(mimetype):
        raise UnsupportedMediaType(mimetype)


def require_multipart(mimetype: str) -> None:
    if mimetype != MULTIPART:
        raise UnsupportedMediaType(mimetype, expected=MULTIPART)


DRAIN_MAX_BYTES = 1 << 20
"""How much of a refused body is still read (and dropped) before the 413 goes out. A server
that answers and closes while the client is still sending makes the client's kernel see a reset:
curl or http.client then report a broken pipe instead of the 413's JSON. nginx reads on for the
same reason (its lingering close); past this bound the client is cut off as before."""


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body from a WSGI environ, refused past ``limit`` bytes before it is kept
    (a declared length) or as soon as it passes it (chunked). A refused body of modest size is
    read to its end first, so the client gets to read the 413."""
    declared = environ.get("CONTENT_LENGTH", "")
    if declared.isdigit():
        size = int(declared)
        if size > limit:
            if size <= limit + DRAIN_MAX_BYTES:
                _drain(environ["wsgi.input"], size)
            raise TooLarge(f"the body is {size} bytes; the limit is {limit}", errors={"max_body_bytes": limit})
        data = _read(environ["wsgi.input"], size) if size else b""
        if len(data) < size:  # the client went away mid-body
            raise ClientDisconnected()
        return data
    if "wsgi.input_terminated" not in environ:
        return b""  # no length and a stream the server does not end: nothing to read (as werkzeug)
    # Chunked: read up to one byte past the limit (werkzeug's bounded stream would stop at
    # the limit without saying so, and the cut body would read as malformed JSON).
    stream, chunks, total = environ["wsgi.input"], [], 0
    while total <= limit:
        chunk = _read(stream, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        _drain(stream, DRAIN_MAX_BYTES)
        raise TooLarge(f"the body is over the limit of {limit} bytes", errors={"max_body_bytes": limit})
    return b"".join(chunks)


def query_flag(query: str, name: str) -> bool:
    """A yes/no query parameter (absent or empty: no); 422 for any other value."""
    if not query:
        return False
    values = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == name]
    if not values or not values[0]:
        return False
    flag = truth(values[0])
    if flag is None:
        raise InvalidInput(f"query parameter {name!r} must be true or false, got {values[0]!r}",
                           errors={name: values[0]})
    return flag


def _drain(stream: Any, most: int) -> None:
    """Read and drop up to ``most`` bytes of a refused body; a failing read ends the drain (the
    answer is a 413 either way)."""
    while most > 0:
        try:
            chunk = stream.read(min(most, 65536))
        except Exception:  # noqa: BLE001 - as in _read: the server's stream errors have no common base
            return
        if not chunk:
            return
        most -= len(chunk)


def _read(stream: Any, size: int) -> bytes:
    """Read from the client's body stream; whatever goes wrong there (a reset connection, a
    malformed chunk) is the client's doing and answers 400, not 500."""
    try:
        data: bytes = stream.read(size)
        return data
    except Exception as exc:  # noqa: BLE001 - the server's own stream errors have no common base
        raise BadRequest(f"the request body could not be read ({type(exc).__name__})") from None
