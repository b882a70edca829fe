from pathlib import Path

import pytest

from modelyard.registry.errors import ArtifactCorrupt, ArtifactMissing
from modelyard.registry.storage import LocalArtifactStore, sha256_of


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_put_stores_under_sharded_sha256_path(store: LocalArtifactStore) -> None:
    digest = store.put(b"model bytes")
    assert digest == sha256_of(b"model bytes")
    assert store.path_for(digest) == store.root / "sha256" / digest[:2] / digest
    assert store.path_for(digest).read_bytes() == b"model bytes"


def test_put_is_idempotent_and_leaves_no_temp_files(store: LocalArtifactStore) -> None:
    first = store.put(b"same")
    second = store.put(b"same")
    assert first == second
    assert [p.name for p in store.path_for(first).parent.iterdir()] == [first]


def test_open_returns_verified_bytes(store: LocalArtifactStore) -> None:
    digest = store.put(b"payload")
    assert store.open(digest) == b"payload"


def test_open_detects_tampering(store: LocalArtifactStore) -> None:
    digest = store.put(b"payload")
    store.path_for(digest).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt) as err:
        store.open(digest)
    assert err.value.sha256 == digest


def test_open_missing_blob(store: LocalArtifactStore) -> None:
    with pytest.raises(ArtifactMissing):
        store.open("0" * 64)


def test_exists_and_delete(store: LocalArtifactStore) -> None:
    digest = store.put(b"x")
    assert store.exists(digest)
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)  # deleting an absent blob is a no-op


@pytest.mark.parametrize("bad", ["../../etc/passwd", "abc", "G" * 64, "A" * 64])
def test_paths_are_never_derived_from_other_strings(store: LocalArtifactStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.path_for(bad)
