"""One read shared by the requests that wait for it, never by one that arrived after it began.

Every predict asks whether the registry moved (``RefCache``'s generation read). On PostgreSQL
that is a round trip, and its cost is not the wait: it is the server's CPU for the query and the
worker's for giving up the GIL and taking it back, on the same cores that answer requests (the
bench's PostgreSQL registry served ~0.57x of SQLite's rate). :class:`SharedRead` lets concurrent
requests share one read, as a database shares one log flush between the commits that wait for
it (group commit), without ever answering from a read that is too old:

- each request takes a ticket when it asks; each read is stamped with a ticket when it starts;
- a read's value answers only the requests whose ticket is lower than its stamp: they asked
  before it began, so whatever was committed before they asked (a promotion that had returned
  to its caller) is in it;
- one read at a time: a request that finds a read under way that began before it asked waits
  for it to end and then for the next one, which starts at once and answers everyone waiting.

Alone, a request reads at once, as before (no added latency); under load, the busier the worker,
the more requests each read answers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    """``read()`` results shared by concurrent callers, each caller's from a read that began after it asked."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._tickets = itertools.count()  # next() is atomic under the GIL
        self._changed = threading.Condition(threading.Lock())
        self._reading = False
        self._stamp = -1  # the stamp of the read whose value is kept
        self._value: T | None = None

    def __call__(self) -> T:
        ticket = next(self._tickets)
        changed = self._changed
        with changed:
            while True:
                if self._stamp > ticket:
                    return self._value  # type: ignore[return-value]  # set with the stamp
                if not self._reading:
                    self._reading = True
                    stamp = next(self._tickets)
                    break
                changed.wait()
        try:
            value = self._read()
        except BaseException:
            with changed:
                self._reading = False
                changed.notify_all()  # a waiter reads next
            raise
        with changed:
            self._reading = False
            self._value, self._stamp = value, stamp
            changed.notify_all()
        return value
