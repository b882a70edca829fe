"""A bounded LRU of loaded estimators with single-flight loading.

Bounded by entry count and by estimated bytes; the least recently used entry is evicted first.
Concurrent first requests for one key wait for a single load instead of each loading.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Entry:
    value: Any
    size_bytes: int
    load_ms: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    entry: Entry | None = None
    error: BaseException | None = None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0


class CacheListener(Protocol):
    def hit(self) -> None: ...
    def miss(self) -> None: ...
    def load(self, seconds: float) -> None: ...
    def eviction(self) -> None: ...


class _Silent:
    def hit(self) -> None:
        pass

    def miss(self) -> None:
        pass

    def load(self, seconds: float) -> None:
        pass

    def eviction(self) -> None:
        pass


class LRUCache(Generic[K]):
    def __init__(self, max_entries: int, max_bytes: int, listener: CacheListener | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.listener: CacheListener = listener or _Silent()
        self.stats = CacheStats()
        self._entries: OrderedDict[K, Entry] = OrderedDict()
        self._bytes = 0
        self._flights: dict[K, _Flight] = {}
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], tuple[Any, int]]) -> Entry:
        """The entry for ``key``, calling ``load() -> (value, size_bytes)`` once on a miss.

        An exception from ``load`` reaches every waiter of that flight and nothing is cached.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.last_used = time.time()
                self.stats.hits += 1
                self.listener.hit()
                return entry
            self.stats.misses += 1
            self.listener.miss()
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.entry is not None
            return flight.entry
        try:
            started = time.perf_counter()
            value, size = load()
            flight.entry = Entry(value, size, (time.perf_counter() - started) * 1000)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.entry is not None:
                    self.stats.loads += 1
                    self.listener.load(flight.entry.load_ms / 1000)
                    self._insert(key, flight.entry)
            flight.done.set()
        return flight.entry

    def peek(self, key: K) -> Entry | None:
        """The entry if loaded, without touching recency or statistics."""
        with self._lock:
            return self._entries.get(key)

    def evict(self, key: K) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry.size_bytes
            return True

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _insert(self, key: K, entry: Entry) -> None:
        self._entries[key] = entry
        self._bytes += entry.size_bytes
        # Evict least recently used, but never the entry just loaded: a single model larger
        # than max_bytes is still served (and is the only one kept).
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _old_key, old = self._entries.popitem(last=False)
            self._bytes -= old.size_bytes
            self.stats.evictions += 1
            self.listener.eviction()
