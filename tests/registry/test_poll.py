"""registry.poll: a polled generation is used only when its read was sent after any write that
had returned (writes wait GRACE_SECONDS after their commit); otherwise the caller reads itself."""

from __future__ import annotations

import threading
import time

import pytest

from modelyard.registry import poll
from modelyard.registry.poll import GenerationPoller
from tests.threads import alongside


def test_no_request_is_answered_from_a_poll_older_than_a_write_that_had_returned() -> None:
    """A 'database' counter bumped by writers that wait the grace after each commit, as
    writes.write does; callers note the counter before asking and must never get less."""
    state = {"committed": 0, "reads": 0}
    lock = threading.Lock()

    def read() -> int:
        with lock:
            state["reads"] += 1
            value = state["committed"]
        # a round trip after the snapshot; now and then a stall (a slow database, a busy process)
        # through which the last poll grows old while writes go on
        time.sleep(0.06 if state["reads"] % 10 == 0 else 0.001)
        return value

    poller = GenerationPoller(read)
    stale: list[tuple[int, int]] = []
    polled = 0

    def writer(stop: threading.Event) -> None:
        while not stop.is_set():
            with lock:
                state["committed"] += 1
            poll.after_commit("postgresql")

    def caller() -> None:
        nonlocal polled
        for _ in range(800):
            with lock:
                returned = state["committed"]  # every write that has returned is <= this
            got = poller.fresh()
            if got is not None:  # (None: the caller reads for itself)
                polled += 1
                if got < returned - 1:  # the write in its grace (committed, not yet returned) may be missing
                    stale.append((returned, got))
            time.sleep(0.0005)

    alongside(writer, caller, threads=4)
    assert stale == []
    assert polled > 1600, (polled, state)  # most requests were answered by the poll


def test_a_write_waits_the_grace_on_postgresql_only() -> None:
    started = time.monotonic()
    poll.after_commit("sqlite")
    assert time.monotonic() - started < poll.GRACE_SECONDS
    poll.after_commit("postgresql")
    assert time.monotonic() - started >= poll.GRACE_SECONDS
    assert poll.FRESH_SECONDS < poll.GRACE_SECONDS and poll.POLL_SECONDS < poll.FRESH_SECONDS


def test_the_poller_stops_reading_when_nobody_asks_and_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poll, "IDLE_SECONDS", 0.2)
    reads = []
    poller = GenerationPoller(lambda: reads.append(time.monotonic()) or 5)
    assert poller.fresh() is None  # nothing polled yet: the first request reads itself
    deadline = time.monotonic() + 5
    while poller.fresh() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert poller.fresh() == 5
    time.sleep(0.6)  # idle
    count = len(reads)
    time.sleep(0.3)
    assert len(reads) == count  # no reads while idle
    assert poller.fresh() is None  # the last poll is too old now
    deadline = time.monotonic() + 5
    while poller.fresh() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert poller.fresh() == 5 and len(reads) > count
