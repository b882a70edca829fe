"""Production serving, settings from ``[server]``: granian (a Rust HTTP server speaking WSGI to
Python threads) by default, or gunicorn with gthread workers.

On both engines the master builds the app once (migrate, seed, preload), forks the upload trial
sandbox's zygote (warm: every worker's first upload costs what later ones do) and forks the
workers from it, so the preloaded estimators are shared copy-on-write; each worker drops the inherited
database connections after the fork; a worker that dies is replaced; SIGTERM lets the workers
finish their requests first.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from modelyard.app import create_app
from modelyard.config import ConfigError, ServerSettings, load_config
from modelyard.registry import sandbox
from modelyard.web.context import EXTENSION

log = logging.getLogger("modelyard")


class ModelyardServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, settings: Mapping[str, Any]) -> None:
        self.application = app
        self.settings = dict(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if key in self.cfg.settings:  # settings newer gunicorns add are skipped on older ones
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def gunicorn_settings(server: ServerSettings) -> dict[str, Any]:
    return {
        "bind": f"{server.host}:{server.port}",
        "workers": server.workers,
        "threads": server.threads,
        "worker_class": "gthread",
        "timeout": server.timeout,
        "preload_app": True,
        "accesslog": None,
        "errorlog": "-",
        "post_fork": _post_fork,
        "child_exit": _child_exit,
        # gunicorn 23+'s runtime control socket: one fixed path per user, shared by every
        # server on the machine; modelyard does not use it.
        "control_socket_disable": True,
    }


def check_bindable(host: str, port: int) -> None:
    """Bind the address once, as gunicorn will (SO_REUSEADDR), so a port in use ends the start
    with one line naming it and the setting to change, instead of gunicorn's five retries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise ConfigError(f"[server] port {port} on {host} {reason}; choose another with --port or "
                              "MODELYARD_SERVER_PORT") from None


def _post_fork(server: Any, worker: Any) -> None:
    _after_fork(worker.app.application)


def _child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Prepare the registry and serve until interrupted. Raises ConfigError, before anything
    is prepared, when the address cannot be bound (the port is in use)."""
    settings = load_config(overrides)
    server = settings.server
    check_bindable(server.host, server.port)
    app = create_app(overrides)
    if settings.batching.models and server.threads == 1:
        log.warning("micro-batching is on for %s but [server] threads = 1: a worker never holds two requests "
                    "to batch; set threads to 4 or more", ", ".join(settings.batching.models))
    if not sandbox.warm():
        log.warning("the trial sandbox starts on the first upload: another thread ran when the workers were forked")
    # Everything the master built (the app, the libraries, the preloaded models) lives as long
    # as the workers: out of the collector's sight, a worker's first full collection does not
    # walk (and copy-on-write touch) it all. Without this, a first request that loaded a model
    # could pay a ~120 ms collection of the inherited objects (bench: cold load 40 -> 180 ms when
    # one more blueprint tipped the threshold).
    gc.collect()
    gc.freeze()
    _return_large_frees()
    log.info("serving on http://%s:%s with %s, %s workers x %s threads",
             server.host, server.port, server.engine, server.workers, server.threads)
    if server.engine == "gunicorn":
        ModelyardServer(app, gunicorn_settings(server)).run()
    else:
        serve_granian(app, server)


def _return_large_frees() -> None:
    """Fix glibc's mmap threshold at its default (128 KiB), inherited by the workers. glibc
    raises it to the size of any large block freed (up to 32 MiB), after which arrays below that
    size come from the heap and stay with the process once freed: unpickling a model, and every
    large temporary of a predict after it, would leave a worker holding tens of MiB it no longer
    uses (bench/memory.py: +26 MiB in the worker that loaded a 48 MB model first)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, which also stops the raising
            libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD: heap tops over this go back at once
    except OSError:  # not glibc: its allocator has its own rules
        pass


def serve_granian(app: Flask, server: ServerSettings) -> None:
    """Serve ``app`` with granian's WSGI interface. Its workers are forked from this process and
    each takes the app already built here (granian starts them with multiprocessing's default
    method: it is set to ``fork`` here, which Python 3.14 no longer makes the default on Linux;
    the trial sandbox keeps its own forkserver context)."""
    import multiprocessing

    from granian.constants import Interfaces
    from granian.server import Server

    multiprocessing.set_start_method("fork", force=True)

    def worker_app() -> Callable[..., Any]:  # runs in each worker, right after the fork
        _after_fork(app)
        return app.wsgi_app  # what Flask.__call__ would call: one Python call less on every request

    granian = Server(
        "modelyard", address=server.host, port=server.port, interface=Interfaces.WSGI, workers=server.workers,
        blocking_threads=server.threads, backpressure=server.backpressure or None,
        respawn_failed_workers=True, workers_kill_timeout=server.timeout, log_access=False, websockets=False,
    )
    granian.serve(target_loader=worker_app, wrap_loader=False)


def _after_fork(app: Flask) -> None:
    # Connections opened by the master must not be shared by the forked workers.
    runtime = app.extensions[EXTENSION]
    runtime.engine.dispose(close=False)
    for task in runtime.background:  # each worker's own threads (the webhook sender)
        task.start()
