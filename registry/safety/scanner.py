"""The scanner: a symbolic run of the pickle machine that finds every global a pickle (or joblib)
stream would import, without importing or calling anything.

Every opcode of protocols 0-5 moves values on a stack and a memo, as the real unpickler would.
Literals are tracked exactly, so a STACK_GLOBAL's names are known (or refused) wherever they came
from; every import (GLOBAL, STACK_GLOBAL, INST) is checked against the allowlist, and all the
offending ones are named in one refusal; every call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST) must
target an allowed global; BUILD may not set state on a class. In joblib streams the raw array
bytes after each NumpyArrayWrapper are skipped by their declared size, and object arrays (nested
pickles) are walked the same way.
"""

from __future__ import annotations

import io
import pickletools
from collections.abc import Callable
from dataclasses import dataclass
from struct import error as struct_error
from typing import Any

from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact
from modelyard.registry.safety.allowlist import allowed_globals
from modelyard.registry.storage import Data, stream_of

JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"


class _Offenders:
    """The globals a stream imports, and those of them off the allowlist (all of them, so one
    refusal names every one)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.found: set[str] = set()
        self.refused: list[str] = []

    def check(self, module: str, name: str, also: frozenset[str] = frozenset()) -> str:
        qualified = f"{module}.{name}"
        self.found.add(qualified)
        if qualified not in self.allowed and qualified not in also and qualified not in self.refused:
            self.refused.append(qualified)
        return qualified

    def raise_if_any(self) -> None:
        if self.refused:
            raise UnsafeArtifact(self.refused)


_FORBIDDEN_OPS = {
    "EXT1": "copyreg extension codes are not accepted",
    "EXT2": "copyreg extension codes are not accepted",
    "EXT4": "copyreg extension codes are not accepted",
    "PERSID": "persistent ids are not accepted",
    "BINPERSID": "persistent ids are not accepted",
    "NEXT_BUFFER": "out-of-band buffers are not accepted",
}
_LITERALS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
    "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
})
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_MAX_DEPTH = 8  # object arrays inside object arrays inside ...
MAX_EXPANDED_BYTES = 4 << 30  # bytes a compressed joblib file may expand to


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown>"


_UNKNOWN = _Unknown()
_MARK = object()


@dataclass
class _Global:
    name: str


@dataclass
class _Obj:
    cls: _Global
    args: Any = None
    state: Any = None


class _CountingReader(io.RawIOBase):
    """Reads through ``inner`` and refuses to go past ``limit`` bytes (decompression bombs)."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.count

    def read(self, size: int | None = -1) -> bytes:
        return self._counted(self.inner.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._counted(self.inner.readline, size)

    def _counted(self, read: Callable[[int], bytes], size: int | None) -> bytes:
        # Never ask the decompressor for more than the limit allows: a literal claiming 10^12
        # bytes must not make it allocate them.
        room = self.limit - self.count + 1
        data = read(room if size is None or size < 0 or size > room else size)
        self.count += len(data)
        if self.count > self.limit:
            raise InvalidArtifact(f"the file expands to more than {self.limit} bytes")
        return data

def scan(
    data: Data, fmt: str = "pickle", *, max_expanded_bytes: int = MAX_EXPANDED_BYTES,
    extra: frozenset[str] = frozenset(),
) -> set[str]:
    """Return the globals a pickle (or joblib) stream imports; raise if any is not allowed.

    Raises :class:`UnsafeArtifact` naming every global off the allowlist (or the opcode that
    cannot be proven safe) and :class:`InvalidArtifact` for a stream that is not a whole pickle.
    """
    found = _Offenders(allowed_globals(extra))
    try:
        _scan(data, fmt, found, max_expanded_bytes)
    except (UnsafeArtifact, InvalidArtifact):
        found.raise_if_any()  # the offending globals met before the stream broke say more
        raise
    except Exception as exc:  # noqa: BLE001 - whatever else the bytes make a reader raise (zlib.error,
        # lzma.LZMAError, a decompressor's NotImplementedError ...) is a file that is not whole
        found.raise_if_any()
        raise InvalidArtifact(f"not a valid {fmt} file: {type(exc).__name__}: {exc}") from None
    found.raise_if_any()
    return found.found


def _scan(data: Data, fmt: str, found: _Offenders, max_expanded_bytes: int) -> None:
    if fmt == "joblib":
        from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

        try:
            with _validate_fileobject_and_memmap(stream_of(data), "", None) as (fileobj, _mmap):
                if isinstance(fileobj, str):
                    raise InvalidArtifact("joblib files written before joblib 0.10 are not accepted")
                reader = _CountingReader(fileobj, max_expanded_bytes)
                _walk(reader, found, joblib=True, depth=0)
                _expect_end(reader)
        except (UnsafeArtifact, InvalidArtifact):
            raise
        except RecursionError:
            raise InvalidArtifact("not a valid joblib file: nested too deeply") from None
    else:
        stream = stream_of(data)
        try:
            _walk(stream, found, joblib=False, depth=0)
        except RecursionError:
            raise InvalidArtifact("not a valid pickle stream: nested too deeply") from None
        _expect_end(stream)


def _expect_end(reader: Any) -> None:
    if reader.read(1):
        raise InvalidArtifact("not a valid pickle stream: data after the STOP opcode")


def _walk(reader: Any, found: _Offenders, *, joblib: bool, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidArtifact("pickles nested too deeply")
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    also = frozenset({JOBLIB_WRAPPER}) if joblib else frozenset()
    ops = pickletools.genops(reader)
    while True:
        try:
            opcode, arg, _pos = next(ops)
        except StopIteration:
            raise InvalidArtifact("not a valid pickle stream: no STOP opcode") from None
        except (ValueError, EOFError, UnicodeDecodeError, struct_error) as exc:
            raise InvalidArtifact(f"not a valid pickle stream: {exc}") from None
        name = opcode.name
        if name == "STOP":
            if len(stack) != 1:
                raise InvalidArtifact("not a valid pickle stream: the stack does not end with one value")
            return
        try:
            _step(name, arg, stack, memo, found, also)
        except IndexError:
            raise InvalidArtifact(f"not a valid pickle stream: {name} on an empty stack") from None
        if joblib and name == "BUILD" and isinstance(stack[-1], _Obj) and stack[-1].cls.name == JOBLIB_WRAPPER:
            stack[-1] = _skip_array(reader, stack[-1].state, found, depth)


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any], found: _Offenders, also: frozenset[str]) -> None:
    if name in _FORBIDDEN_OPS:
        raise UnsafeArtifact(name, _FORBIDDEN_OPS[name])
    if name in _LITERALS:
        stack.append(_UNKNOWN if isinstance(arg, (bytes, bytearray)) else arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name in ("PROTO", "FRAME", "READONLY_BUFFER"):
        pass
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _pop_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        if arg not in memo:
            raise InvalidArtifact(f"not a valid pickle stream: memo key {arg} is not set")
        stack.append(memo[arg])
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        members = tuple(stack[-n:])
        if len(members) != n:
            raise IndexError
        del stack[-n:]
        stack.append(members)
    elif name == "TUPLE":
        stack.append(tuple(_pop_mark(stack)))
    elif name == "EMPTY_LIST":
        stack.append([])
    elif name == "LIST":
        stack.append(_pop_mark(stack))
    elif name == "APPEND":
        value = stack.pop()
        _extend(stack[-1], [value])
    elif name == "APPENDS":
        items = _pop_mark(stack)
        _extend(stack[-1], items)
    elif name == "EMPTY_DICT":
        stack.append({})
    elif name == "DICT":
        items = _pop_mark(stack)
        stack.append(_pairs({}, items))
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        _pairs(stack[-1], [key, value])
    elif name == "SETITEMS":
        items = _pop_mark(stack)
        _pairs(stack[-1], items)
    elif name in ("EMPTY_SET", "FROZENSET"):
        if name == "FROZENSET":
            _pop_mark(stack)
        stack.append(_UNKNOWN)
    elif name == "ADDITEMS":
        _pop_mark(stack)
    elif name in ("GLOBAL", "INST"):
        module, _, attr = str(arg).partition(" ")
        found.check(module, attr, also)
        if name == "INST":
            _pop_mark(stack)
            stack.append(_Obj(_Global(f"{module}.{attr}")))
        else:
            stack.append(_Global(f"{module}.{attr}"))
    elif name == "STACK_GLOBAL":
        attr, module = stack.pop(), stack.pop()
        if not isinstance(module, str) or not isinstance(attr, str):
            raise UnsafeArtifact("STACK_GLOBAL", "its names are not literal strings")
        found.check(module, attr, also)
        stack.append(_Global(f"{module}.{attr}"))
    elif name in ("REDUCE", "NEWOBJ"):
        args = stack.pop()
        stack.append(_Obj(_callable(stack.pop(), name), args))
    elif name == "NEWOBJ_EX":
        stack.pop()
        args = stack.pop()
        stack.append(_Obj(_callable(stack.pop(), name), args))
    elif name == "OBJ":
        items = _pop_mark(stack)
        if not items:
            raise IndexError
        stack.append(_Obj(_callable(items[0], name)))
    elif name == "BUILD":
        state = stack.pop()
        target = stack[-1]
        if isinstance(target, _Global):
            raise UnsafeArtifact(target.name, "BUILD would set attributes on a class")
        if isinstance(target, _Obj):
            target.state = state
    else:  # every opcode of protocols 0-5 is handled above; a new one is refused, not guessed
        raise InvalidArtifact(f"not a valid pickle stream: unsupported opcode {name}")


def _pop_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise InvalidArtifact("not a valid pickle stream: no MARK on the stack")


def _extend(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)


def _pairs(target: Any, items: list[Any]) -> Any:
    if len(items) % 2:
        raise InvalidArtifact("not a valid pickle stream: odd number of dict items")
    if isinstance(target, dict):
        for key, value in zip(items[::2], items[1::2]):
            if isinstance(key, (str, int, float, bool, type(None))):
                target[key] = value
    return target


def _callable(target: Any, op: str) -> _Global:
    if not isinstance(target, _Global):
        raise UnsafeArtifact(op, "calls something other than an allowed global")
    return target


def _skip_array(reader: Any, state: Any, found: _Offenders, depth: int) -> Any:
    """Step over the array bytes joblib writes right after a NumpyArrayWrapper."""
    import numpy as np

    if not isinstance(state, dict):
        raise InvalidArtifact("joblib array wrapper without its state")
    dtype = _dtype_of(state.get("dtype"))
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and not isinstance(n,
                                                                                     bool) and n >= 0 for n in shape):
        raise InvalidArtifact("joblib array wrapper with an invalid shape")
    if dtype.hasobject:
        _walk(reader, found, joblib=False, depth=depth + 1)
        return _UNKNOWN
    if state.get("numpy_array_alignment_bytes") is not None:
        padding = reader.read(1)
        if len(padding) != 1:
            raise InvalidArtifact("truncated joblib array")
        _skip(reader, padding[0])
    _skip(reader, int(np.prod(shape, dtype=object)) * dtype.itemsize)
    return _UNKNOWN


def _dtype_of(value: Any) -> Any:
    """The dtype a pickled ``numpy.dtype(spec, ...)`` call stands for (size and object-ness only)."""
    import numpy as np

    if not isinstance(value, _Obj) or value.cls.name != "numpy.dtype":
        raise InvalidArtifact("joblib array wrapper without a dtype")
    spec = value.args[0] if isinstance(value.args, tuple) and value.args else None
    state = value.state
    if isinstance(state, tuple) and len(state) >= 6 and isinstance(state[4], dict):
        # Structured dtype: fields are (dtype, offset) pairs; the itemsize is state[5].
        hasobject = any(
            isinstance(f, tuple) and f and _dtype_of(f[0]).hasobject for f in state[4].values()
        )
        itemsize = state[5]
        if not isinstance(itemsize, int) or itemsize < 0:
            raise InvalidArtifact("joblib array with an invalid structured dtype")
        return _DtypeInfo(itemsize, hasobject)
    if not isinstance(spec, str):
        raise InvalidArtifact("joblib array wrapper with an unreadable dtype")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise InvalidArtifact(f"joblib array with an invalid dtype: {exc}") from None
    return _DtypeInfo(dtype.itemsize, dtype.hasobject)


@dataclass(frozen=True)
class _DtypeInfo:
    itemsize: int
    hasobject: bool


def _skip(reader: Any, count: int) -> None:
    while count > 0:
        chunk = reader.read(min(count, 1 << 20))
        if not chunk:
            raise InvalidArtifact("truncated joblib array")
        count -= len(chunk)
