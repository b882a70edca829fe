"""Zip archives (skops files), checked whole before any member is read.

Scanners have been walked past by archives that Python's ``zipfile`` reads one way and another
reader another (picklescan CVE-2025-1944: a local header naming another file than the central
directory; CVE-2025-1945: an encrypted flag that made the scanner skip a member the loader then
read). So an archive is accepted only when every reader must see the same thing in it: each
member's local header agrees with the central directory (name, flags, method, and CRC and sizes
where the local header carries them), no member is encrypted or compressed by a method
``zipfile`` does not read, no two members share a name or overlap, no name could escape a folder
it were extracted to, and the members expand to a bounded size. Whatever else the bytes make
``zipfile`` raise is the upload's :class:`InvalidArtifact`, never an internal error.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections import Counter
from typing import Any

from modelyard.registry.errors import InvalidArtifact
from modelyard.registry.storage import Data, stream_of

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # signature ... name length, extra length: 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"
_READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                     zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_ENCRYPTED = 0x0001
_STRONG_ENCRYPTION = 0x0040
_MASKED_DIRECTORY = 0x2000  # the central directory itself is encrypted (PKWARE's strong encryption)
_DATA_DESCRIPTOR = 0x0008
_UTF8_NAME = 0x0800
_ZIP64_EXTRA = 0x0001
_DRIVE = re.compile(r"^[A-Za-z]:")


class Archive:
    """A checked zip archive: :meth:`read` a member's bytes, bounded; every failure is an
    :class:`InvalidArtifact` prefixed with ``what`` ("skops archive")."""

    def __init__(self, data: Data, *, what: str, max_expanded_bytes: int) -> None:
        self.what = what
        try:
            self._zip = zipfile.ZipFile(stream_of(data))
        except Exception as exc:  # noqa: BLE001 - anything the bytes make zipfile raise
            raise InvalidArtifact(f"{what}: not a valid zip file: {_reason(exc)}") from None
        _check(data, self._zip, what, max_expanded_bytes)

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of member ``name``, refused when it is missing or expands past ``limit``."""
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise InvalidArtifact(f"{self.what}: no member {name!r}") from None
        if info.file_size > limit:
            raise InvalidArtifact(f"{self.what}: member {name!r} is larger than {limit} bytes")
        try:
            with self._zip.open(info) as fh:
                return fh.read(limit + 1)
        except Exception as exc:  # noqa: BLE001 - CRC mismatch, corrupt stream, truncation ...
            raise InvalidArtifact(f"{self.what}: member {name!r} cannot be read: {_reason(exc)}") from None


def _check(data: Data, archive: zipfile.ZipFile, what: str, max_expanded_bytes: int) -> None:
    members = archive.infolist()
    duplicates = sorted(name for name, count in Counter(i.orig_filename for i in members).items() if count > 1)
    if duplicates:
        raise InvalidArtifact(f"{what}: member names appear more than once: {', '.join(map(repr, duplicates))}")
    expanded = 0
    spans: list[tuple[int, int, str]] = []
    for info in members:
        name = info.orig_filename
        _check_name(name, what)
        if info.flag_bits & (_ENCRYPTED | _STRONG_ENCRYPTION | _MASKED_DIRECTORY):
            raise InvalidArtifact(f"{what}: member {name!r} is encrypted")
        if info.compress_type not in _READABLE_METHODS:
            raise InvalidArtifact(f"{what}: member {name!r} uses compression method {info.compress_type}, "
                                  f"not one of {', '.join(_READABLE_METHODS.values())}")
        start, end = _local_span(data, info, what)
        spans.append((start, end, name))
        expanded += info.file_size
    if expanded > max_expanded_bytes:
        raise InvalidArtifact(f"{what}: the members expand to {expanded} bytes, more than {max_expanded_bytes}")
    spans.sort()
    directory = getattr(archive, "start_dir", len(data))
    for (_, end, name), (start, _, following) in zip(spans, spans[1:] + [(directory, directory, "")]):
        if end > start:
            where = f"member {following!r}" if following else "the central directory"
            raise InvalidArtifact(f"{what}: member {name!r} overlaps {where}")


def _check_name(name: str, what: str) -> None:
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or _DRIVE.match(name)
            or ".." in parts):
        raise InvalidArtifact(f"{what}: member name {name!r} escapes the archive")


def _local_span(data: Data, info: zipfile.ZipInfo, what: str) -> tuple[int, int]:
    """Where the member's local header starts and its data ends; refused unless the local
    header agrees with the central directory's entry."""
    name = info.orig_filename
    start = info.header_offset
    header = data[start:start + _LOCAL.size]
    if start < 0 or len(header) < _LOCAL.size:
        raise InvalidArtifact(f"{what}: member {name!r} has no local header")
    (signature, _version, flags, method, _time, _date, crc, compressed, size, name_length,
     extra_length) = _LOCAL.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise InvalidArtifact(f"{what}: member {name!r} has no local header")
    body = start + _LOCAL.size
    raw_name = data[body:body + name_length]
    extra = data[body + name_length:body + name_length + extra_length]
    if len(raw_name) != name_length or len(extra) != extra_length:
        raise InvalidArtifact(f"{what}: member {name!r} has a truncated local header")
    local_name = _decode_name(raw_name, flags)
    disagree: list[str] = []
    if local_name != name:
        disagree.append(f"name {local_name!r}")
    if flags != info.flag_bits:
        disagree.append(f"flags {flags:#06x} against {info.flag_bits:#06x}")
    if method != info.compress_type:
        disagree.append(f"compression method {method} against {info.compress_type}")
    if not flags & _DATA_DESCRIPTOR:  # otherwise the three are after the data, and may be zero here
        compressed, size = _zip64_sizes(extra, compressed, size)
        if crc != info.CRC:
            disagree.append("CRC")
        if (compressed, size) != (info.compress_size, info.file_size):
            disagree.append("sizes")
    if disagree:
        raise InvalidArtifact(f"{what}: member {name!r}: the local header disagrees with the central directory "
                              f"({'; '.join(disagree)})")
    return start, body + name_length + extra_length + info.compress_size


def _decode_name(raw: bytes, flags: int) -> str | None:
    try:
        return raw.decode("utf-8" if flags & _UTF8_NAME else "cp437")
    except UnicodeDecodeError:
        return None


def _zip64_sizes(extra: bytes, compressed: int, size: int) -> tuple[int, int]:
    """The local header's sizes, read from its ZIP64 extra field where the 32-bit fields say so."""
    if 0xFFFFFFFF not in (compressed, size):
        return compressed, size
    position = 0
    while position + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, position)
        field = extra[position + 4:position + 4 + length]
        if kind == _ZIP64_EXTRA:
            values = list(struct.unpack_from(f"<{len(field) // 8}Q", field))
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            break
        position += 4 + length
    return compressed, size


def _reason(exc: Any) -> str:
    return str(exc) or type(exc).__name__
