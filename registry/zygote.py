"""The zygote: one small process that forks every trial sandbox.

An uploaded file is loaded only in a child process (see :mod:`registry.sandbox`). Forking that
child from a threaded server worker is unsafe (another thread may hold a lock the child needs),
and a fresh interpreter per worker (multiprocessing's forkserver, used before) cost each worker
~1.5 s on its first upload and ~180 MB of memory of its own. The zygote is forked once, from the
server's master while it is single-threaded and has everything imported, so it starts warm and its
pages stay shared copy-on-write with the master and the workers; anywhere else (tests, the debug
server, a worker whose zygote died) it is started as a fresh interpreter on first use.

Every process of a server reaches its zygote through one inherited socket pair that has no name or
address, so nothing else on the machine can reach it. Each request brings its own socket (passed
with SCM_RIGHTS), so requests from many workers and threads never share a reply channel. Per
request the zygote forks a supervisor, which reads the request, forks the runner, enforces the
deadline and writes one answer frame: the runner's bytes, or why there are none. The zygote exits
when the last process holding the other end of its socket pair has exited.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

_LENGTH = struct.Struct("!Q")
_FRAME = struct.Struct("!cQ")  # kind, length
_ANSWER, _TIMEOUT, _DIED = b"A", b"T", b"D"
_PR_SET_NAME = 15
_GRACE_SECONDS = 10.0  # past the runner's deadline: the supervisor itself is gone


class Timeout(Exception):
    """The runner did not answer within its deadline (it was killed)."""


class Died(Exception):
    """The runner ended without an answer; ``str()`` says how (exit code, signal)."""


Target = Callable[..., bytes]
Payload = bytes | bytearray | memoryview | mmap.mmap

_lock = threading.Lock()
_control: socket.socket | None = None
_process: subprocess.Popen[bytes] | None = None


def fork_warm(preload: Callable[[], None]) -> bool:
    """Fork this process's zygote now (the server's master, before its workers): ``preload``
    runs here first, so the zygote and the workers share what it imports. Returns False, and
    leaves the zygote to be started on first use, when another thread runs (a fork would copy
    its locks in whatever state they are)."""
    global _control
    preload()
    if threading.active_count() > 1:
        return False
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the zygote
        try:
            ours.close()
            _close_all_but(theirs.fileno())
            _serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    with _lock:
        if _control is not None:
            _control.close()
        _control = ours
    return True


def run(target: Target, payload: Payload, args: Sequence[Any], *, timeout: float, answer_limit: int) -> bytes:
    """``target(payload, *args)`` in a fresh child of the zygote, which returns at most
    ``answer_limit`` bytes. ``target`` and ``args`` are pickled (by this trusted process);
    ``payload`` (the untrusted bytes) is passed as is. Raises Timeout after ``timeout`` seconds,
    Died when the child ends without an answer."""
    request = pickle.dumps((target, tuple(args), timeout, answer_limit), protocol=pickle.HIGHEST_PROTOCOL)
    for attempt in (1, 2):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with mine:
            try:
                control = _submit(theirs.fileno())
            finally:
                theirs.close()
            mine.settimeout(timeout + _GRACE_SECONDS)
            try:
                mine.sendall(_LENGTH.pack(len(request)) + request)
                mine.sendall(_LENGTH.pack(memoryview(payload).nbytes))
                mine.sendall(payload)
                kind, length = _FRAME.unpack(_recv_exact(mine, _FRAME.size))
                body = _recv_exact(mine, length)
                break
            except (OSError, EOFError, struct.error) as exc:
                # A zygote killed just before the hand-over can still take it (a child of its own that
                # held its control socket for a moment): the request is lost unread. Once, on a new one.
                if attempt == 1 and _closed(control):
                    _spawn(replace=control)
                    continue
                raise Died(f"the sandbox's supervisor went away ({type(exc).__name__})") from None
    if kind == _ANSWER:
        return body
    if kind == _TIMEOUT:
        raise Timeout(body.decode())
    raise Died(body.decode())


def started() -> bool:
    """Whether this process has a zygote to send to (forked warm or started on first use)."""
    return _control is not None


def _submit(fd: int) -> socket.socket:
    """Hand the request's socket to the zygote, starting one first if there is none or it died;
    the control socket it went through."""
    control = _control or _spawn()
    try:
        socket.send_fds(control, [b"r"], [fd])
    except OSError:  # the zygote is gone: start this process's own and retry once
        control = _spawn(replace=control)
        socket.send_fds(control, [b"r"], [fd])
    return control


def _closed(control: socket.socket) -> bool:
    """Whether the zygote at the other end of ``control`` is gone (its end closed)."""
    try:
        return control.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _spawn(replace: socket.socket | None = None) -> socket.socket:
    global _control, _process
    with _lock:
        if _control is not None and _control is not replace:
            return _control  # another thread started one meanwhile
        if _control is not None:
            _control.close()
        if _process is not None:
            _process.poll()  # reap the one that died
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = f"from modelyard.registry.zygote import main; main({theirs.fileno()}, {sys.path!r})"
        _process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()],
                                    stdin=subprocess.DEVNULL)
        theirs.close()
        _control = ours
        return ours


def main(fd: int, path: list[str]) -> None:
    """The entry point of a zygote started as a fresh interpreter."""
    sys.path[:] = path
    from modelyard.registry import sandbox_preload  # noqa: F401 - warm: what every trial needs

    _serve(socket.socket(fileno=fd))


def _serve(control: socket.socket) -> None:
    _name("trial-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the server's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 16, 4)
        except InterruptedError:
            continue
        if not message and not fds:
            return  # every process of the server has gone
        if os.fork() == 0:
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _name("trial-supervise")
                for extra in fds[1:]:
                    os.close(extra)
                if fds:
                    _supervise(socket.socket(fileno=fds[0]))
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


def _supervise(client: socket.socket) -> None:
    with client:
        (length,) = _LENGTH.unpack(_recv_exact(client, _LENGTH.size))
        target, args, timeout, answer_limit = pickle.loads(_recv_exact(client, length))
        (size,) = _LENGTH.unpack(_recv_exact(client, _LENGTH.size))
        payload = _recv_exact(client, size)
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:  # the runner
            status = 70
            try:
                _name("trial-runner")
                client.close()
                os.close(readable)
                answer = target(payload, *args)
                _write_all(writable, answer)
                status = 0
            finally:
                os._exit(status)
        os.close(writable)
        del payload
        kind, body = _collect(readable, pid, timeout, answer_limit)
        client.sendall(_FRAME.pack(kind, len(body)) + body)


def _collect(readable: int, pid: int, timeout: float, answer_limit: int) -> tuple[bytes, bytes]:
    """Read the runner's answer until it closes its end, within the deadline; then reap it."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    taken = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([readable], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return _TIMEOUT, f"no answer within {timeout:g} s".encode()
            chunk = os.read(readable, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            taken += len(chunk)
            if taken > answer_limit:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return _DIED, f"its answer was longer than {answer_limit} bytes".encode()
    finally:
        os.close(readable)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return _ANSWER, b"".join(chunks)
    if os.WIFSIGNALED(status):
        return _DIED, f"killed by signal {os.WTERMSIG(status)}".encode()
    return _DIED, f"exit code {os.WEXITSTATUS(status)}".encode()


def _name(name: str) -> None:
    """Name this process (``ps -o comm``, /proc/<pid>/comm) for whoever looks at the tree."""
    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL) if size else b""
    if len(data) == size:
        return data
    parts = [data]
    taken = len(data)
    while taken < size:
        chunk = sock.recv(min(size - taken, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed")
        parts.append(chunk)
        taken += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _close_all_but(keep: int) -> None:
    """In a fresh zygote forked from the master: drop every inherited descriptor (database
    connections, the master's sockets) but stdio and the control socket, so no trial child
    could ever reach them."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
