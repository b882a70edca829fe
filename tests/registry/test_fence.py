"""registry.fence.SharedRead: concurrent callers share reads, and no caller is ever answered by a
read that began before it asked (the promotion it waited for would be missing)."""

from __future__ import annotations

import threading
import time

import pytest

from modelyard.registry.fence import SharedRead
from tests.threads import alongside


def test_a_lone_caller_reads_every_time() -> None:
    reads = []
    shared = SharedRead(lambda: reads.append(1) or len(reads))
    assert [shared() for _ in range(5)] == [1, 2, 3, 4, 5]


def test_no_caller_gets_a_value_read_before_it_asked_and_reads_are_shared() -> None:
    """The 'database' is a counter that writers bump; each caller notes the counter before it
    asks and must get at least that value back (a write that returned before it asked)."""
    state = {"committed": 0, "reads": 0}
    lock = threading.Lock()

    def read() -> int:
        with lock:
            value = state["committed"]
            state["reads"] += 1
        time.sleep(0.002)  # a round trip: the value may be overtaken by a write before it lands
        return value

    shared = SharedRead(read)
    stale: list[tuple[int, int]] = []

    def writer(stop: threading.Event) -> None:
        while not stop.is_set():
            with lock:
                state["committed"] += 1
            time.sleep(0.0005)

    def caller() -> None:
        for _ in range(200):
            with lock:
                before = state["committed"]
            got = shared()
            if got < before:
                stale.append((before, got))

    alongside(writer, caller, threads=8)
    assert stale == []
    assert state["reads"] < 8 * 200 * 0.75  # shared: 8 callers at once need far fewer reads than calls


def test_a_failed_read_reaches_its_caller_and_the_next_caller_reads_again() -> None:
    outcomes = iter([RuntimeError("the database went away"), 7])

    def read() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    shared = SharedRead(read)
    with pytest.raises(RuntimeError, match="went away"):
        shared()
    assert shared() == 7
