"""Ref resolution for the predict path: cached, and revalidated on every request by the
registry's generation counter (one primary-key read), so a promotion or rollback committed by
any process is seen on the very next request and nothing stale is ever served."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from modelyard.registry import service

_GENERATION_SQL = "SELECT generation FROM registry_state WHERE id = 1"


class RefCache:
    def __init__(self, engine: Engine, *, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[int, int, str]] = {}  # -> (generation, version, sha256)
        self._lock = threading.Lock()
        self._fairy: Any = None
        self._dbapi: Any = None
        self._pid = 0

    def resolve(self, session: Callable[[], Session], name: str, ref: str) -> tuple[int, str]:
        """``(version, sha256)`` for a ref, as :func:`registry.service.resolve_version_key`.

        An entry is used only when it was resolved under the generation read just now; a
        resolution is tagged with the generation read *before* it, so one that raced a write
        is simply not reused.
        """
        generation = self._generation()
        key = (name, ref)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        db = session()
        try:
            number, sha256 = service.resolve_version_key(db, name, ref)
        finally:
            db.rollback()  # end the read: no connection is held while the request predicts
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (generation, number, sha256)
        return number, sha256

    def _generation(self) -> int:
        with self._lock:
            for attempt in (1, 2):
                try:
                    cursor = self._connection().cursor()
                    cursor.execute(_GENERATION_SQL)
                    row = cursor.fetchone()
                    cursor.close()
                    return int(row[0]) if row else -1
                except Exception:
                    self._drop_connection()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _connection(self) -> Any:
        """One DBAPI connection per process, held for these reads, in autocommit mode (a read
        never holds a transaction open). Replaced after a fork: connections are not shared
        across processes."""
        if self._pid != os.getpid() or self._dbapi is None:
            self._fairy = self._engine.raw_connection()
            self._dbapi = self._fairy.dbapi_connection
            if self._engine.dialect.name == "postgresql":
                self._dbapi.autocommit = True
            self._pid = os.getpid()
        return self._dbapi

    def _drop_connection(self) -> None:
        fairy, self._dbapi = self._fairy, None
        if fairy is not None and self._pid == os.getpid():
            try:
                fairy.invalidate()
            except Exception:  # the connection is being thrown away anyway
                pass
