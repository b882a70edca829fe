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

Worth it where the estimator predicts from the arrays it was unpickled with: linear models, SVMs,
neighbours (their training rows and trees), scalers, PCA, histogram gradient boosting.
scikit-learn's decision trees copy their nodes into memory of their own when unpickled, so a
bare tree, random forest or extra trees is compiled instead (``serving.forest``: flat node
arrays, checked to answer as scikit-learn does) and its arrays are written as ``.npy`` files and
mapped (no pickle at all); a pipeline ending in one has its other steps mapped from a joblib
file and the forest from its arrays (:func:`pipeline_forest`); trees anywhere else in a model
leave it loaded as it is (:func:`worth_mapping`).
Anything that goes wrong here leaves the version loaded the usual way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.registry import safety
from modelyard.registry.safety import Loaded
from modelyard.serving.forest import ARRAYS, CompiledForest, agrees, probe_rows

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
        estimator = loaded.estimator
        worth = worth_mapping(estimator)
        compiled = None if worth else compiled_forest(estimator)
        piped = None if worth or compiled is not None else pipeline_forest(estimator)
        if not worth and compiled is None and piped is None:
            return loaded
        try:
            if compiled is not None:
                self._write_forest(sha256, compiled, loaded)
            elif piped is not None:
                self._write_forest(sha256, piped[1], loaded, head=(estimator, piped[0]))
            else:
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
            shutil.rmtree(self._forest(sha256), ignore_errors=True)

    def keep_only(self, referenced: set[str]) -> list[str]:
        """Remove every mapped copy whose artifact is not in ``referenced`` (a server's start);
        the sha256s removed."""
        if not self.root.is_dir():
            return []
        stale = sorted({p.name.split(".")[0] for p in self.root.iterdir()
                        if p.suffix in (".joblib", ".json", ".forest") and not p.name.startswith(".")} - referenced)
        self.discard(stale)
        for leftover in self.root.glob(".*.tmp*"):  # a writer killed mid-write
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        return stale

    def _data(self, sha256: str) -> Path:
        return self.root / f"{sha256}.joblib"

    def _meta(self, sha256: str) -> Path:
        return self.root / f"{sha256}.json"

    def _forest(self, sha256: str) -> Path:
        return self.root / f"{sha256}.forest"

    def _read(self, sha256: str) -> Loaded | None:
        data, meta = self._data(sha256), self._meta(sha256)
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        try:
            if recorded.get("form") == "forest":
                estimator: Any = self._read_forest(sha256, recorded)
            elif recorded.get("form") == "pipeline-forest":
                estimator = self._read_pipeline_forest(sha256, recorded)
            elif _digest(data) != recorded["digest"]:
                raise ValueError("its digest differs from the one written with it")
            else:
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


    def _write_forest(self, sha256: str, compiled: CompiledForest, loaded: Loaded,
                      head: tuple[Any, str] | None = None) -> None:
        """The compiled forest's arrays as ``.npy`` files (no pickle), in a directory renamed into
        place whole, then its sidecar. ``head``: the pipeline the forest ends (and its last
        step's name), written as a joblib file with that step left out."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{sha256}.", suffix=".tmp"))
        meta_tmp = Path(f"{tmp}.json")
        head_tmp = Path(f"{tmp}.joblib")
        piped: dict[str, Any] = {}
        try:
            if head is not None:
                import joblib
                from sklearn.pipeline import Pipeline

                pipeline, final = head
                joblib.dump(Pipeline(pipeline.steps[:-1]), head_tmp, compress=0)
                piped = {"form": "pipeline-forest", "final": final, "steps": len(pipeline.steps) - 1,
                         "digest": _digest(head_tmp)}
            arrays = dict(compiled.arrays)
            classes = compiled.classes_
            if classes is not None:
                arrays["classes"] = classes.astype(str) if classes.dtype == object else classes
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
            meta_tmp.write_text(json.dumps({
                "form": "forest", "kind": compiled.kind, "n_features": compiled.n_features_in_,
                "max_depth": compiled.max_depth, "classes_object": classes is not None and classes.dtype == object,
                "digests": {name: _digest(tmp / f"{name}.npy") for name in arrays},
                "warnings": list(loaded.warnings), "pickled_with": loaded.pickled_with, **piped}))
            try:
                os.replace(tmp, self._forest(sha256))
            except OSError:  # another process put its copy there first: the same arrays
                pass
            if head is not None:
                os.replace(head_tmp, self._data(sha256))
            os.replace(meta_tmp, self._meta(sha256))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            meta_tmp.unlink(missing_ok=True)
            head_tmp.unlink(missing_ok=True)

    def _read_forest(self, sha256: str, recorded: dict[str, Any]) -> CompiledForest:
        folder = self._forest(sha256)
        arrays = {}
        for name, digest in recorded["digests"].items():
            path = folder / f"{name}.npy"
            if _digest(path) != digest:
                raise ValueError(f"{name}.npy's digest differs from the one written with it")
            arrays[name] = np.load(path, mmap_mode="c", allow_pickle=False)
        classes = arrays.pop("classes", None)
        if classes is not None and recorded["classes_object"]:
            classes = np.asarray(classes).astype(object)
        if set(arrays) != set(ARRAYS):
            raise ValueError("arrays are missing")
        return CompiledForest(recorded["kind"], arrays, classes, recorded["n_features"], recorded["max_depth"])


    def _read_pipeline_forest(self, sha256: str, recorded: dict[str, Any]) -> Any:
        """The pipeline back: its other steps mapped from the joblib file (restricted unpickler,
        digest first), its last step the compiled forest."""
        from sklearn.pipeline import Pipeline

        forest = self._read_forest(sha256, recorded)
        data = self._data(sha256)
        if _digest(data) != recorded["digest"]:
            raise ValueError("its digest differs from the one written with it")
        head = safety.load_mapped(str(data), extra=self.extra)
        if type(head) is not Pipeline or len(head.steps) != recorded["steps"]:
            raise ValueError("it is not the pipeline written")
        return ForestPipeline(head, recorded["final"], forest)


class ForestPipeline:
    """A pipeline whose last step, a forest, is compiled: its other steps (a scikit-learn
    Pipeline of them, mapped) transform, the compiled forest predicts, as the pipeline did.
    ``steps`` lists them all, as a Pipeline's does (what ``serving.explain`` reads)."""

    def __init__(self, head: Any, final: str, forest: CompiledForest) -> None:
        self.head = head
        self.forest = forest
        self.steps = [*head.steps, (final, forest)]
        self.classes_ = forest.classes_
        self.n_features_in_ = getattr(head, "n_features_in_", forest.n_features_in_)

    def predict(self, X: Any) -> np.ndarray:
        return self.forest.predict(self.head.transform(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.forest.predict_proba(self.head.transform(X))


def pipeline_forest(estimator: Any) -> tuple[str, CompiledForest] | None:
    """A pipeline ending in a tree or forest that compiles (:func:`compiled_forest`), whose other
    steps hold no trees: its last step's name and the compiled forest; else None. Its steps
    before the forest are mapped as any estimator is, the forest as a bare one."""
    try:
        from sklearn.pipeline import Pipeline
    except ImportError:
        return None
    if type(estimator) is not Pipeline or len(estimator.steps) < 2:
        return None
    final_name, final = estimator.steps[-1]
    if final is None or isinstance(final, str) or not all(worth_mapping(step) for _, step in estimator.steps[:-1]):
        return None
    compiled = compiled_forest(final)
    return None if compiled is None else (final_name, compiled)


def compiled_forest(estimator: Any) -> CompiledForest | None:
    """``estimator`` compiled (``serving.forest``), when it is a tree or a forest that compiles to
    answers identical to its own on rows drawn from its thresholds; else None."""
    try:
        compiled = CompiledForest.of(estimator)
        if compiled is None:
            return None
        classes = compiled.classes_
        if classes is not None and classes.dtype == object and not all(isinstance(c, str) for c in classes):
            return None
        import joblib

        # A forest fitted with n_jobs > 1 adds its trees in whatever order its threads finish (its
        # answers move in the last bits from call to call): the compiled one adds them in order,
        # as scikit-learn does on one thread, and is compared with that.
        with joblib.parallel_config(backend="sequential"):
            same = agrees(compiled, estimator, probe_rows(compiled))
        if not same:
            log.warning("%s: the compiled forest differs from scikit-learn's; serving scikit-learn's",
                        type(estimator).__name__)
            return None
        return compiled
    except Exception as error:  # noqa: BLE001 - a forest this reading did not foresee
        log.warning("%s: not compiled (%s)", type(estimator).__name__, error)
        return None


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
    elif hasattr(value, "__dict__"):
        children = vars(value).values()
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
