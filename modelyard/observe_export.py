"""``modelyard observe export``: the prediction log as a table, one line per logged row (a request
of several rows is several lines, with its ``request`` id and the ``row``'s place in it): when,
which model, version and alias, the request key, the latency, each feature in its own column (the
union of the exported versions' features) and the ``output``. CSV streams; Parquet (pyarrow, the
``parquet`` extra) is written a chunk at a time."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.registry import observe
from modelyard.registry.models import Model, ModelVersion

FIXED = ["at", "model", "version", "alias", "request_key", "latency_ms", "request", "row", "n_rows"]
_CHUNK = 10_000


class ExportError(Exception):
    """What the command says instead of exporting (exit status 2)."""


def export(session: Session, to: Path, *, since: dt.datetime | None, until: dt.datetime | None,
           model: str | None) -> int:
    """Write the log between ``since`` and ``until`` (of ``model``, or all) to ``to`` (``.csv`` or
    ``.parquet``); the number of lines written."""
    suffix = to.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ExportError(f"--to must name a .csv or .parquet file, got {to.name!r}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("writing Parquet needs pyarrow: pip install 'modelyard[parquet]' (or pyarrow), "
                              "or export --to a .csv file") from None
    versions = _versions(session, model)
    names = list(dict.fromkeys(f for v in versions.values() for f in v.features))
    columns = FIXED + [f for f in names if f not in FIXED] + ["output"]
    lines = _lines(observe.export(session, since=since, until=until, model=model), versions)
    if suffix == ".csv":
        return _csv(to, columns, lines)
    return _parquet(to, columns, _schema(columns, names, versions), lines)


class _Version:
    def __init__(self, features: list[str], strings: set[str], text_output: bool) -> None:
        self.features, self.strings, self.text_output = features, strings, text_output


def _versions(session: Session, model: str | None) -> dict[tuple[str, int], _Version]:
    """Each version's features in its order, which of them hold strings, and whether its output
    is text (a class that is a string, or several outputs)."""
    query = (select(Model.name, ModelVersion.version, ModelVersion.feature_names, ModelVersion.feature_types,
                    ModelVersion.classes, ModelVersion.input_kind)
             .join(Model, Model.id == ModelVersion.model_id).order_by(ModelVersion.id))
    if model is not None:
        query = query.where(Model.name == model)
    found = {}
    for name, number, features, types, classes, kind in session.execute(query):
        names = [str(f) for f in features]
        strings = set(names) if kind == "text" else {f for f, t in zip(names, types or []) if t == "string"}
        flat = classes or []
        text_output = any(isinstance(c, (str, list, bool)) for c in flat)
        found[(name, number)] = _Version(names, strings, text_output)
    session.rollback()
    return found


def _lines(logged: Iterator[dict[str, Any]], versions: dict[tuple[str, int], _Version]) -> Iterator[dict[str, Any]]:
    for item in logged:
        version = versions.get((item["model"], item["version"]))
        features = version.features if version is not None else []
        outputs = item["outputs"]
        for i, row in enumerate(item["rows"]):
            line = {"at": item["at"].isoformat(), "model": item["model"], "version": item["version"],
                    "alias": item["alias"], "request_key": item["request_key"], "latency_ms": item["latency_ms"],
                    "request": item["id"], "row": i, "n_rows": item["n_rows"]}
            line.update(zip(features, row if isinstance(row, list) else [row], strict=False))
            output = outputs[i] if i < len(outputs) else None
            line["output"] = json.dumps(output) if isinstance(output, (list, dict)) else output
            yield line


def _schema(columns: list[str], names: list[str], versions: dict[tuple[str, int], _Version]) -> Any:
    import pyarrow as pa

    strings = set().union(*(v.strings for v in versions.values())) if versions else set()
    types = {"at": pa.string(), "model": pa.string(), "version": pa.int64(), "alias": pa.string(),
             "request_key": pa.string(), "latency_ms": pa.float64(), "request": pa.int64(), "row": pa.int64(),
             "n_rows": pa.int64(),
             "output": pa.string() if any(v.text_output for v in versions.values()) else pa.float64()}
    types.update({f: pa.string() if f in strings else pa.float64() for f in names if f not in types})
    return pa.schema([(c, types[c]) for c in columns])


def _csv(to: Path, columns: list[str], lines: Iterator[dict[str, Any]]) -> int:
    written = 0
    with to.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for line in lines:
            writer.writerow(line)
            written += 1
    return written


def _parquet(to: Path, columns: list[str], schema: Any, lines: Iterator[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    written, chunk = 0, []
    with pq.ParquetWriter(to, schema) as writer:
        for line in lines:
            chunk.append(line)
            if len(chunk) >= _CHUNK:
                writer.write_table(_table(pa, schema, columns, chunk))
                written, chunk = written + len(chunk), []
        writer.write_table(_table(pa, schema, columns, chunk))
    return written + len(chunk)


def _table(pa: Any, schema: Any, columns: list[str], chunk: list[dict[str, Any]]) -> Any:
    def value(line: dict[str, Any], column: str) -> Any:
        found = line.get(column)
        if found is not None and schema.field(column).type == pa.string() and not isinstance(found, str):
            return str(found)
        return found

    return pa.Table.from_pylist([{c: value(line, c) for c in columns} for line in chunk], schema=schema)
