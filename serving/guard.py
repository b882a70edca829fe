"""Serving's side of a guarded canary (``registry.guards``): this process counts what each guarded
candidate version served (requests, failures of its load or estimator, latency, and, when the
guard measures disagreement, how its rows compare with the baseline's), and every flush appends
the counts to the registry and checks the guard there, where the counts of every worker and
server add up and the first to see a candidate over its limit returns the alias to its state
before the canary.

The counting is a dictionary update under a lock, paid only by requests a guarded candidate
serves; the flush and the check run on the shadow runner's thread, never on a request's.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from modelyard.registry import guards
from modelyard.registry.shadows import LATENCY_BUCKETS_MS

log = logging.getLogger("modelyard.serving")


class GuardMeter:
    """This process's counts of guarded candidates, by guard and version, until flushed."""

    def __init__(self, on_trip: Callable[[dict[str, object]], None] | None = None) -> None:
        self._counts: dict[int, dict[int, guards.Counts]] = {}
        self._lock = threading.Lock()
        self._on_trip = on_trip

    def served(self, guard_id: int, version: int, ms: float, failed: bool) -> None:
        """One request the candidate ``version`` served (``failed``: its load or estimator raised)."""
        with self._lock:
            counts = self._of(guard_id, version)
            counts.requests += 1
            counts.errors += failed
            counts.latency_ms[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def compared(self, guard_id: int, version: int, rows: int, agreed: int) -> None:
        """The baseline's answer to a request the candidate served, compared row by row."""
        with self._lock:
            counts = self._of(guard_id, version)
            counts.rows += rows
            counts.rows_disagreed += rows - agreed

    def flush(self, sessions: Callable[[], Session]) -> None:
        """Append the counts to the registry, then check each guard counted (a trip moves the alias)."""
        with self._lock:
            pending, self._counts = self._counts, {}
        if not pending:
            return
        db = sessions()
        try:
            for guard_id, by_version in pending.items():
                if guards.add_counts(db, guard_id, by_version):
                    found = guards.check(db, guard_id)
                    if found is not None and found["verdict"] == "tripped":
                        log.warning("guard of alias %r tripped: %s", found["alias"], found["tripped"])
                        if self._on_trip is not None:
                            self._on_trip(found)
        except Exception:  # the registry is out of reach: these counts are lost, serving goes on
            log.warning("could not record or check guard counts", exc_info=True)
        finally:
            db.close()

    def _of(self, guard_id: int, version: int) -> guards.Counts:
        by_version = self._counts.setdefault(guard_id, {})
        counts = by_version.get(version)
        if counts is None:
            counts = by_version[version] = guards.Counts()
        return counts
