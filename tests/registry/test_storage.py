"""Artifact stores: files on the local disk, and blobs in the registry's database (SQLite and
the real PostgreSQL), through one interface and one set of tests."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modelyard.registry.db import make_engine, upgrade_to_head
from modelyard.registry.dbstore import DatabaseArtifactStore
from modelyard.registry.errors import ArtifactCorrupt, ArtifactMissing
from modelyard.registry.models import ArtifactChunk
from modelyard.registry.storage import CHUNK_BYTES, ArtifactStore, LocalArtifactStore, sha256_of, stream_of
from tests.factories import tamper


@pytest.fixture(params=["local", "database-sqlite", "database-postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
        return
    url = (request.getfixturevalue("pg_url") if request.param.endswith("postgresql")
           else f"sqlite:///{tmp_path / 'registry.db'}")
    engine = make_engine(url)
    upgrade_to_head(engine)
    try:
        yield DatabaseArtifactStore(engine)
    finally:
        engine.dispose()


def test_put_returns_the_sha256_and_open_the_verified_bytes(store: ArtifactStore) -> None:
    digest = store.put(b"model bytes")
    assert digest == sha256_of(b"model bytes") == hashlib.sha256(b"model bytes").hexdigest()
    assert store.open(digest) == b"model bytes"


def test_a_blob_of_many_chunks_round_trips(store: ArtifactStore) -> None:
    data = os.urandom(CHUNK_BYTES) * 3 + b"tail"
    digest = store.put(data)
    opened = store.open(digest)
    assert len(opened) == len(data) and stream_of(opened).read() == data


def test_put_is_idempotent(store: ArtifactStore) -> None:
    assert store.put(b"same") == store.put(b"same")
    assert [sha for sha, _ in store.digests()] == [sha256_of(b"same")]


def test_concurrent_puts_of_the_same_bytes_store_one_blob(store: ArtifactStore) -> None:
    data = os.urandom(3 * CHUNK_BYTES)
    digests: list[str] = []
    threads = [threading.Thread(target=lambda: digests.append(store.put(data))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert digests == [sha256_of(data)] * 4
    assert stream_of(store.open(digests[0])).read() == data
    if isinstance(store, DatabaseArtifactStore):
        with store.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(ArtifactChunk)) == 3


def test_a_second_put_refreshes_when_the_blob_was_last_put(store: ArtifactStore) -> None:
    digest = store.put(b"model")
    first = dict(store.digests())[digest]
    threading.Event().wait(0.05)
    store.put(b"model")
    assert dict(store.digests())[digest] > first


def test_open_detects_tampering(store: ArtifactStore) -> None:
    digest = store.put(b"payload")
    tamper(store, digest, b"tampered")
    with pytest.raises(ArtifactCorrupt) as err:
        store.open(digest)
    assert err.value.sha256 == digest


def test_open_missing_blob(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactMissing):
        store.open("0" * 64)


def test_exists_and_delete(store: ArtifactStore) -> None:
    digest = store.put(b"x" * (2 * CHUNK_BYTES + 1))
    assert store.exists(digest)
    store.delete(digest)
    assert not store.exists(digest)
    assert list(store.digests()) == []
    store.delete(digest)  # deleting an absent blob is a no-op
    if isinstance(store, DatabaseArtifactStore):
        with store.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(ArtifactChunk)) == 0


@pytest.mark.parametrize("bad", ["../../etc/passwd", "abc", "G" * 64, "A" * 64])
def test_keys_are_never_derived_from_other_strings(store: ArtifactStore, bad: str) -> None:
    for call in (store.open, store.exists, store.delete):
        with pytest.raises(ValueError):
            call(bad)


def test_the_local_store_shards_by_sha256_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    digest = store.put(b"model bytes")
    assert store.path_for(digest) == store.root / "sha256" / digest[:2] / digest
    assert store.path_for(digest).read_bytes() == b"model bytes"
    store.put(b"model bytes")
    assert [p.name for p in store.path_for(digest).parent.iterdir()] == [digest]
