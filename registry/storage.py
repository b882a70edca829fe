"""Content-addressed artifact storage.

A blob is named by its sha256 and lives at ``<root>/sha256/ab/abcd...``; no path is ever derived
from a user-supplied name. Writes go to a temp file in the target directory, are fsynced, then
renamed into place, so a reader never sees a partial blob. Every read verifies the digest.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from modelyard.registry.errors import ArtifactCorrupt, ArtifactMissing

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1 << 20

Data = bytes | mmap.mmap
"""An artifact's bytes: in memory, or (an upload) a read-only map of the temporary file it was
streamed to, so a large upload is not held in the worker's own memory."""


def stream_of(data: Data) -> BinaryIO:
    """A file object reading ``data`` from its start, without copying it whole."""
    if isinstance(data, mmap.mmap):
        return cast(BinaryIO, io.BufferedReader(_MapReader(data), buffer_size=CHUNK_BYTES))
    return io.BytesIO(data)


def chunks_of(data: Data) -> Iterator[bytes]:
    """``data`` a chunk at a time (a response body that never copies a map whole)."""
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start:start + CHUNK_BYTES]


class _MapReader(io.RawIOBase):
    """A read-only, seekable file over a map, with a position of its own (the map's position is
    shared by every reader, so each read seeks it first). Holds no buffer export, so the map can
    be closed while a reader is still referenced."""

    def __init__(self, data: mmap.mmap) -> None:
        super().__init__()
        self._data = data
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._data.seek(self._position)
        chunk = self._data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class ArtifactStore(Protocol):
    """What the registry needs from a blob store, keyed by sha256."""

    def put(self, data: Data) -> str:
        """Store ``data`` and return its sha256 (idempotent)."""

    def open(self, sha256: str) -> Data:
        """Return the blob's bytes after checking their digest; raise ArtifactMissing/Corrupt.
        Read them with :func:`stream_of` (a large blob may be a map, not bytes)."""

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None:
        """Remove the blob if present."""

    def digests(self) -> Iterator[tuple[str, float]]:
        """Every stored blob as (sha256, when it was last put, as a Unix time)."""

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Remove partial writes a killed process left (temp files older than ``older_than``,
        a Unix time); return how many."""


def sha256_of(data: Data) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(sha256: str) -> None:
    """Refuse anything but a sha256 hex digest as a blob's key."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")


class LocalArtifactStore:
    """Blobs in a directory on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: Data) -> str:
        digest = sha256_of(data)
        target = self.path_for(digest)
        if target.is_file():
            os.utime(target)  # "last put" is now: garbage collection spares what uploads are using
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def open(self, sha256: str) -> bytes:
        path = self.path_for(sha256)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise ArtifactMissing(sha256) from None
        actual = sha256_of(data)
        if actual != sha256:
            raise ArtifactCorrupt(sha256, actual)
        return data

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def digests(self) -> Iterator[tuple[str, float]]:
        for path in (self.root / "sha256").glob("??/*"):
            if _SHA256.match(path.name):
                try:
                    yield path.name, path.stat().st_mtime
                except FileNotFoundError:  # removed while listing
                    continue

    def remove_stale_temporaries(self, older_than: float) -> int:
        removed = 0
        for path in (self.root / "sha256").glob("??/.tmp-*"):
            try:
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_store(kind: str, root: str, engine: Engine | None = None) -> ArtifactStore:
    """The configured artifact store: ``local`` (files under ``root``) or ``database`` (the
    registry's own database, through ``engine``; see :mod:`registry.dbstore`)."""
    if kind == "local":
        return LocalArtifactStore(root)
    if kind == "database" and engine is not None:
        from modelyard.registry.dbstore import DatabaseArtifactStore  # it imports the models

        return DatabaseArtifactStore(engine)
    raise ValueError(f"unknown artifact store {kind!r}")
