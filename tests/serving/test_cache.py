from __future__ import annotations

import sys
import threading
import time

import pytest

from modelyard.serving.cache import LRUCache


def _loader(value: str, size: int = 1, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def load() -> tuple[str, int]:
        if calls is not None:
            calls.append(value)
        return value, size
    return load


def test_hit_after_miss_loads_once() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=4, max_bytes=100)
    calls: list[str] = []
    assert cache.get("a", _loader("A", calls=calls)).value == "A"
    assert cache.get("a", _loader("other", calls=calls)).value == "A"
    assert calls == ["A"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.loads) == (1, 1, 1)


def test_evicts_least_recently_used_by_count() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=2, max_bytes=100)
    cache.get("a", _loader("A"))
    cache.get("b", _loader("B"))
    cache.get("a", _loader("A"))  # a is now more recent than b
    cache.get("c", _loader("C"))
    assert cache.keys() == ["a", "c"]
    assert cache.stats.evictions == 1


def test_evicts_by_bytes() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=10, max_bytes=10)
    cache.get("a", _loader("A", size=4))
    cache.get("b", _loader("B", size=4))
    cache.get("c", _loader("C", size=4))
    assert cache.keys() == ["b", "c"]
    assert cache.total_bytes == 8


def test_an_entry_larger_than_the_budget_is_still_served_alone() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=10, max_bytes=10)
    cache.get("a", _loader("A", size=4))
    assert cache.get("big", _loader("BIG", size=50)).value == "BIG"
    assert cache.keys() == ["big"]


def test_concurrent_first_requests_load_once() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=4, max_bytes=100)
    calls: list[str] = []
    started = threading.Barrier(8)

    def slow_load() -> tuple[str, int]:
        calls.append("load")
        time.sleep(0.2)
        return "A", 1

    results: list[str] = []

    def worker() -> None:
        started.wait()
        results.append(cache.get("a", slow_load).value)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["load"]
    assert results == ["A"] * 8


def _parked(threads: list[threading.Thread], count: int) -> bool:
    """Until ``count`` of ``threads`` wait on an event (at most 5 s): their frames, not a sleep."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        frames = sys._current_frames()
        waiting = 0
        for thread in threads:
            frame = frames.get(thread.ident or -1)
            while frame is not None and frame.f_code.co_name != "wait":
                frame = frame.f_back
            waiting += frame is not None
        if waiting >= count:
            return True
        time.sleep(0.001)
    return False


def test_a_failed_load_reaches_every_waiter_once_and_caches_nothing() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=4, max_bytes=100)
    gate = threading.Event()
    loads: list[int] = []

    def failing() -> tuple[str, int]:
        loads.append(1)
        gate.wait(5)
        raise RuntimeError("boom")

    errors: list[str] = []

    def worker() -> None:
        try:
            cache.get("a", failing)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    # The leader waits on the gate inside the load, the three others on the flight.
    assert _parked(threads, 4)
    gate.set()
    for t in threads:
        t.join()
    assert errors == ["boom"] * 4
    assert loads == [1]  # one load for the four, failure included
    assert len(cache) == 0
    assert cache.get("a", _loader("A")).value == "A"


def test_evict_and_peek() -> None:
    cache: LRUCache[str] = LRUCache(max_entries=4, max_bytes=100)
    cache.get("a", _loader("A", size=3))
    assert cache.peek("a") is not None
    assert cache.evict("a") is True
    assert cache.peek("a") is None and cache.total_bytes == 0
    assert cache.evict("a") is False


@pytest.mark.parametrize("n", [1, 3])
def test_entries_record_load_time_and_use(n: int) -> None:
    cache: LRUCache[str] = LRUCache(max_entries=4, max_bytes=100)
    first = cache.get("a", _loader("A"))
    for _ in range(n):
        entry = cache.get("a", _loader("A"))
    assert entry is first
    assert entry.load_ms >= 0 and entry.last_used >= entry.loaded_at
