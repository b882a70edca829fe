"""The registry generation on PostgreSQL without a round trip per request, and still never stale.

A promotion must be served by the very next request after it returned, on every server
(``RefCache``). Reading the generation on every request does that at the price of a round trip:
the database's CPU for the query and the worker's for giving up the GIL and taking it back, on
the same cores (the bench's PostgreSQL registry served ~0.57x of SQLite's rate). Instead:

- every registry write on PostgreSQL returns ``GRACE_SECONDS`` after its commit
  (``writes.write``), so a caller who saw it return acts at least that long after the commit;
- each busy server process reads the generation every ``POLL_SECONDS`` on a thread of its own,
  noting when each read was *sent*;
- a request uses the polled value only if its read was sent less than ``FRESH_SECONDS``
  (< ``GRACE_SECONDS``) before the request asked. That read was sent after any commit whose write
  had returned before the request arrived, so it saw it. Only durations on one host are compared
  (the writer's grace on its host, the poll's age on the reader's), never clocks across hosts.
- When the poll is late (the process was busy, the database slow or away), the request reads
  for itself as before (``registry.fence``), so a stall costs speed, never correctness.

The poller reads only while requests ask (it stops after ``IDLE_SECONDS`` without one), so an
idle fleet does not query the database. The constants are the same for every process by
construction (a write waits the grace whoever made it: a server, the CLI, a test's session).
A write made by other means (SQL by hand, an older modelyard) is seen within ``FRESH_SECONDS``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable

GRACE_SECONDS = 0.025  # a registry write on PostgreSQL returns this long after its commit
FRESH_SECONDS = 0.020  # a polled value serves requests that asked at most this long after its read was sent
POLL_SECONDS = 0.004  # how often a busy process reads the generation
IDLE_SECONDS = 1.0  # no request asked for this long: the poller waits for the next one

log = logging.getLogger("modelyard")


class GenerationPoller:
    """``read()`` (the registry generation) kept fresh by a thread while requests ask for it."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self._latest: tuple[float, int] = (-math.inf, 0)  # (monotonic time its read was sent, value)
        self._asked = 0.0  # monotonic time a request last asked
        self._wake = threading.Event()
        self._start = threading.Lock()
        self._pid = 0  # the process whose thread polls (threads do not survive a fork)

    def fresh(self) -> int | None:
        """The generation as read after any write that had returned when this was called, or
        None when no poll is that recent (the caller reads for itself)."""
        now = time.monotonic()
        self._asked = now
        sent, value = self._latest
        if sent >= now - FRESH_SECONDS:
            return value
        if self._pid != os.getpid():
            self._begin()
        self._wake.set()
        return None

    def _begin(self) -> None:
        with self._start:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._poll, name="modelyard-generation", daemon=True).start()

    def _poll(self) -> None:
        failing = False
        while True:
            if time.monotonic() - self._asked > IDLE_SECONDS:
                self._wake.clear()
                if time.monotonic() - self._asked > IDLE_SECONDS:  # asked between the check and the clear: go on
                    self._wake.wait()
            sent = time.monotonic()
            try:
                value = self._read()
            except Exception:  # requests read for themselves meanwhile, and answer 503 if they cannot
                if not failing:
                    log.warning("the registry generation could not be polled; requests read it themselves",
                                exc_info=True)
                failing = True
                time.sleep(IDLE_SECONDS / 4)
                continue
            failing = False
            self._latest = (sent, value)
            time.sleep(POLL_SECONDS)


def after_commit(dialect: str) -> None:
    """What a registry write does once committed: on PostgreSQL, wait out the grace every
    server's poll relies on (see above). SQLite's servers check a token instead (``registry.beacon``)."""
    if dialect == "postgresql":
        time.sleep(GRACE_SECONDS)
