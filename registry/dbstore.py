"""Artifacts in the registry's own database (``[artifacts] store = "database"``).

Several servers on several hosts that share one PostgreSQL then share artifacts too, with no
shared filesystem. A blob is a row of ``artifact_blobs`` and its bytes are rows of
``artifact_chunks``, 1 MiB each, written and read one at a time: a large model never needs a
second whole copy of itself in memory (reads fill one buffer of the blob's size, written a chunk
at a time and checked against the sha256 as they arrive). A blob is written in its own
transaction, committed before the version row that refers to it, exactly as the local store's
file is in place before; it is removed when the last version using it goes.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterator

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from modelyard.registry.db import utcnow
from modelyard.registry.errors import ArtifactCorrupt, ArtifactMissing
from modelyard.registry.models import ArtifactBlob, ArtifactChunk
from modelyard.registry.storage import CHUNK_BYTES, Data, check_digest, chunks_of, sha256_of


class DatabaseArtifactStore:
    """Blobs in the registry database, through ``engine`` (the app's own; each call takes a
    connection of its own, never the request's session)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, data: Data) -> str:
        digest = sha256_of(data)
        if self._touch(digest):
            return digest
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ArtifactBlob).values(sha256=digest, size_bytes=len(data), last_put=utcnow()))
                for seq, chunk in enumerate(chunks_of(data)):
                    conn.execute(insert(ArtifactChunk).values(sha256=digest, seq=seq, data=chunk))
        except IntegrityError:  # the same bytes were put meanwhile by another upload: they are here
            self._touch(digest)
        return digest

    def open(self, sha256: str) -> Data:
        check_digest(sha256)
        with self.engine.connect() as conn:
            size = conn.scalar(select(ArtifactBlob.size_bytes).where(ArtifactBlob.sha256 == sha256))
            if size is None:
                raise ArtifactMissing(sha256)
            rows = conn.execution_options(yield_per=4).execute(
                select(ArtifactChunk.data).where(ArtifactChunk.sha256 == sha256).order_by(ArtifactChunk.seq))
            # One buffer of the blob's size (anonymous memory, outside Python's heap), filled a
            # chunk at a time; a blob of one chunk is that chunk.
            buffer: Data = mmap.mmap(-1, size) if size > CHUNK_BYTES else b""
            hasher = hashlib.sha256()
            taken = 0
            for (chunk,) in rows:
                chunk = bytes(chunk)
                hasher.update(chunk)
                if isinstance(buffer, mmap.mmap):
                    end = min(size, taken + len(chunk))
                    buffer[taken:end] = chunk[:end - taken]
                else:
                    buffer = chunk
                taken += len(chunk)
        actual = hasher.hexdigest()
        if actual != sha256 or taken != size:
            raise ArtifactCorrupt(sha256, actual)
        return buffer

    def exists(self, sha256: str) -> bool:
        check_digest(sha256)
        with self.engine.connect() as conn:
            return conn.scalar(select(ArtifactBlob.sha256).where(ArtifactBlob.sha256 == sha256)) is not None

    def delete(self, sha256: str) -> None:
        check_digest(sha256)
        with self.engine.begin() as conn:
            conn.execute(delete(ArtifactChunk).where(ArtifactChunk.sha256 == sha256))
            conn.execute(delete(ArtifactBlob).where(ArtifactBlob.sha256 == sha256))

    def digests(self) -> Iterator[tuple[str, float]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ArtifactBlob.sha256, ArtifactBlob.last_put)).all()
        for sha256, last_put in rows:
            yield sha256, last_put.timestamp()

    def remove_stale_temporaries(self, older_than: float) -> int:
        """None to remove: a put killed half-way is a transaction rolled back."""
        return 0

    def _touch(self, digest: str) -> bool:
        """Refresh a stored blob's "last put" (garbage collection spares what uploads are
        using); whether it was there."""
        with self.engine.begin() as conn:
            touched = conn.execute(update(ArtifactBlob).where(ArtifactBlob.sha256 == digest).values(last_put=utcnow()))
            return touched.rowcount > 0
