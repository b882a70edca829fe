"""The pickle scanner and the restricted loader: the only place modelyard unpickles anything.

Uploaded pickles are hostile until proven otherwise. :func:`scan` walks the opcode stream and
resolves every global it would import; each must be an exact name on the allowlist (scikit-learn
estimator classes, and the NumPy/SciPy/builtin reconstructors real models need). :func:`load`
scans, then unpickles with a ``find_class`` that enforces the same allowlist, so a stream the
scanner misread still cannot import anything else.
"""

from __future__ import annotations

import functools
import io
import pickle
import pickletools
from collections.abc import Iterator
from typing import Any

from registry.errors import InvalidArtifact, UnsafeArtifact

# Exact names (module.qualname) beyond scikit-learn's estimator classes. No module prefixes:
# numpy, scipy and sklearn all contain functions that read, write, import or evaluate.
_EXTRA_ALLOWED = frozenset(
    {
        # builtins a pickle of a model legitimately contains
        "builtins.slice",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.object",
        "builtins.bytes",
        "__builtin__.bytes",
        "__builtin__.set",
        "__builtin__.frozenset",
        "__builtin__.slice",
        "__builtin__.object",
        "_codecs.encode",  # protocol 2 encodes bytes through it
        "copyreg._reconstructor",  # protocols 0 and 1 rebuild objects through it
        "collections.OrderedDict",
        # Types held as estimator parameters (e.g. OneHotEncoder(dtype=np.float64)); calling
        # one only makes a number, a string or an empty container.
        "builtins.float",
        "builtins.int",
        "builtins.bool",
        "builtins.str",
        "builtins.list",
        "builtins.tuple",
        "builtins.dict",
        *(f"numpy.{t}" for t in ("float16", "float32", "float64", "longdouble", "int8", "int16", "int32",
                                 "int64", "uint8", "uint16", "uint32", "uint64", "bool_", "complex64",
                                 "complex128", "object_", "str_", "bytes_")),
        # NumPy arrays, scalars, dtypes (numpy 2 names and their numpy 1 spellings)
        "numpy.ndarray",
        "numpy.dtype",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy.ma.core._mareconstruct",
        # numpy.random state held by fitted estimators with random_state
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "numpy.random.mtrand.RandomState",
        # SciPy sparse matrices (e.g. a OneHotEncoder's output buffers)
        "scipy.sparse._csr.csr_matrix",
        "scipy.sparse._csc.csc_matrix",
        "scipy.sparse._coo.coo_matrix",
        "scipy.sparse._csr.csr_array",
        "scipy.sparse._csc.csc_array",
        # scikit-learn's non-estimator building blocks of fitted models
        "sklearn.tree._tree.Tree",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.AbsoluteError",
        "sklearn._loss.loss.PinballLoss",
        "sklearn._loss.loss.HuberLoss",
        "sklearn._loss.loss.HalfPoissonLoss",
        "sklearn._loss.loss.HalfGammaLoss",
        "sklearn._loss.loss.HalfTweedieLoss",
        "sklearn._loss.loss.HalfTweedieLossIdentity",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.ExponentialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.utils._bunch.Bunch",
    }
)

_CYTHON_LOSSES = (
    "CyHalfSquaredError",
    "CyAbsoluteError",
    "CyPinballLoss",
    "CyHuberLoss",
    "CyHalfPoissonLoss",
    "CyHalfGammaLoss",
    "CyHalfTweedieLoss",
    "CyHalfTweedieLossIdentity",
    "CyHalfBinomialLoss",
    "CyExponentialLoss",
    "CyHalfMultinomialLoss",
)


@functools.cache
def allowed_globals() -> frozenset[str]:
    """Every global an uploaded pickle may import, as exact ``module.qualname`` strings."""
    from sklearn.utils import all_estimators

    names = set(_EXTRA_ALLOWED)
    for _name, cls in all_estimators():
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    for loss in _CYTHON_LOSSES:
        names.add(f"sklearn._loss._loss.{loss}")
        names.add(f"sklearn._loss._loss.__pyx_unpickle_{loss}")
    return frozenset(names)


def _check(module: str, name: str) -> str:
    qualified = f"{module}.{name}"
    if qualified not in allowed_globals():
        raise UnsafeArtifact(qualified)
    return qualified


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                         "BINSTRING", "SHORT_BINSTRING"})
_MEMO_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
# Opcodes that touch neither stack nor memo; a frame break may fall between a STACK_GLOBAL's names.
_NO_STACK_OPS = frozenset({"FRAME", "PROTO"})
_FORBIDDEN_OPS = {
    "EXT1": "copyreg extension codes are not accepted",
    "EXT2": "copyreg extension codes are not accepted",
    "EXT4": "copyreg extension codes are not accepted",
    "PERSID": "persistent ids are not accepted",
    "BINPERSID": "persistent ids are not accepted",
}


def scan(data: bytes) -> set[str]:
    """Return the globals a pickle stream imports; raise if any is not allowed.

    Raises :class:`UnsafeArtifact` naming the first global off the allowlist (or the opcode that
    cannot be proven safe) and :class:`InvalidArtifact` for a stream that is not a whole pickle.
    """
    found: set[str] = set()
    memo: dict[int, Any] = {}
    # Values of the most recent pushes, as far as the scanner can know them (None = unknown).
    recent: list[Any] = []
    try:
        ops = list(_genops(data))
    except ValueError as exc:
        raise InvalidArtifact(f"not a valid pickle stream: {exc}") from None
    if not ops or ops[-1][0].name != "STOP":
        raise InvalidArtifact("not a valid pickle stream: no STOP opcode")
    for opcode, arg, _pos in ops:
        op = opcode.name
        if op in _FORBIDDEN_OPS:
            raise UnsafeArtifact(op, _FORBIDDEN_OPS[op])
        if op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.add(_check(module, name))
            recent.append(None)
        elif op == "STACK_GLOBAL":
            if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                raise UnsafeArtifact("STACK_GLOBAL", "its names are not literal strings")
            module, name = recent[-2], recent[-1]
            found.add(_check(module, name))
            recent[-2:] = [None]
        elif op in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else None)
        elif op in _MEMO_PUT_OPS:
            index = len(memo) if op == "MEMOIZE" else arg
            memo[index] = recent[-1] if recent else None
        elif op in _MEMO_GET_OPS:
            recent.append(memo.get(arg))
        elif op in _NO_STACK_OPS:
            continue
        else:
            recent.append(None)
        del recent[:-2]
    return found


def _genops(data: bytes) -> Iterator[tuple[Any, Any, int | None]]:
    yield from pickletools.genops(io.BytesIO(data))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        _check(module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeArtifact("persistent id", "persistent ids are not accepted")


FORMATS = ("pickle", "joblib", "skops")
_JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
# joblib's compressed containers, by magic prefix: zlib, gzip, bz2, xz, lzma, lz4.
_COMPRESSED_PREFIXES = (b"x", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"]\x00\x00", b"\x04\"M\x18")


def detect_format(data: bytes) -> str:
    """Which format the bytes are, from their content: a zip is skops, a compressed container
    or a pickle with joblib's array wrappers is joblib, any other pickle is pickle."""
    if data.startswith(b"PK\x03\x04"):
        return "skops"
    if data.startswith(_COMPRESSED_PREFIXES) or data.startswith(b"ZF"):
        return "joblib"
    if b"NumpyArrayWrapper" in data:
        return "joblib"
    return "pickle"


def resolve_format(data: bytes, declared: str | None) -> str:
    """The format to load ``data`` as; a declared format the content contradicts is an error.

    joblib reads plain pickles too, so a pickle declared as joblib is accepted as joblib.
    """
    detected = detect_format(data)
    if declared is None or declared == detected:
        return detected
    if declared == "joblib" and detected == "pickle":
        return "joblib"
    raise InvalidArtifact(
        f"the file was declared as {declared} but its content is {detected}",
        errors={"format": declared, "detected": detected},
    )


def load(data: bytes, fmt: str) -> Any:
    """Unpickle ``data`` through the safety gate for its format.

    pickle: the opcode scan, then the restricted unpickler. joblib: joblib's own reader (which
    parses its layout: compressed containers, raw array bytes, nested pickles of object arrays)
    with every global it resolves, including those of nested pickles, checked against the same
    allowlist. skops: every type skops does not trust by default must be on the allowlist.
    Raises UnsafeArtifact naming the global, or InvalidArtifact.
    """
    if fmt == "pickle":
        scan(data)
        return _guarded(lambda: _RestrictedUnpickler(io.BytesIO(data)).load(), fmt)
    if fmt == "joblib":
        return _guarded(lambda: _load_joblib(data), fmt)
    if fmt == "skops":
        return _guarded(lambda: _load_skops(data), fmt)
    raise InvalidArtifact(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _guarded(loader: Any, fmt: str) -> Any:
    try:
        return loader()
    except (UnsafeArtifact, InvalidArtifact):
        raise
    except Exception as exc:
        raise InvalidArtifact(f"the {fmt} file could not be loaded: {type(exc).__name__}: {exc}") from None


def _load_joblib(data: bytes) -> Any:
    import numpy as np
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    class RestrictedNumpyUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            if f"{module}.{name}" != _JOBLIB_WRAPPER:
                _check(module, name)
            return super().find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafeArtifact("persistent id", "persistent ids are not accepted")

        def load_build(self) -> None:
            # joblib's own load_build reads the array that follows a wrapper; an object array
            # is a nested pickle, which older joblib versions read with a plain pickle.load.
            # Read it here, through the restricted unpickler, whatever the joblib version.
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            wrapper = self.stack[-1]
            if not isinstance(wrapper, NumpyArrayWrapper):
                return
            self.stack.pop()
            if not isinstance(wrapper.dtype, np.dtype):
                raise InvalidArtifact("joblib array wrapper without a valid dtype")
            if wrapper.dtype.hasobject:
                array = _RestrictedUnpickler(self.file_handle).load()
                if not isinstance(array, np.ndarray):
                    raise InvalidArtifact("joblib object array is not an array")
            else:
                array = wrapper.read(self, self.ensure_native_byte_order)
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

    with _validate_fileobject_and_memmap(io.BytesIO(data), "", None) as (fileobj, _mmap):
        if isinstance(fileobj, str):
            raise InvalidArtifact("joblib files written before joblib 0.10 are not accepted")
        return RestrictedNumpyUnpickler("", fileobj, ensure_native_byte_order=True).load()


def _load_skops(data: bytes) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=data)
    for type_name in untrusted:
        if type_name not in allowed_globals():
            raise UnsafeArtifact(type_name)
    return skops.io.loads(data, trusted=untrusted)
