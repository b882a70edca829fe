"""The registry generation on SQLite without a query per request, and still never stale.

A promotion must be served by the very next request after it returned (``RefCache``). On SQLite
every writer and every server is on one host, so a write can tell every process directly: beside
the database file lies ``<database>-generation``, 8 bytes that each registry write overwrites
with fresh random bytes after its commit and before it returns (``writes.write``, ``copy``).
Each server process maps the file (``mmap``, shared pages: SQLite's own ``-shm`` file works the
same way) and compares its 8 bytes with those it saw when it last read the generation; only when
they changed, or that read is older than ``MAX_AGE_SECONDS``, does it read the generation again.

Why it is never stale: a reader looks at the token *before* it reads the database. A write that
had returned before the request began had changed the token after its commit, so the request
sees a token it has not read under and reads the database, which holds that commit. Tokens are
random, not counted, so two writers racing cannot leave a token a reader already saw.

Per request this is a slice of a mapped page and a comparison (~0.1 us) instead of a SQLite
read (~5 us, and a release of the GIL that the server's other threads queue for). A write made
by other means (SQL by hand, an older modelyard) changes no token and is seen within
``MAX_AGE_SECONDS``. The file must not be truncated while servers run (a mapped page past the
end of a file faults), as SQLite's ``-shm`` must not; writers here only ever extend it.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

MAX_AGE_SECONDS = 0.1  # a generation read at least this often, whatever the token says
SUFFIX = "-generation"
_SIZE = 8

log = logging.getLogger("modelyard")


def path_for(url: URL) -> Path | None:
    """The token file of a SQLite database given by a file path; None for any other database
    (an in-memory SQLite is one process's own: nobody else writes to it)."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database + SUFFIX)


def bump(url: URL) -> None:
    """After a registry write's commit on a SQLite file: change the token every server checks."""
    path = path_for(url)
    if path is None:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # servers that cannot see the token read per MAX_AGE_SECONDS
        log.warning("cannot write %s: servers see this write within %.1f s", path, MAX_AGE_SECONDS, exc_info=True)
        return
    try:
        os.pwrite(fd, os.urandom(_SIZE), 0)  # one write of the whole token; it never shrinks the file
    finally:
        os.close(fd)


class Beacon:
    """One process's view of a SQLite registry's token, and the generation it last read under it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._map: mmap.mmap | None = None
        self._opened = 0.0  # monotonic time of the last attempt to map the file
        self._lock = threading.Lock()
        self._seen: tuple[bytes, int, float] = (b"", 0, -math.inf)  # (token, generation, when it was read)

    def generation(self, read: Callable[[], int]) -> int:
        """The generation, read with ``read`` only when the token changed since the last read,
        or that read is older than MAX_AGE_SECONDS (and on every call if the file cannot be mapped)."""
        mapped = self._map
        if mapped is None:
            mapped = self._open()
            if mapped is None:
                return read()
        token = mapped[:_SIZE]
        seen, generation, at = self._seen
        now = time.monotonic()
        if token == seen and now - at < MAX_AGE_SECONDS:
            return generation
        generation = read()  # after the token was taken: it holds every commit that changed it
        self._seen = (token, generation, now)
        return generation

    def _open(self) -> mmap.mmap | None:
        with self._lock:
            if self._map is not None or time.monotonic() - self._opened < 1.0:
                return self._map
            self._opened = time.monotonic()
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                log.warning("cannot map %s: the generation is read on every request", self._path, exc_info=True)
                return None
            try:
                if os.fstat(fd).st_size < _SIZE:  # new: a token of its own, like any writer's
                    os.pwrite(fd, os.urandom(_SIZE), 0)
                self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            except OSError:
                log.warning("cannot map %s: the generation is read on every request", self._path, exc_info=True)
            finally:
                os.close(fd)
            return self._map
