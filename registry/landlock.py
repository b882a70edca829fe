"""Landlock (Linux 5.13+): an unprivileged process gives up, for itself and its children, the
right to change any file, and (ABI 4+) to open TCP connections, and (ABI 6+) to signal processes
outside its own domain. No privilege, namespace or helper binary is needed; the kernel enforces
it. Used by the upload sandbox's child before it unpickles anything.

Files already open (the pipe the child answers through) keep working; reading files (Python's
imports) stays allowed.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

_CREATE_RULESET, _RESTRICT_SELF = 444, 446  # the same numbers on x86-64 and arm64
_VERSION = 1  # landlock_create_ruleset flag: answer the ABI version
_PR_SET_NO_NEW_PRIVS = 38

# linux/landlock.h: every right that changes the file system, by the ABI that introduced it.
_FS_WRITES = {
    1: (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12),
    2: 1 << 13,  # REFER: link or rename across directories
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
_NET_TCP = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals outside the domain (ABI 6)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


@dataclass(frozen=True)
class Restriction:
    abi: int  # 0: Landlock is not available here and nothing was restricted
    files: bool  # no file can be created, written, truncated, removed, renamed or linked
    network: bool  # no TCP connection can be opened or port bound
    signals: bool  # no signal reaches a process outside this one's domain


def abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return max(int(version), 0)


def forbid_writes() -> Restriction:
    """Restrict this process (irreversibly) as far as the kernel's ABI allows. Raises OSError
    if the kernel refuses a restriction it said it supports."""
    version = abi()
    if version < 1:
        return Restriction(0, False, False, False)
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _RulesetAttr(
        handled_access_fs=sum(bits for since, bits in _FS_WRITES.items() if version >= since),
        handled_access_net=_NET_TCP if version >= 4 else 0,
        scoped=_SCOPES if version >= 6 else 0,
    )
    size = 8 if version < 4 else 16 if version < 6 else 24
    fd = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return Restriction(version, True, version >= 4, version >= 6)
