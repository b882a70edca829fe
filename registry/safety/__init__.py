"""The safety gate: the only place modelyard unpickles anything.

Uploaded pickles are hostile until proven otherwise. :func:`scan` (``scanner``) walks the opcode
stream and names every global it would import that is off the allowlist (``allowlist``: exact
names derived from the installed libraries by a stated rule). :func:`load` scans, then unpickles
with a ``find_class`` that enforces the same allowlist, so a stream the scanner misread still
cannot import anything else; skops files are checked from their schema (``skops_schema``) before
skops builds anything. Whatever loads then has its tree structures checked (``structure``): the
index arrays compiled predict code follows without bounds checks.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact
from modelyard.registry.safety import structure
from modelyard.registry.safety.allowlist import allowed_globals
from modelyard.registry.safety.scanner import JOBLIB_WRAPPER, MAX_EXPANDED_BYTES, scan
from modelyard.registry.safety.skops_schema import SKOPS_PLAIN, check_skops, checked_skops_names, skops_names
from modelyard.registry.storage import Data, stream_of

__all__ = ["FORMATS", "FORMAT_SUFFIXES", "MAX_EXPANDED_BYTES", "Loaded", "allowed_globals", "check_skops",
           "detect_format", "load", "load_recorded", "resolve_format", "scan", "skops_names"]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, allowed: frozenset[str]) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        _check(self.allowed, module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeArtifact("persistent id", "persistent ids are not accepted")


def _check(allowed: frozenset[str], module: str, name: str) -> None:
    if f"{module}.{name}" not in allowed:
        raise UnsafeArtifact(f"{module}.{name}")

# The formats an upload may be in, each with the suffix its download is named with.
FORMAT_SUFFIXES = {"pickle": "pkl", "joblib": "joblib", "skops": "skops"}
FORMATS = tuple(FORMAT_SUFFIXES)
# joblib's compressed containers, by magic prefix: zlib, gzip, bz2, xz, lzma, lz4.
_COMPRESSED_PREFIXES = (b"x", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"]\x00\x00", b"\x04\"M\x18")


# How a pickle can start: PROTO (protocols 2-5), or a first opcode of protocols 0 and 1 that
# builds a model (a global, a mark, an empty container).
_PICKLE_STARTS = (b"\x80", b"c", b"(", b"]", b"}", b")", b"N")


def detect_format(data: Data) -> str:
    """Which format the bytes are, from their content: a zip is skops, a compressed container
    or a pickle with joblib's array wrappers is joblib, any other pickle is pickle."""
    head = data[:16]
    if head.startswith(b"PK\x03\x04"):
        return "skops"
    if head.startswith(_COMPRESSED_PREFIXES) or head.startswith(b"ZF"):
        return "joblib"
    if data.find(b"NumpyArrayWrapper") != -1:
        return "joblib"
    return "pickle"


def resolve_format(data: Data, declared: str | None) -> str:
    """The format to load ``data`` as; a declared format the content contradicts is an error.

    joblib reads plain pickles too, so a pickle declared as joblib is accepted as joblib.
    """
    detected = detect_format(data)
    if detected == "pickle" and not data[:1].startswith(_PICKLE_STARTS):
        raise InvalidArtifact(
            f"not a model file: expected pickle, joblib or skops (the file starts with {data[:12]!r})",
            errors={"file": "not a model file"},
        )
    if declared is None or declared == detected:
        return detected
    if declared == "joblib" and detected == "pickle":
        return "joblib"
    raise InvalidArtifact(
        f"the file was declared as {declared} but its content is {detected}",
        errors={"format": declared, "detected": detected},
    )


def load(data: Data, fmt: str, *, extra: frozenset[str] = frozenset()) -> Any:
    """Unpickle ``data`` through the safety gate for its format.

    pickle: the opcode scan, then the restricted unpickler. joblib: joblib's own reader (which
    parses its layout: compressed containers, raw array bytes, nested pickles of object arrays)
    with every global it resolves, including those of nested pickles, checked against the same
    allowlist. skops: every type and function the file names must be on the allowlist (read
    from the file's schema here; skops's own list of untrusted types is not relied on).
    ``extra`` are the exact names an admin admitted beside the allowlist. Whatever loads, its
    tree structures are then checked (:mod:`registry.safety.structure`).
    Raises UnsafeArtifact naming every offending global, or InvalidArtifact.
    """
    allowed = allowed_globals(extra)
    if fmt == "pickle":
        scan(data, extra=extra)
        loaded = _guarded(lambda: _RestrictedUnpickler(stream_of(data), allowed).load(), fmt)
    elif fmt == "joblib":
        scan(data, "joblib", extra=extra)
        loaded = _guarded(lambda: _load_joblib(data, allowed), fmt)
    elif fmt == "skops":
        loaded = _guarded(lambda: _load_skops(data, allowed), fmt)
    else:
        raise InvalidArtifact(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    structure.check(loaded)
    return loaded


@dataclass(frozen=True)
class Loaded:
    estimator: Any
    warnings: list[str]  # what loading raised, e.g. "InconsistentVersionWarning: Trying to unpickle ..."
    pickled_with: str | None  # the scikit-learn version that wrote the file, when it says


def load_recorded(data: Data, fmt: str, *, extra: frozenset[str] = frozenset()) -> Loaded:
    """:func:`load`, keeping the warnings loading raised and the scikit-learn version the file
    was written with (estimators keep it in their state; a mismatch is an
    ``InconsistentVersionWarning``). Catching warnings touches process-wide filter state; loads
    are rare and single-flight, so that is accepted here."""
    import warnings

    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = load(data, fmt, extra=extra)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    written = [w.message.original_sklearn_version for w in caught
               if isinstance(w.message, InconsistentVersionWarning)]
    if written:
        pickled_with: str | None = written[0]
    else:
        pickled_with = sklearn.__version__ if type(estimator).__module__.startswith("sklearn.") else None
    return Loaded(estimator, messages, pickled_with)


def _guarded(loader: Any, fmt: str) -> Any:
    try:
        return loader()
    except (UnsafeArtifact, InvalidArtifact):
        raise
    except Exception as exc:
        raise InvalidArtifact(f"the {fmt} file could not be loaded: {type(exc).__name__}: {exc}") from None


def load_mapped(path: str, *, extra: frozenset[str] = frozenset()) -> Any:
    """A joblib file this host wrote from an estimator that passed :func:`load` (serving's
    shared copy, ``serving.mapped``), loaded with its arrays mapped from the file copy-on-write
    (``mmap_mode="c"``, a private mapping): every process on the host shares the file's pages
    while it only reads them, and a write, should any code make one, lands in a private copy of
    that page, never in the file or another process (scikit-learn's compiled code asks for
    writable buffers even where it only reads, so a read-only map would refuse SVMs and others).
    The same restricted unpickler and structure checks as an upload's: a file on disk is not
    trusted more than one uploaded."""
    loaded = _guarded(lambda: _load_joblib(b"", allowed_globals(extra), path=path), "joblib")
    structure.check(loaded)
    return loaded


def _load_joblib(data: Data, allowed: frozenset[str], *, path: str | None = None) -> Any:
    import numpy as np
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    class RestrictedNumpyUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            if f"{module}.{name}" != JOBLIB_WRAPPER:
                _check(allowed, module, name)
            return super().find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafeArtifact("persistent id", "persistent ids are not accepted")

        def load_build(self) -> None:
            # joblib's own load_build reads the array that follows a wrapper; an object array
            # is a nested pickle, which older joblib versions read with a plain pickle.load.
            # Read it here, through the restricted unpickler, whatever the joblib version.
            if isinstance(self.stack[-2], type):
                raise UnsafeArtifact(self.stack[-2].__qualname__, "BUILD would set attributes on a class")
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            wrapper = self.stack[-1]
            if not isinstance(wrapper, NumpyArrayWrapper):
                return
            self.stack.pop()
            if not isinstance(wrapper.dtype, np.dtype):
                raise InvalidArtifact("joblib array wrapper without a valid dtype")
            if wrapper.dtype.hasobject:
                array = _RestrictedUnpickler(self.file_handle, allowed).load()
                if not isinstance(array, np.ndarray):
                    raise InvalidArtifact("joblib object array is not an array")
            else:  # mapped (read-only) from the file when it is one, else read
                array = wrapper.read(self, self.ensure_native_byte_order)
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

    if path is not None:  # uncompressed, written here: its raw arrays are mapped, not read
        with open(path, "rb") as fh:
            return RestrictedNumpyUnpickler(path, fh, ensure_native_byte_order=False, mmap_mode="c").load()
    with _validate_fileobject_and_memmap(stream_of(data), "", None) as (fileobj, _mmap):
        if isinstance(fileobj, str):
            raise InvalidArtifact("joblib files written before joblib 0.10 are not accepted")
        return RestrictedNumpyUnpickler("", fileobj, ensure_native_byte_order=True).load()



def _load_skops(data: Data, allowed: frozenset[str]) -> Any:
    import skops.io

    names = checked_skops_names(data, allowed)
    return skops.io.load(stream_of(data), trusted=[n for n in names if n not in SKOPS_PLAIN])
