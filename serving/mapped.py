"""One resident copy of a model's arrays per host.

Every worker process loads the versions it serves; unpickled, each holds its own copy of the
estimator's arrays (a 500 MB neighbours model costs its size again in every worker). Here, the
first process on a host to load a version writes the verified estimator once, uncompressed, to a
local directory (``[cache] mapped_root``, a file named by the artifact's sha256, written to a
temporary name and renamed, with a sidecar holding its own digest and the load's warnings), and
every process, that one included, loads it back with its arrays mapped read-only from the file
(``safety.load_mapped``: the same restricted unpickler and structure checks as an upload's, and
the file's digest checked first). The pages are the kernel's page cache, shared by every process
that maps them. The map is private (copy-on-write): nothing a process does to an array reaches the
file or another process; a page written would become that process's own.

Worth it only where the estimator predicts from the arrays it was unpickled with: linear models,
SVMs, neighbours (their training rows and trees), scalers, PCA, histogram gradient boosting.
scikit-learn's decision trees copy their nodes into memory of their own when unpickled, so a
mapped tree or forest would still be private in every process: those are left as they are (see
:func:`worth_mapping`). Anything that goes wrong here leaves the version loaded the usual way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelyard.registry import safety
from modelyard.registry.safety import Loaded

log = logging.getLogger("modelyard.serving")
_CHUNK = 1 << 20


class MappedStore:
    """This host's mapped copies of loaded versions, by artifact sha256."""

    def __init__(self, root: str | os.PathLike[str], *, min_bytes: int = 1 << 20,
                 extra: frozenset[str] = frozenset()) -> None:
        self.root = Path(root)
        self.min_bytes = min_bytes
        self.extra = extra

    def load(self, sha256: str, size_bytes: int, loader: Callable[[], Loaded]) -> Loaded:
        """The version whose artifact is ``sha256``: mapped from this host's copy, written by the
        first process to need it (``loader`` loads the artifact the usual way)."""
        if size_bytes < self.min_bytes:
            return loader()
        found = self._read(sha256)
        if found is not None:
            return found
        loaded = loader()
        if not worth_mapping(loaded.estimator):
            return loaded
        try:
            self._write(sha256, loaded)
            return self._read(sha256) or loaded
        except Exception:  # noqa: BLE001 - a full disk or a read-only directory: serve it unmapped
            log.warning("could not keep a mapped copy of %s; serving it from this process's memory", sha256,
                        exc_info=True)
            return loaded

    def discard(self, sha256s: Iterable[str]) -> None:
        """Remove the mapped copies of artifacts no version refers to any more (a process that
        still maps one keeps its pages until it lets the version go)."""
        for sha256 in sha256s:
            for path in (self._data(sha256), self._meta(sha256)):
                path.unlink(missing_ok=True)

    def keep_only(self, referenced: set[str]) -> list[str]:
        """Remove every mapped copy whose artifact is not in ``referenced`` (a server's start);
        the sha256s removed."""
        if not self.root.is_dir():
            return []
        stale = sorted({p.name.split(".")[0] for p in self.root.iterdir() if p.suffix in (".joblib", ".json")}
                       - referenced)
        self.discard(stale)
        return stale

    def _data(self, sha256: str) -> Path:
        return self.root / f"{sha256}.joblib"

    def _meta(self, sha256: str) -> Path:
        return self.root / f"{sha256}.json"

    def _read(self, sha256: str) -> Loaded | None:
        data, meta = self._data(sha256), self._meta(sha256)
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        try:
            if _digest(data) != recorded["digest"]:
                raise ValueError("its digest differs from the one written with it")
            estimator = safety.load_mapped(str(data), extra=self.extra)
        except Exception as error:  # noqa: BLE001 - damaged or tampered: written again from the artifact
            log.warning("the mapped copy of %s is unusable (%s); writing it again", sha256, error)
            self.discard([sha256])
            return None
        return Loaded(estimator, list(recorded["warnings"]), recorded["pickled_with"])

    def _write(self, sha256: str, loaded: Loaded) -> None:
        import joblib

        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{sha256}.", suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(loaded.estimator, tmp, compress=0)
            meta = {"digest": _digest(Path(tmp)), "warnings": list(loaded.warnings),
                    "pickled_with": loaded.pickled_with}
            meta_tmp = f"{tmp}.json"
            Path(meta_tmp).write_text(json.dumps(meta))
            os.replace(tmp, self._data(sha256))  # the data first: a reader needs both, and checks the digest
            os.replace(meta_tmp, self._meta(sha256))
        finally:
            for leftover in (tmp, f"{tmp}.json"):
                Path(leftover).unlink(missing_ok=True)


def worth_mapping(estimator: Any) -> bool:
    """Whether mapping shares ``estimator``'s arrays: not when it holds scikit-learn trees, whose
    nodes are copied out of the arrays they are unpickled from."""
    try:
        from sklearn.tree._tree import Tree
    except ImportError:  # another scikit-learn layout: nothing known to copy
        return True
    return not any(isinstance(part, Tree) for part in _parts(estimator))


def _parts(value: Any, depth: int = 0) -> Iterable[Any]:
    """``value`` and what it holds (attributes, lists, dicts), a few levels deep."""
    yield value
    if depth > 6:
        return
    if isinstance(value, (list, tuple)):
        children: Iterable[Any] = value
    elif isinstance(value, dict):
        children = value.values()
    elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
        children = vars(value).values() if hasattr(value, "__dict__") else ()
    else:
        return
    for child in children:
        if isinstance(child, (str, bytes, int, float, bool)) or child is None:
            continue
        yield from _parts(child, depth + 1)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
