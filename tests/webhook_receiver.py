"""A webhook receiver on loopback for the tests: records every POST and answers from a script of
statuses (then 200), as a real endpoint would; signatures are checked with the Standard Webhooks
reference library, not with modelyard's own code."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


class Receiver:
    def __init__(self, port: int = 0, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.script = list(script or [])
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    status, headers = owner.script.pop(0) if owner.script else (200, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every payload received, each checked with the standard's library (raises on a bad one)."""
        with self.lock:
            got = list(self.received)
        return [Webhook(secret).verify(r["body"], r["headers"]) | {"_id": r["headers"]["webhook-id"]} for r in got]

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]


@contextlib.contextmanager
def receiving(port: int = 0, script: list[tuple[int, dict[str, str]]] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port, script)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
