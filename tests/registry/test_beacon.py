"""registry.beacon: on SQLite a server reads the generation only when the token every registry
write changes after its commit has changed; a write that had returned is never missed, whether
it was made by another process or by a thread beside the readers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url

from modelyard.registry import beacon, writes
from modelyard.registry.beacon import Beacon
from modelyard.registry.db import make_engine, make_session_factory, upgrade_to_head
from modelyard.registry.models import RegistryState
from tests.threads import alongside

_WRITER = """
import sys
from modelyard.registry import writes
from modelyard.registry.db import make_engine, make_session_factory
from modelyard.registry.models import RegistryState
from sqlalchemy import select
sessions = make_session_factory(make_engine(sys.argv[1]))
for line in sys.stdin:  # one write per line asked, its committed generation printed once it returned
    with sessions() as session:
        writes.write(session, lambda: None)
        print(session.scalar(select(RegistryState.generation)), flush=True)
"""


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def _counted_reader(engine: Engine) -> tuple[Callable[[], int], list[int]]:
    reads: list[int] = []

    def read() -> int:
        with engine.connect() as conn:
            value = conn.scalar(select(RegistryState.generation)) or 0
        reads.append(value)
        return value

    return read, reads


def test_a_write_by_another_process_is_seen_by_the_next_call_and_read_only_then(
        registry: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beacon, "MAX_AGE_SECONDS", 3600.0)  # only the token may cause a read here
    path = beacon.path_for(registry.url)
    assert path is not None and path.name == "registry.db-generation"
    local = Beacon(path)
    read, reads = _counted_reader(registry)
    first = local.generation(read)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(registry.url)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for round_ in range(1, 31):
            for _ in range(50):  # no write between: the database is not read again
                assert local.generation(read) == first + round_ - 1
            writer.stdin.write("write\n")
            writer.stdin.flush()
            returned = int(writer.stdout.readline())  # the write returned
            assert local.generation(read) == returned == first + round_
            assert len(reads) == round_ + 1  # one read per write, none per call
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert writer.returncode == 0


def test_writes_racing_readers_on_threads_are_never_missed(registry: Engine) -> None:
    path = beacon.path_for(registry.url)
    assert path is not None
    local = Beacon(path)
    read, reads = _counted_reader(registry)
    sessions = make_session_factory(registry)
    start = local.generation(read)
    returned = {"generation": start}
    stale: list[tuple[int, int]] = []
    calls = 0

    def writer(stop: threading.Event) -> None:
        with sessions() as session:
            while not stop.is_set():
                writes.write(session, lambda: None)
                returned["generation"] = session.scalar(select(RegistryState.generation)) or 0

    def caller() -> None:
        nonlocal calls
        deadline = time.monotonic() + 60
        while returned["generation"] < start + 25 and time.monotonic() < deadline:  # until 25 writes returned
            before = returned["generation"]  # every write that had returned is <= this
            got = local.generation(read)
            calls += 1
            if got < before:
                stale.append((before, got))

    alongside(writer, caller, threads=4)
    assert stale == []
    assert returned["generation"] >= start + 25 and len(reads) < calls / 2, (returned, len(reads), calls)


def test_a_write_made_by_hand_is_seen_within_the_max_age(registry: Engine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beacon, "MAX_AGE_SECONDS", 0.05)
    path = beacon.path_for(registry.url)
    assert path is not None
    local = Beacon(path)
    read, _ = _counted_reader(registry)
    before = local.generation(read)
    with registry.begin() as conn:  # SQL by hand: no token changes
        conn.execute(update(RegistryState).values(generation=RegistryState.generation + 5))
    deadline = threading.Event()
    deadline.wait(0.06)
    assert local.generation(read) == before + 5


def test_without_a_token_file_every_call_reads(registry: Engine, tmp_path: Path) -> None:
    local = Beacon(tmp_path / "missing-directory" / "registry.db-generation")
    read, reads = _counted_reader(registry)
    for _ in range(5):
        local.generation(read)
    assert len(reads) == 5


def test_a_new_token_file_holds_a_token_and_a_write_never_shrinks_it(tmp_path: Path) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'r.db'}")
    path = beacon.path_for(url)
    assert path is not None
    local = Beacon(path)
    assert local.generation(lambda: 7) == 7
    token = path.read_bytes()
    assert len(token) == 8
    path.write_bytes(token + b"trailing")  # whatever else the file holds stays
    beacon.bump(url)
    after = path.read_bytes()
    assert len(after) == 16 and after[:8] != token and after[8:] == b"trailing"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@h/db"])
def test_only_a_sqlite_file_has_a_token(url: str) -> None:
    assert beacon.path_for(make_url(url)) is None
    beacon.bump(make_url(url))  # nothing to change, nothing raised


def test_the_registry_written_through_the_app_changes_the_token(registry: Engine) -> None:
    path = beacon.path_for(registry.url)
    assert path is not None
    Beacon(path).generation(lambda: 0)
    before = path.read_bytes()
    with make_session_factory(registry)() as session:
        writes.write(session, lambda: session.execute(text("SELECT 1")))
    assert path.read_bytes() != before
