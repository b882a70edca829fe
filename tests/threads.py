"""Concurrency in tests: work on several threads while another loop runs beside them."""

from __future__ import annotations

import threading
from collections.abc import Callable


def alongside(background: Callable[[threading.Event], None], work: Callable[[], None], threads: int) -> None:
    """Run ``work`` on ``threads`` threads at once while ``background(stop)`` runs on another,
    until every one of them is done; then set ``stop`` and wait for ``background`` to return."""
    stop = threading.Event()
    behind = threading.Thread(target=background, args=(stop,))
    behind.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    behind.join()
